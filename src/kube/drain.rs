//! Taking a node out of service and back: cordon, drain through the
//! Eviction API (so PodDisruptionBudgets are honoured), uncordon, node
//! annotations, Events and the Ready check. Every wait is bounded by the
//! drain timeout: a budget that never allows an eviction ends in an error
//! naming the blocked pods, never in waiting forever. Pod classification
//! and readiness are pure functions of the API objects.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use super::client::{refused, Kube};
use super::lock::{micro_time, since_epoch};
use super::pause;
use crate::error::Error;

/// Node annotation: what ferry is doing (`draining`, `rebooting`, `committed`, ...).
pub(crate) const STATUS: &str = "ferry.k3os.io/status";
/// Node annotation: the version the node runs after its last update.
pub(crate) const VERSION: &str = "ferry.k3os.io/version";
/// Node annotation: ferry cordoned this node and will uncordon it.
pub(crate) const CORDONED: &str = "ferry.k3os.io/cordoned";

/// What a drain does with one pod on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PodAction {
    Evict,
    /// Already being deleted: only wait for it.
    Await,
    SkipDaemonSet,
    SkipMirror,
    SkipFinished,
    /// No controller would recreate it (`kubectl drain` refuses without `--force`).
    RefuseUnmanaged,
    /// Its emptyDir data would be lost (`kubectl drain` refuses without
    /// `--delete-emptydir-data`).
    RefuseLocalData,
}

/// What an operator allows a drain to do, as `kubectl drain`'s flags do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainPolicy {
    /// Evict pods that no controller recreates (`--force`).
    pub unmanaged: bool,
    /// Evict pods with emptyDir volumes (`--delete-emptydir-data`).
    pub emptydir: bool,
    /// Label selectors (`key=value[,key=value]`): a pod on the node that
    /// matches one blocks the reboot (kured's `--blocking-pod-selector`).
    pub blocking: Vec<String>,
}

/// Whether `pod`'s labels match a `key=value[,key=value]` selector.
pub(crate) fn matches_selector(pod: &Value, selector: &str) -> bool {
    let labels = &pod["metadata"]["labels"];
    selector
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                labels[k.trim()].as_str() != Some(v.trim())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                labels[k.trim()].as_str() == Some(v.trim())
            } else {
                labels.get(term).is_some()
            }
        })
}

#[cfg(test)]
pub(crate) fn classify(pod: &Value) -> PodAction {
    classify_with(pod, &DrainPolicy::default())
}

pub(crate) fn classify_with(pod: &Value, policy: &DrainPolicy) -> PodAction {
    let meta = &pod["metadata"];
    if meta["annotations"]
        .get("kubernetes.io/config.mirror")
        .is_some()
    {
        return PodAction::SkipMirror;
    }
    let owners = meta["ownerReferences"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if owners.iter().any(|o| o["kind"] == "DaemonSet") {
        return PodAction::SkipDaemonSet;
    }
    if matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    ) {
        return PodAction::SkipFinished;
    }
    if meta.get("deletionTimestamp").is_some_and(|t| !t.is_null()) {
        return PodAction::Await;
    }
    if !policy.unmanaged && !owners.iter().any(|o| o["controller"] == true) {
        return PodAction::RefuseUnmanaged;
    }
    let volumes = pod["spec"]["volumes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !policy.emptydir && volumes.iter().any(|v| v.get("emptyDir").is_some()) {
        return PodAction::RefuseLocalData;
    }
    PodAction::Evict
}

