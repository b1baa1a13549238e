//! What `kubectl` shows of ferry: node labels `ferry.k3os.io/version` and
//! `ferry.k3os.io/channel` (so `kubectl get nodes -L ferry.k3os.io/version`
//! shows the fleet), and an `OSUpdate` node condition (`kubectl describe
//! node`) whose reason is the update's phase. The condition goes through a
//! strategic merge patch of the node's status, which merges conditions by
//! type: a JSON merge patch would replace the list and drop the kubelet's
//! `Ready`. Best effort: a failure is logged, never stops an update.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::client::{refused, Kube};
use super::lock::{micro_time, since_epoch};

pub const VERSION_LABEL: &str = "ferry.k3os.io/version";
pub const CHANNEL_LABEL: &str = "ferry.k3os.io/channel";
pub const CONDITION: &str = "OSUpdate";

/// The update's phase, as the `OSUpdate` condition's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Installing,
    RebootPending,
    Trial,
    RolledBack,
    UpToDate,
}

impl Phase {
    fn reason(self) -> &'static str {
        match self {
            Phase::Installing => "Installing",
            Phase::RebootPending => "RebootPending",
            Phase::Trial => "Trial",
            Phase::RolledBack => "RolledBack",
            Phase::UpToDate => "UpToDate",
        }
    }
    /// `True` while an update is under way on the node.
    fn active(self) -> bool {
        matches!(
            self,
            Phase::Installing | Phase::RebootPending | Phase::Trial
        )
    }
}

/// A label value as the API accepts it: at most 63 of `[A-Za-z0-9._-]`,
/// alphanumeric at both ends (`1.2.0+build.5` becomes `1.2.0_build.5`).
pub(crate) fn label_value(v: &str) -> String {
    let mut s: String = v
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    while s.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        s.pop();
    }
    while s.starts_with(|c: char| !c.is_ascii_alphanumeric()) {
        s.remove(0);
    }
    s
}

/// The status patch for the condition.
pub(crate) fn condition_patch(phase: Phase, message: &str, now: &str) -> Value {
    json!({"status": {"conditions": [{
        "type": CONDITION,
        "status": if phase.active() { "True" } else { "False" },
        "reason": phase.reason(),
        "message": message,
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }]}})
}

/// Labels (when `version` / `channel` are known) and the condition.
pub(crate) async fn report(
    kube: &Kube,
    node: &str,
    version: Option<&str>,
    channel: Option<&str>,
    phase: Phase,
    message: &str,
) {
    let mut labels = serde_json::Map::new();
    if let Some(v) = version {
        labels.insert(VERSION_LABEL.into(), json!(label_value(v)));
    }
    if let Some(c) = channel {
        labels.insert(CHANNEL_LABEL.into(), json!(label_value(c)));
    }
    let path = format!("/api/v1/nodes/{node}");
    if !labels.is_empty() {
        if let Err(e) = kube
            .patch(&path, &json!({"metadata": {"labels": labels}}))
            .await
        {
            tracing::warn!(node, error = %e, "could not label the node");
        }
    }
    let now = micro_time(since_epoch(SystemTime::now()));
    let status = format!("{path}/status");
    let body = condition_patch(phase, message, &now);
    match kube
        .call_as(
            "PATCH",
            &status,
            Some(&body),
            "application/strategic-merge-patch+json",
        )
        .await
    {
        Ok(r) if r.ok() => {}
        Ok(r) => {
            tracing::warn!(node, error = %refused("PATCH", &status, &r), "could not set the OSUpdate condition")
        }
        Err(e) => tracing::warn!(node, error = %e, "could not set the OSUpdate condition"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_the_api_accepts() {
        assert_eq!(label_value("1.2.0"), "1.2.0");
        assert_eq!(label_value("1.2.0+build.5"), "1.2.0_build.5");
        assert_eq!(label_value("-beta-"), "beta");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
    }

    #[test]
    fn the_condition_is_true_while_an_update_is_under_way() {
        let p = condition_patch(Phase::Trial, "m", "t");
        assert_eq!(p["status"]["conditions"][0]["status"], "True");
        assert_eq!(p["status"]["conditions"][0]["reason"], "Trial");
        let p = condition_patch(Phase::UpToDate, "m", "t");
        assert_eq!(p["status"]["conditions"][0]["status"], "False");
    }
}
