//! Prometheus alerts that block an update reboot (kured's
//! `--prometheus-url`): before a node takes a reboot slot, ferry asks
//! Prometheus' `/api/v1/alerts` which alerts fire; any firing alert not on
//! the ignore list defers the reboot. An unreachable or unreadable
//! Prometheus defers it too: a reboot gate does not fail open.

use serde_json::Value;

use crate::error::Error;
use crate::net::http::{Client, TlsOptions};
use crate::net::url::Url;

/// Where to ask and what to ignore (`cluster.alerts_url`, `cluster.alerts_ignore`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertGate {
    /// Prometheus' base URL, e.g. `http://prometheus.monitoring:9090`.
    pub url: String,
    /// Alert names that never block (kube-prometheus' always-firing `Watchdog`).
    pub ignore: Vec<String>,
    /// CA files for an https URL (plain http is allowed: an in-cluster
    /// Prometheus rarely has TLS).
    pub ca: Vec<std::path::PathBuf>,
}

/// The body cap: an alert list of a large cluster fits easily.
const MAX_BODY: usize = 4 << 20;

/// The names of the firing alerts in a `/api/v1/alerts` reply that are not
/// ignored, sorted and deduplicated; an error if the reply is not one.
pub fn firing(reply: &Value, ignore: &[String]) -> Result<Vec<String>, String> {
    if reply["status"] != "success" {
        return Err(format!(
            "Prometheus answered status {} ({})",
            reply["status"],
            reply["error"].as_str().unwrap_or("no error given")
        ));
    }
    let alerts = reply["data"]["alerts"]
        .as_array()
        .ok_or("the reply has no data.alerts list")?;
    let mut names: Vec<String> = alerts
        .iter()
        .filter(|a| a["state"] == "firing")
        .map(|a| {
            a["labels"]["alertname"]
                .as_str()
                .unwrap_or("(unnamed)")
                .to_string()
        })
        .filter(|n| !ignore.iter().any(|i| i == n))
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// The `/api/v1/alerts` URL under a base URL (a path prefix is kept).
pub(crate) fn endpoint(base: &str) -> String {
    format!("{}/api/v1/alerts", base.trim_end_matches('/'))
}

/// Ask Prometheus which blocking alerts fire. `Err` names the URL and why
/// it could not be asked; the caller treats that as blocking.
pub(crate) async fn check(gate: &AlertGate) -> Result<Vec<String>, Error> {
    let u = endpoint(&gate.url);
    let url = Url::parse(&u).map_err(|d| Error::Usage(format!("cluster.alerts_url: {d}")))?;
    let net = |detail: String| Error::Net {
        what: format!("GET {}", url.redacted()),
        detail,
    };
    let client = Client::new(&TlsOptions {
        ca: gate.ca.clone(),
        allow_http: true,
        ..Default::default()
    })
    .map_err(|e| net(e.to_string()))?;
    let resp = client
        .get(&url, None, &[("accept", "application/json".into())])
        .await
        .map_err(|e| net(e.to_string()))?;
    if resp.status != 200 {
        return Err(net(format!("HTTP {}", resp.status)));
    }
    let body = resp.bytes(MAX_BODY).await.map_err(|e| net(e.to_string()))?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| net(format!("not JSON: {e}")))?;
    firing(&v, &gate.ignore).map_err(net)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_firing_alerts_not_ignored_block() {
        let reply = json!({"status": "success", "data": {"alerts": [
            {"labels": {"alertname": "Watchdog"}, "state": "firing"},
            {"labels": {"alertname": "NodeFilesystemAlmostFull"}, "state": "firing"},
            {"labels": {"alertname": "NodeFilesystemAlmostFull", "instance": "b"}, "state": "firing"},
            {"labels": {"alertname": "KubeJobFailed"}, "state": "pending"},
            {"labels": {"alertname": "EtcdNoLeader"}, "state": "firing"},
        ]}});
        let ignore = vec!["Watchdog".to_string()];
        assert_eq!(
            firing(&reply, &ignore).unwrap(),
            ["EtcdNoLeader", "NodeFilesystemAlmostFull"]
        );
        let quiet = json!({"status": "success", "data": {"alerts": [
            {"labels": {"alertname": "Watchdog"}, "state": "firing"}]}});
        assert!(firing(&quiet, &ignore).unwrap().is_empty());
    }

    #[test]
    fn a_reply_that_is_not_an_alert_list_is_an_error() {
        assert!(firing(&json!({"status": "error", "error": "bad"}), &[]).is_err());
        assert!(firing(&json!({"status": "success", "data": {}}), &[]).is_err());
        assert!(firing(&json!([]), &[]).is_err());
    }

    #[test]
    fn the_endpoint_keeps_a_path_prefix() {
        assert_eq!(endpoint("http://p:9090"), "http://p:9090/api/v1/alerts");
        assert_eq!(endpoint("http://p/prom/"), "http://p/prom/api/v1/alerts");
    }
}