/// The node's `Ready` condition is `True`.
pub(crate) fn is_ready(node: &Value) -> bool {
    let conds = node["status"]["conditions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    conds
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

#[derive(Debug, Clone)]
struct PodRef {
    namespace: String,
    name: String,
    uid: String,
}

impl PodRef {
    fn of(pod: &Value) -> PodRef {
        let m = &pod["metadata"];
        let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
        PodRef {
            namespace: s("namespace"),
            name: s("name"),
            uid: s("uid"),
        }
    }
    fn path(&self) -> String {
        format!("/api/v1/namespaces/{}/pods/{}", self.namespace, self.name)
    }
}

fn names(pods: &[PodRef]) -> String {
    pods.iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn node_path(node: &str) -> String {
    format!("/api/v1/nodes/{node}")
}

#[derive(Debug, Clone)]
pub(crate) struct DrainOptions {
    /// The whole drain (evictions and waiting for pods to go) ends by then.
    pub timeout: Duration,
    /// First retry delay; doubles up to 8x.
    pub poll: Duration,
    pub policy: DrainPolicy,
    /// What the drain waits on, for the node's Events and condition.
    pub stuck: std::sync::Arc<std::sync::Mutex<super::report::Stuck>>,
}

/// The PodDisruptionBudget named in an eviction's 429, as the API server
/// gives it: `details.causes[]` of reason `DisruptionBudget`, message "The
/// disruption budget NAME needs N healthy pods and has M currently".
pub(crate) fn budget_of(status: &Value) -> Option<(String, String)> {
    let causes = status["details"]["causes"].as_array()?;
    causes
        .iter()
        .filter(|c| c["reason"] == "DisruptionBudget")
        .find_map(|c| {
            let m = c["message"].as_str()?;
            let name = m
                .strip_prefix("The disruption budget ")?
                .split(' ')
                .next()?;
            Some((name.to_string(), m.to_string()))
        })
}

/// Mark the node unschedulable. A node someone else already cordoned is left
/// alone (and will not be uncordoned by ferry); returns whether ferry cordoned it.
pub(crate) async fn cordon(kube: &Kube, node: &str) -> Result<bool, Error> {
    let n = kube.get(&node_path(node)).await?;
    let ours = n["metadata"]["annotations"].get(CORDONED).is_some();
    if n["spec"]["unschedulable"] == true && !ours {
        tracing::info!(node, "node was already cordoned by someone else");
        return Ok(false);
    }
    let patch =
        json!({"metadata": {"annotations": {CORDONED: "true"}}, "spec": {"unschedulable": true}});
    kube.patch(&node_path(node), &patch).await?;
    tracing::info!(node, "node cordoned");
    Ok(true)
}

/// Make the node schedulable again if ferry cordoned it.
pub(crate) async fn uncordon(kube: &Kube, node: &str) -> Result<(), Error> {
    let n = kube.get(&node_path(node)).await?;
    if !cordoned_by_ferry(&n) {
        return Ok(());
    }
    lift_cordon(kube, node).await
}

/// Whether ferry cordoned this node (a cordon an admin set is not ferry's to lift).
pub(crate) fn cordoned_by_ferry(node: &Value) -> bool {
    node["metadata"]["annotations"].get(CORDONED).is_some()
}

/// Lift ferry's cordon: only after `cordoned_by_ferry` said it is ferry's.
pub(crate) async fn lift_cordon(kube: &Kube, node: &str) -> Result<(), Error> {
    let patch =
        json!({"metadata": {"annotations": {CORDONED: null}}, "spec": {"unschedulable": false}});
    kube.patch(&node_path(node), &patch).await?;
    tracing::info!(node, "node uncordoned");
    Ok(())
}

pub(crate) async fn annotate(
    kube: &Kube,
    node: &str,
    status: &str,
    version: Option<&str>,
) -> Result<(), Error> {
    let mut ann = json!({STATUS: status});
    if let Some(v) = version {
        ann[VERSION] = json!(v);
    }
    kube.patch(&node_path(node), &json!({"metadata": {"annotations": ann}}))
        .await?;
    Ok(())
}

/// Post an Event about the node (best effort: failures are logged, not returned).
pub(crate) async fn event(kube: &Kube, node: &str, reason: &str, message: &str, warning: bool) {
    let now = since_epoch(SystemTime::now());
    let t = micro_time(now);
    let body = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{node}.ferry.{:x}", now.as_nanos()), "namespace": "default"},
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node},
        "reason": reason,
        "message": message,
        "type": if warning { "Warning" } else { "Normal" },
        "source": {"component": "ferry", "host": node},
        "firstTimestamp": t,
        "lastTimestamp": t,
        "count": 1
    });
    if let Err(e) = kube.post("/api/v1/namespaces/default/events", &body).await {
        tracing::warn!(node, reason, error = %e, "could not post event");
    }
}

