//! Cluster-aware reboots, the Kubernetes-native way: a node takes one of N
//! reboot slots (Leases), cordons and drains itself through the Eviction API,
//! reboots, and after the trial boot is decided (commit or rollback) becomes
//! schedulable again and gives its slot back — only once it is Ready, so a
//! node that does not come back keeps the next one from going down until its
//! lease expires.
//!
//! Talks to the API server over [`crate::net::http`] (no kube-rs). Every wait
//! is bounded by an option; nothing here waits forever. The decisions
//! (lease ownership, which pods to evict, readiness) are pure functions in
//! [`lock`] and [`drain`]; this module only sequences the calls.

pub mod alerts;
pub(crate) mod client;
pub mod drain;
#[cfg(feature = "host")]
pub mod fleet;
pub mod kubeconfig;
pub mod lock;
pub mod report;

use std::time::{Duration, Instant, SystemTime};

use tracing::Instrument as _;

pub use client::Kube;

use crate::error::Error;
use drain::DrainOptions;
use lock::Acquire;

#[derive(Debug, Clone)]
pub struct RebootOptions {
    /// Where the reboot Leases live.
    pub namespace: String,
    /// How many nodes may be down for an update at once (>= 1).
    pub concurrency: u32,
    /// This node's name; also the Lease holder identity.
    pub node: String,
    /// How long a slot stays ours without renewal: must cover the reboot and
    /// the health gate, since nobody renews while the node is down.
    pub lease_seconds: u64,
    /// Bound on evicting and waiting for the node's pods.
    pub drain_timeout: Duration,
    /// Give up waiting for a free slot after this long (the daemon retries later).
    pub lock_timeout: Duration,
    /// After boot, how long to wait for the node to become Ready.
    pub ready_timeout: Duration,
    /// First retry delay for every poll; back-off doubles it up to 8x.
    pub poll: Duration,
    /// What the drain may evict, and which pods block a reboot.
    pub drain: drain::DrainPolicy,
    /// The feed channel, shown as the node label `ferry.k3os.io/channel`.
    pub channel: Option<String>,
    /// How long each reboot Lease was seen unchanged (kept across rounds).
    pub observer: std::sync::Arc<std::sync::Mutex<lock::Observer>>,
    /// The monotonic origin for the observer.
    pub started: Instant,
    /// The wall clock written into Leases (a test may skew it).
    pub wall: fn() -> SystemTime,
    /// What the reboot waits on, and since when (kept across rounds).
    pub stuck: std::sync::Arc<std::sync::Mutex<report::Stuck>>,
    /// Prometheus alerts that defer the reboot.
    pub alerts: Option<alerts::AlertGate>,
}

impl RebootOptions {
    pub fn new(node: impl Into<String>) -> RebootOptions {
        RebootOptions {
            namespace: "kube-system".into(),
            concurrency: 1,
            node: node.into(),
            lease_seconds: 1800,
            drain_timeout: Duration::from_secs(600),
            lock_timeout: Duration::from_secs(600),
            ready_timeout: Duration::from_secs(600),
            poll: Duration::from_secs(5),
            drain: drain::DrainPolicy::default(),
            channel: None,
            observer: Default::default(),
            started: Instant::now(),
            wall: SystemTime::now,
            stuck: Default::default(),
            alerts: None,
        }
    }
}

/// How the trial boot ended; `version` is what the node runs now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootOutcome {
    Committed { version: String },
    RolledBack { version: String },
}

/// Sleep `delay`, but not past `deadline`; `false` once the deadline has passed.
pub(crate) async fn pause(delay: Duration, deadline: Instant) -> bool {
    let now = Instant::now();
    if now >= deadline {
        return false;
    }
    tokio::time::sleep(delay.min(deadline - now)).await;
    true
}

