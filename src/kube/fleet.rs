//! `ferry fleet status` (host): the cluster's nodes as ferry sees them, one
//! row each: version and channel (labels), the `OSUpdate` condition, the
//! last result (annotation), Ready, and who holds the reboot Leases. Built
//! from the API objects by a pure function; one list call per kind.

use serde::Serialize;
use serde_json::Value;

use super::client::Kube;
use super::report::{CHANNEL_LABEL, CONDITION, VERSION_LABEL};
use crate::error::Error;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeRow {
    pub node: String,
    pub version: String,
    pub channel: String,
    /// The `OSUpdate` condition's reason (`-` when ferry never reported).
    pub phase: String,
    pub message: String,
    /// The `ferry.k3os.io/status` annotation: the last step or result.
    pub last: String,
    pub ready: bool,
    pub cordoned: bool,
    /// The reboot Lease this node holds, if any.
    pub lease: Option<String>,
}

/// The rows, from a node list and a lease list (pure).
pub fn rows(nodes: &Value, leases: &Value) -> Vec<NodeRow> {
    let empty = Vec::new();
    let held: Vec<(String, String)> = leases["items"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter(|l| {
            l["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("ferry-reboot-"))
        })
        .filter_map(|l| {
            Some((
                l["spec"]["holderIdentity"]
                    .as_str()
                    .filter(|h| !h.is_empty())?
                    .to_string(),
                l["metadata"]["name"].as_str()?.to_string(),
            ))
        })
        .collect();
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let mut out: Vec<NodeRow> = nodes["items"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|n| {
            let name = s(&n["metadata"]["name"]);
            let conds = n["status"]["conditions"].as_array().unwrap_or(&empty);
            let cond = |t: &str| conds.iter().find(|c| c["type"] == t);
            let os = cond(CONDITION);
            NodeRow {
                version: s(&n["metadata"]["labels"][VERSION_LABEL]),
                channel: s(&n["metadata"]["labels"][CHANNEL_LABEL]),
                phase: os.map_or("-".into(), |c| s(&c["reason"])),
                message: os.map_or(String::new(), |c| {
                    c["message"].as_str().unwrap_or("").into()
                }),
                last: s(&n["metadata"]["annotations"][super::drain::STATUS]),
                ready: cond("Ready").is_some_and(|c| c["status"] == "True"),
                cordoned: n["spec"]["unschedulable"] == true,
                lease: held
                    .iter()
                    .find(|(h, _)| *h == name)
                    .map(|(_, l)| l.clone()),
                node: name,
            }
        })
        .collect();
    out.sort_by(|a, b| a.node.cmp(&b.node));
    out
}

pub async fn status(kube: &Kube, namespace: &str) -> Result<Vec<NodeRow>, Error> {
    let nodes = kube.get("/api/v1/nodes").await?;
    let leases = kube
        .get(&format!(
            "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        ))
        .await?;
    Ok(rows(&nodes, &leases))
}

/// The table `ferry fleet status` prints.
pub fn table(rows: &[NodeRow]) -> String {
    let mut t = format!(
        "{:<20} {:<12} {:<10} {:<14} {:<13} {:<6} {:<16} {}\n",
        "NODE", "VERSION", "CHANNEL", "PHASE", "LAST", "READY", "REBOOT-LOCK", "MESSAGE"
    );
    for r in rows {
        t.push_str(&format!(
            "{:<20} {:<12} {:<10} {:<14} {:<13} {:<6} {:<16} {}\n",
            r.node,
            r.version,
            r.channel,
            r.phase,
            r.last,
            if r.ready {
                if r.cordoned {
                    "cord."
                } else {
                    "yes"
                }
            } else {
                "no"
            },
            r.lease.as_deref().unwrap_or("-"),
            r.message
        ));
    }
    t
}