/// Evict every pod on `node` except DaemonSet, mirror and finished pods, then
/// wait until they are gone. 429 (a PodDisruptionBudget) is retried with
/// back-off; past `opts.timeout` the error names the pods still blocked.
pub(crate) async fn drain(kube: &Kube, node: &str, opts: &DrainOptions) -> Result<(), Error> {
    let deadline = Instant::now() + opts.timeout;
    let list = kube
        .get(&format!(
            "/api/v1/pods?fieldSelector=spec.nodeName%3D{node}"
        ))
        .await?;
    let items = list["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut pending = Vec::new();
    let mut evicted = Vec::new();
    let (mut unmanaged, mut local, mut blockers) = (Vec::new(), Vec::new(), Vec::new());
    for pod in items {
        if let Some(sel) = opts
            .policy
            .blocking
            .iter()
            .find(|s| matches_selector(pod, s))
        {
            blockers.push(format!("{} (selector {sel})", names(&[PodRef::of(pod)])));
        }
        match classify_with(pod, &opts.policy) {
            PodAction::Evict => pending.push(PodRef::of(pod)),
            PodAction::Await => evicted.push(PodRef::of(pod)),
            PodAction::RefuseUnmanaged => unmanaged.push(PodRef::of(pod)),
            PodAction::RefuseLocalData => local.push(PodRef::of(pod)),
            skip => tracing::debug!(pod = %PodRef::of(pod).name, action = ?skip, "not evicted"),
        }
    }
    // refused before anything is evicted, as `kubectl drain` does
    let mut refusals = Vec::new();
    if !blockers.is_empty() {
        refusals.push(format!(
            "blocking pods on the node: {}",
            blockers.join(", ")
        ));
    }
    if !unmanaged.is_empty() {
        refusals.push(format!(
            "pods that no controller would recreate: {} (set cluster.drain_unmanaged = true to evict them)",
            names(&unmanaged)
        ));
    }
    if !local.is_empty() {
        refusals.push(format!(
            "pods with emptyDir data: {} (set cluster.delete_emptydir_data = true to evict them)",
            names(&local)
        ));
    }
    if !refusals.is_empty() {
        return Err(Error::Cluster(format!(
            "drain of node {node} refused: {}",
            refusals.join("; ")
        )));
    }
    tracing::info!(node, evict = pending.len(), "draining node");
    let mut backoff = crate::backoff::Backoff::new(opts.poll, opts.poll * 8);
    let mut last_refusal = String::new();
    loop {
        let mut blocked = Vec::new();
        for pod in pending {
            let p = format!("{}/eviction", pod.path());
            let body = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod.name, "namespace": pod.namespace}});
            let r = kube.call("POST", &p, Some(&body)).await?;
            match r.status {
                404 => {}
                429 => {
                    let pod_name = names(std::slice::from_ref(&pod));
                    let (key, cause) = match budget_of(&r.body) {
                        Some((pdb, why)) => (
                            format!("pdb:{}/{pdb}", pod.namespace),
                            format!("PodDisruptionBudget {}/{pdb} ({why})", pod.namespace),
                        ),
                        None => (
                            format!("evict:{pod_name}"),
                            format!("a PodDisruptionBudget ({})", r.message()),
                        ),
                    };
                    if blocked.is_empty() {
                        let message =
                            format!("drain waiting to evict pod {pod_name}: refused by {cause}");
                        super::report::stuck(kube, node, &opts.stuck, &key, &message).await;
                    }
                    last_refusal = cause;
                    blocked.push(pod);
                }
                _ if r.ok() => evicted.push(pod),
                _ => return Err(refused("POST", &p, &r)),
            }
        }
        pending = blocked;
        if pending.is_empty() {
            break;
        }
        if !pause(backoff.pause(None), deadline).await {
            return Err(Error::Cluster(format!(
                "drain of node {node} timed out after {:?}: eviction of {} refused by {last_refusal}",
                opts.timeout,
                names(&pending)
            )));
        }
    }
    let mut backoff = crate::backoff::Backoff::new(opts.poll, opts.poll * 8);
    loop {
        let mut left = Vec::new();
        for pod in evicted {
            let r = kube.call("GET", &pod.path(), None).await?;
            match r.status {
                404 => {}
                // Same name, new pod (a StatefulSet recreated it elsewhere): ours is gone.
                _ if r.ok() && r.body["metadata"]["uid"].as_str() != Some(pod.uid.as_str()) => {}
                _ if r.ok() => left.push(pod),
                _ => return Err(refused("GET", &pod.path(), &r)),
            }
        }
        evicted = left;
        if evicted.is_empty() {
            tracing::info!(node, "node drained");
            return Ok(());
        }
        if !pause(backoff.pause(None), deadline).await {
            return Err(Error::Cluster(format!(
                "drain of node {node} timed out after {:?}: pods still terminating: {}",
                opts.timeout,
                names(&evicted)
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_pods_a_drain_evicts() {
        let ds = json!({"metadata": {"ownerReferences": [{"kind": "DaemonSet", "name": "svclb"}]}, "status": {"phase": "Running"}});
        let rs = json!({"metadata": {"ownerReferences": [{"kind": "ReplicaSet", "name": "web", "controller": true}]}, "status": {"phase": "Running"}});
        let owned_not_controlled = json!({"metadata": {"ownerReferences": [{"kind": "ConfigMap", "name": "c"}]}, "status": {"phase": "Running"}});
        let scratch = json!({"metadata": {"ownerReferences": [{"kind": "ReplicaSet", "controller": true}]}, "spec": {"volumes": [{"name": "s", "emptyDir": {}}, {"name": "c", "configMap": {}}]}, "status": {"phase": "Running"}});
        let mirror = json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "abc"}}, "status": {"phase": "Running"}});
        let done = json!({"metadata": {"ownerReferences": [{"kind": "Job"}]}, "status": {"phase": "Succeeded"}});
        let failed = json!({"metadata": {}, "status": {"phase": "Failed"}});
        let going = json!({"metadata": {"deletionTimestamp": "2024-05-01T10:00:00Z"}, "status": {"phase": "Running"}});
        let bare = json!({"metadata": {"name": "x"}});
        let table = [
            (ds, PodAction::SkipDaemonSet),
            (rs, PodAction::Evict),
            (mirror, PodAction::SkipMirror),
            (done, PodAction::SkipFinished),
            (failed, PodAction::SkipFinished),
            (going, PodAction::Await),
            (bare.clone(), PodAction::RefuseUnmanaged),
            (owned_not_controlled, PodAction::RefuseUnmanaged),
            (scratch.clone(), PodAction::RefuseLocalData),
        ];
        for (i, (pod, want)) in table.into_iter().enumerate() {
            assert_eq!(classify(&pod), want, "row {i}");
        }
        let all = DrainPolicy {
            unmanaged: true,
            emptydir: true,
            blocking: vec![],
        };
        assert_eq!(classify_with(&bare, &all), PodAction::Evict);
        assert_eq!(classify_with(&scratch, &all), PodAction::Evict);
    }

    #[test]
    fn the_budget_is_read_from_the_status_causes() {
        let s = json!({"kind": "Status", "code": 429, "details": {"causes": [
            {"reason": "Other", "message": "x"},
            {"reason": "DisruptionBudget", "message": "The disruption budget db-pdb needs 2 healthy pods and has 2 currently"}]}});
        let (name, why) = budget_of(&s).unwrap();
        assert_eq!(name, "db-pdb");
        assert!(why.ends_with("has 2 currently"));
        assert_eq!(budget_of(&json!({"kind": "Status", "code": 429})), None);
    }

    #[test]
    fn selectors_match_every_term() {
        let pod = json!({"metadata": {"labels": {"app": "db", "tier": "data"}}});
        assert!(matches_selector(&pod, "app=db"));
        assert!(matches_selector(&pod, "app=db,tier=data"));
        assert!(matches_selector(&pod, "app==db"));
        assert!(matches_selector(&pod, "tier"));
        assert!(matches_selector(&pod, "app!=web"));
        assert!(!matches_selector(&pod, "app!=db"));
        assert!(!matches_selector(&pod, "app=db,tier=web"));
        assert!(!matches_selector(&pod, "zone"));
        assert!(!matches_selector(&json!({}), "app=db"));
    }

    #[test]
    fn readiness_is_the_ready_condition() {
        let node = |s: &str| json!({"status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": s}]}});
        assert!(is_ready(&node("True")));
        assert!(!is_ready(&node("False")));
        assert!(!is_ready(&node("Unknown")));
        assert!(!is_ready(&json!({})));
    }
}
