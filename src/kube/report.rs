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
/// Set by an operator: install exactly this version (the feed must list it).
pub const TARGET_LABEL: &str = "ferry.k3os.io/target-version";
pub const CONDITION: &str = "OSUpdate";
/// Node annotation while an installed update waits for its reboot (kured's
/// "reboot required"): the phase's message; removed once the node is back.
pub const REBOOT_REQUIRED: &str = "ferry.k3os.io/reboot-required";

/// What keeps a node's update reboot waiting (a busy reboot slot, a
/// PodDisruptionBudget, a firing alert), and since when. Kept across the
/// daemon's retry rounds, so the Event says how long it has waited and a
/// reason is posted once per change, not once per poll.
#[derive(Debug, Default)]
pub struct Stuck {
    current: Option<(String, SystemTime)>,
}

impl Stuck {
    /// The node now waits on `why` (at `now`): since when, and whether the
    /// reason is new (then it is worth an Event).
    pub(crate) fn on(&mut self, why: &str, now: SystemTime) -> (SystemTime, bool) {
        match &self.current {
            Some((w, since)) if w == why => (*since, false),
            _ => {
                self.current = Some((why.to_string(), now));
                (now, true)
            }
        }
    }
    /// Nothing blocks any more.
    pub(crate) fn clear(&mut self) {
        self.current = None;
    }
    /// How long the node has been waiting on its current reason.
    pub(crate) fn waiting(&self, now: SystemTime) -> Option<(&str, std::time::Duration)> {
        self.current
            .as_ref()
            .map(|(w, s)| (w.as_str(), now.duration_since(*s).unwrap_or_default()))
    }
}

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
    // present only while an installed update waits for its reboot
    let required = match phase {
        Phase::RebootPending => json!(message),
        _ => Value::Null,
    };
    let meta = json!({"metadata": {"labels": labels, "annotations": {REBOOT_REQUIRED: required}}});
    if let Err(e) = kube.patch(&path, &meta).await {
        tracing::warn!(node, error = %e, "could not label the node");
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

/// Report that the reboot waits on `why` (a stable key) with `message`:
/// the condition's message always, an Event when the reason is new.
pub(crate) async fn stuck(
    kube: &Kube,
    node: &str,
    tracker: &std::sync::Mutex<Stuck>,
    why: &str,
    message: &str,
) {
    let now = SystemTime::now();
    let Ok((since, new)) = tracker.lock().map(|mut t| t.on(why, now)) else {
        return;
    };
    let since = micro_time(since_epoch(since));
    let text = format!("{message} (since {since})");
    report(kube, node, None, None, Phase::RebootPending, &text).await;
    if new {
        tracing::warn!(node, reason = why, "{text}");
        super::drain::event(kube, node, "FerryRebootWaiting", &text, true).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stuck_reason_is_new_once_and_keeps_its_start() {
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        let later = t0 + std::time::Duration::from_secs(60);
        let mut s = Stuck::default();
        assert_eq!(s.waiting(t0), None);
        assert_eq!(s.on("pdb db", t0), (t0, true));
        assert_eq!(
            s.on("pdb db", later),
            (t0, false),
            "same reason: same start"
        );
        assert_eq!(
            s.waiting(later),
            Some(("pdb db", std::time::Duration::from_secs(60)))
        );
        assert_eq!(s.on("slot pi-9", later), (later, true), "a new reason");
        s.clear();
        assert_eq!(
            s.on("slot pi-9", later),
            (later, true),
            "new again after a clear"
        );
    }

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