/// Poll for a reboot slot with back-off until one is ours or `lock_timeout`.
async fn acquire(kube: &Kube, o: &RebootOptions) -> Result<u32, Error> {
    let deadline = Instant::now() + o.lock_timeout;
    let mut backoff = crate::backoff::Backoff::new(o.poll, o.poll * 8);
    loop {
        match lock::try_acquire(kube, o).await? {
            Acquire::Got(slot) => return Ok(slot),
            Acquire::Busy(holders) => {
                let who: Vec<&str> = holders.iter().map(|(h, _)| h.as_str()).collect();
                let held: Vec<String> = holders
                    .iter()
                    .map(|(h, left)| format!("{h}, for up to another {left} s"))
                    .collect();
                report::stuck(
                    kube,
                    &o.node,
                    &o.stuck,
                    &format!("slot:{}", who.join(",")),
                    &format!(
                        "waiting for a free reboot slot in namespace {} (held by {})",
                        o.namespace,
                        held.join(", ")
                    ),
                )
                .await;
                if !pause(backoff.pause(None), deadline).await {
                    return Err(Error::Cluster(format!(
                        "no reboot slot free in namespace {} after {:?} (held by {})",
                        o.namespace,
                        o.lock_timeout,
                        held.join(", ")
                    )));
                }
            }
        }
    }
}

/// Take a reboot slot, cordon and drain this node, then call `reboot`. On a
/// failure before or in `reboot` the node is uncordoned, the slot released
/// and the error returned (the daemon tries again later). When `reboot`
/// returns `Ok` the node stays cordoned and the slot held, for [`after_boot`].
pub async fn coordinate_reboot(
    kube: &Kube,
    o: &RebootOptions,
    reboot: impl FnOnce() -> Result<(), Error>,
) -> Result<(), Error> {
    let span = tracing::info_span!("reboot", node = %o.node);
    reboot_in_span(kube, o, reboot).instrument(span).await
}

async fn reboot_in_span(
    kube: &Kube,
    o: &RebootOptions,
    reboot: impl FnOnce() -> Result<(), Error>,
) -> Result<(), Error> {
    // Nobody renews the lease while the node drains: it must outlast the drain.
    if Duration::from_secs(o.lease_seconds) <= o.drain_timeout {
        return Err(Error::Usage(format!(
            "reboot lease ({} s) must be longer than the drain timeout ({:?})",
            o.lease_seconds, o.drain_timeout
        )));
    }
    if let Some(gate) = &o.alerts {
        // asked before a slot is taken: a blocked node holds nobody up
        let why = match alerts::check(gate).await {
            Ok(f) if f.is_empty() => None,
            Ok(f) => Some((
                format!("alerts:{}", f.join(",")),
                format!(
                    "reboot deferred: Prometheus alerts firing: {}",
                    f.join(", ")
                ),
            )),
            Err(e) => Some((
                "alerts:unknown".to_string(),
                format!("reboot deferred: cannot tell which alerts fire ({e})"),
            )),
        };
        if let Some((key, message)) = why {
            report::stuck(kube, &o.node, &o.stuck, &key, &message).await;
            return Err(Error::Cluster(message));
        }
    }
    let slot = acquire(kube, o).await?;
    tracing::info!(slot, "reboot slot acquired");
    let drain_opts = DrainOptions {
        policy: o.drain.clone(),
        timeout: o.drain_timeout,
        poll: o.poll,
        stuck: o.stuck.clone(),
    };
    let prepared = async {
        drain::annotate(kube, &o.node, "draining", None).await?;
        drain::event(
            kube,
            &o.node,
            "FerryDraining",
            "ferry is draining the node for an update reboot",
            false,
        )
        .await;
        drain::cordon(kube, &o.node).await?;
        drain::drain(kube, &o.node, &drain_opts).await?;
        if let Ok(mut s) = o.stuck.lock() {
            s.clear();
        }
        // The drain may have taken a while: the full lease now covers the reboot.
        lock::renew(
            kube,
            &o.namespace,
            &o.node,
            slot,
            o.lease_seconds,
            (o.wall)(),
        )
        .await?;
        drain::annotate(kube, &o.node, "rebooting", None).await?;
        report::report(
            kube,
            &o.node,
            None,
            o.channel.as_deref(),
            report::Phase::RebootPending,
            "drained; rebooting into the updated slot",
        )
        .await;
        drain::event(
            kube,
            &o.node,
            "FerryRebooting",
            "ferry is rebooting the node into the updated slot",
            false,
        )
        .await;
        Ok(())
    }
    .await;
    match prepared.and_then(|()| reboot()) {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "reboot abandoned; returning the node to service");
            drain::event(kube, &o.node, "FerryRebootAbandoned", &e.to_string(), true).await;
            let cleanup = async {
                drain::uncordon(kube, &o.node).await?;
                drain::annotate(kube, &o.node, "reboot-failed", None).await?;
                lock::release(kube, &o.namespace, &o.node, o.concurrency).await
            };
            if let Err(c) = cleanup.await {
                tracing::error!(error = %c, "cleanup after an abandoned reboot failed");
            }
            Err(e)
        }
    }
}

/// After the trial boot is decided: wait until the node is Ready, uncordon
/// it, record the outcome, give the reboot slot back. Idempotent. If the node
/// does not become Ready in time the slot is kept (it expires on its own) and
/// an error returned.
pub async fn after_boot(
    kube: &Kube,
    o: &RebootOptions,
    outcome: &BootOutcome,
) -> Result<(), Error> {
    let span = tracing::info_span!("after_boot", node = %o.node);
    after_boot_in_span(kube, o, outcome).instrument(span).await
}

async fn after_boot_in_span(
    kube: &Kube,
    o: &RebootOptions,
    outcome: &BootOutcome,
) -> Result<(), Error> {
    let deadline = Instant::now() + o.ready_timeout;
    let mut backoff = crate::backoff::Backoff::new(o.poll, o.poll * 8);
    // the Ready node's object also answers the questions below: one read
    let node = loop {
        let n = kube.get(&format!("/api/v1/nodes/{}", o.node)).await?;
        if drain::is_ready(&n) {
            break n;
        }
        if !pause(backoff.pause(None), deadline).await {
            return Err(Error::Cluster(format!(
                "node {} not Ready after {:?}; keeping its reboot lease",
                o.node, o.ready_timeout
            )));
        }
    };
    let (status, version, reason, warning) = match outcome {
        BootOutcome::Committed { version } => ("committed", version, "FerryCommitted", false),
        BootOutcome::RolledBack { version } => ("rolled-back", version, "FerryRolledBack", true),
    };
    // an Event only when an update ended here: not for a node ferry never
    // rebooted, nor for a daemon restart with nothing new to say
    let ann = &node["metadata"]["annotations"];
    let news = ann[drain::STATUS].as_str().is_some_and(|s| s != status)
        || ann[drain::VERSION]
            .as_str()
            .is_some_and(|v| v != version.as_str());
    if drain::cordoned_by_ferry(&node) {
        drain::lift_cordon(kube, &o.node).await?;
    }
    drain::annotate(kube, &o.node, status, Some(version)).await?;
    let (phase, message) = match outcome {
        BootOutcome::Committed { .. } => (report::Phase::UpToDate, format!("running {version}")),
        BootOutcome::RolledBack { .. } => (
            report::Phase::RolledBack,
            format!("the update was rolled back; running {version}"),
        ),
    };
    report::report(
        kube,
        &o.node,
        Some(version),
        o.channel.as_deref(),
        phase,
        &message,
    )
    .await;
    if news {
        drain::event(
            kube,
            &o.node,
            reason,
            &format!("ferry: update {status}, running {version}"),
            warning,
        )
        .await;
    }
    lock::release(kube, &o.namespace, &o.node, o.concurrency).await
}
