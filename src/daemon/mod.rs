//! `ferry daemon`: what runs on every node. At start it gates a trial boot
//! on health (commit, or roll back and reboot); then it polls the signed
//! release feed with jitter inside the maintenance window, streams a newer
//! release into the inactive slot, and reboots into it. A local control
//! socket reports status and takes check-now / pause / resume / install.
//! The loop is synchronous; a one-worker tokio runtime serves HTTP.

pub(crate) mod control;
pub(crate) mod health;
pub(crate) mod metrics;
pub(crate) mod ota;
pub(crate) mod watchdog;
pub mod window;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{error, info, warn};

use crate::bundle::Keyring;
use crate::error::Error;
use crate::feed;
use crate::health::{Gate, Verdict};
use crate::io::config::{Config, FeedConfig};
use crate::io::node::Node;
use crate::net::http::{Client, TlsOptions};
use crate::net::url::Url;
use crate::update::machine::{Event, State};
use health::run_round;

#[derive(Default)]
pub(crate) struct Wake {
    pub check_now: bool,
    /// An install asked for over the control socket, with its request id.
    pub install_url: Option<(String, u64)>,
}

/// How an install asked for over the control socket ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InstallOutcome {
    /// ferry's exit code for it (0: installed, trial armed).
    pub code: u8,
    pub message: String,
}

#[derive(Default)]
pub(crate) struct Shared {
    pub paused: AtomicBool,
    wake: Mutex<Wake>,
    cv: Condvar,
    status: Mutex<serde_json::Value>,
    phase: Mutex<String>,
    pub received: Arc<AtomicU64>,
    /// Signs of life of the main loop, for the watchdogs.
    pub(crate) live: Arc<watchdog::Liveness>,
    next_id: AtomicU64,
    /// What the update reboot waits on (shared with the cluster options).
    pub(crate) stuck: Arc<Mutex<crate::kube::report::Stuck>>,
    /// Update reboots the cluster deferred.
    pub(crate) deferred: AtomicU64,
    outcomes: Mutex<std::collections::HashMap<u64, InstallOutcome>>,
    done: Condvar,
}

impl Shared {
    /// Queue an install of `url`; returns the id its outcome is reported under.
    pub(crate) fn request_install(&self, url: String) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake(|w| w.install_url = Some((url, id)));
        id
    }

    fn report(&self, id: u64, o: InstallOutcome) {
        if let Ok(mut m) = self.outcomes.lock() {
            m.insert(id, o);
        }
        self.done.notify_all();
    }

    /// Wait up to `d` for the outcome of install request `id`.
    pub(crate) fn wait_outcome(&self, id: u64, d: Duration) -> Option<InstallOutcome> {
        let deadline = Instant::now() + d;
        let mut g = self.outcomes.lock().ok()?;
        loop {
            if let Some(o) = g.remove(&id) {
                return Some(o);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            g = self.done.wait_timeout(g, left).ok()?.0;
        }
    }

    pub(crate) fn wake(&self, f: impl FnOnce(&mut Wake)) {
        if let Ok(mut w) = self.wake.lock() {
            f(&mut w);
        }
        self.cv.notify_all();
    }
    pub(crate) fn status(&self) -> serde_json::Value {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
    pub(crate) fn phase(&self) -> String {
        self.phase.lock().map(|s| s.clone()).unwrap_or_default()
    }
    fn set_phase(&self, p: &str) {
        if let Ok(mut s) = self.phase.lock() {
            *s = p.to_string();
        }
    }
    /// Wait up to `d` for a wake-up; returns what was asked.
    fn wait(&self, d: Duration) -> Wake {
        let Ok(mut g) = self.wake.lock() else {
            return Wake::default();
        };
        let deadline = Instant::now() + d;
        self.live.set_waiting(true);
        let _awake = Awake(&self.live);
        while !g.check_now && g.install_url.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.cv.wait_timeout(g, left) {
                Ok((ng, _)) => g = ng,
                Err(_) => return Wake::default(),
            }
        }
        std::mem::take(&mut *g)
    }
}

pub(crate) struct Options {
    /// One pass (gate, poll, install) and exit: for tests and cron-style use.
    pub once: bool,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn jitter(max: u64) -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::getrandom(&mut b);
    if max == 0 {
        0
    } else {
        u64::from_le_bytes(b) % (max + 1)
    }
}

/// Marks the main loop busy again when a wait ends, however it ends.
struct Awake<'a>(&'a watchdog::Liveness);

impl Drop for Awake<'_> {
    fn drop(&mut self) {
        self.0.set_waiting(false);
    }
}

pub(crate) fn run(cfg: Config, opts: Options) -> Result<(), Error> {
    let shared = Arc::new(Shared::default());
    // before any other thread exists: they all inherit the blocked signals
    let supervisor = watchdog::Supervisor::start(
        cfg.daemon.watchdog.as_deref(),
        Duration::from_secs(cfg.daemon.stall_s),
        shared.live.clone(),
        shared.received.clone(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Error::io("start runtime", "tokio", e))?;
    let keyring = crate::io::keyfiles::load_keyring(
        &[] as &[&std::path::Path],
        &[&cfg.keyring],
        cfg.threshold,
    )?;
    let mut node = Node::open(cfg.clone(), true)?;
    publish_status(&mut node, &shared);
    supervisor.ready();
    // the control socket answers only once there is a status to give
    match control::bind(&cfg.daemon.socket) {
        Ok(l) => {
            let s = shared.clone();
            std::thread::spawn(move || control::serve(l, s));
        }
        Err(e) => warn!(error = %e, "control socket unavailable"),
    }
    if let Some(addr) = &cfg.daemon.metrics {
        match metrics::bind(metrics::address(addr)?) {
            Ok(l) => {
                let s = shared.clone();
                std::thread::spawn(move || metrics::serve(l, s));
            }
            // updates go on without their metrics
            Err(e) => warn!(error = %e, "metrics endpoint unavailable"),
        }
    }
    info!(booted = %node.eng.booted, state = %node.eng.dev.state, "daemon started");

    let mut cluster = match &cfg.cluster {
        Some(c) => {
            let (kube, mut o) = cluster(c, cfg.feed.as_ref().map(|f| f.channel.clone()))?;
            o.stuck = shared.stuck.clone();
            Some((kube, o))
        }
        None => None,
    };
    // the channel an operator set on the node wins over the configured one
    // from the start: nothing ferry reports may overwrite it
    if let (Some((kube, o)), Some(fc)) = (cluster.as_mut(), &cfg.feed) {
        o.channel = Some(follow_channel(fc, kube, &o.node, &rt, None).channel);
    }
    if let State::RebootPending { next } = node.eng.dev.state {
        // a rollback (or a stray boot) whose reboot never happened: nothing
        // else is allowed until the committed slot runs again
        warn!(next = %next, "a rollback is waiting for its reboot; rebooting into the committed slot");
        node.reboot()?;
        if cfg.reboot == crate::io::config::RebootMode::Record {
            return Ok(());
        }
    }
    if matches!(node.eng.dev.state, State::Trial { .. }) {
        shared.set_phase("health");
        if let Some((kube, o)) = &cluster {
            let (phase, version, message) = phase_of(&node);
            rt.block_on(announce(kube, o, phase, version.as_deref(), &message));
        }
        let kube = cluster
            .as_ref()
            .filter(|_| cfg.cluster.as_ref().is_some_and(|c| c.readyz))
            .map(|(k, _)| k);
        if let Some(GateOutcome::RolledBack { reboot: true, .. }) =
            gate(&mut node, kube.map(|k| (k, rt.handle())))?
        {
            node.reboot()?;
        }
        publish_status(&mut node, &shared);
    }
    if let (Some((kube, o)), State::Idle) = (&cluster, &node.eng.dev.state) {
        // back from an update reboot (or never gone): schedulable again, slot released
        let version = node.eng.dev.slots[node.eng.booted.index()]
            .release
            .as_ref()
            .map(|r| r.version.to_string())
            .unwrap_or_default();
        let outcome = match &node.eng.dev.last {
            Some(crate::update::machine::Outcome::Committed { .. }) | None => {
                crate::kube::BootOutcome::Committed { version }
            }
            Some(_) => crate::kube::BootOutcome::RolledBack { version },
        };
        if let Err(e) = rt.block_on(crate::kube::after_boot(kube, o, &outcome)) {
            warn!(error = %e, "cluster: after-boot steps failed; will retry at the next start");
        }
    }
    let fetcher = match &cfg.feed {
        Some(f) => Some(fetcher(f, rt.handle().clone(), shared.received.clone())?),
        None => None,
    };
    let window = cfg.feed.as_ref().and_then(|f| f.maintenance_window);
    let mut wake = Wake::default();
    let mut reported: Option<crate::kube::report::Phase> = None;
    loop {
        shared.live.beat();
        let mut failure: Option<Error> = None;
        let in_window = window.is_none_or(|w| w.contains(now()));
        let explicit = wake.install_url.take();
        if let Some((url, id)) = explicit {
            if let Some(f) = &fetcher {
                shared.set_phase("installing");
                match ota::install_url(&mut node, f, &url, None, &keyring) {
                    Ok(done) => {
                        info!(slot = %done.slot, version = %done.version, "installed from request");
                        shared.report(
                            id,
                            InstallOutcome {
                                code: 0,
                                message: format!(
                                    "installed {} into slot {}; trial boot armed",
                                    done.version, done.slot
                                ),
                            },
                        );
                    }
                    Err(e) => {
                        error!(error = %e, "install request failed");
                        shared.report(
                            id,
                            InstallOutcome {
                                code: e.exit_code(),
                                message: e.to_string(),
                            },
                        );
                        failure = Some(e);
                    }
                }
            } else {
                shared.report(
                    id,
                    InstallOutcome {
                        code: 51,
                        message: "the daemon has no [feed] section: it has no client to fetch with"
                            .into(),
                    },
                );
            }
        } else if !shared.paused.load(Ordering::SeqCst)
            && in_window
            && !matches!(node.eng.dev.state, State::Installed { .. })
        {
            if let (Some(fc), Some(f)) = (&cfg.feed, &fetcher) {
                shared.set_phase("polling");
                // an operator may move the node to another channel with a
                // label; still only what that channel's signed feed lists
                let fc = match cluster.as_mut() {
                    Some((kube, o)) => {
                        let eff = follow_channel(fc, kube, &o.node, &rt, o.channel.as_deref());
                        o.channel = Some(eff.channel.clone());
                        eff
                    }
                    None => fc.clone(),
                };
                if let Err(e) = poll_once(&mut node, f, &fc, &keyring) {
                    error!(error = %e, "update check failed");
                    failure = Some(e);
                }
            }
        }
        publish_status(&mut node, &shared);
        if let Some((kube, o)) = &cluster {
            // the phase as kubectl shows it, on every change
            let (phase, version, message) = phase_of(&node);
            if reported != Some(phase) {
                rt.block_on(announce(kube, o, phase, version.as_deref(), &message));
                reported = Some(phase);
            }
        }
        if matches!(node.eng.dev.state, State::Installed { .. })
            && cfg.daemon.auto_reboot
            && in_window
            && !shared.paused.load(Ordering::SeqCst)
        {
            shared.set_phase("rebooting");
            match &cluster {
                Some((kube, o)) => {
                    let r = rt.block_on(crate::kube::coordinate_reboot(kube, o, || node.reboot()));
                    if let Err(e) = r {
                        // drain refused (PDB) or no reboot slot: stay installed, retry next round
                        error!(error = %e, "cluster-coordinated reboot did not happen");
                        shared.deferred.fetch_add(1, Ordering::Relaxed);
                        if opts.once {
                            return Err(e);
                        }
                        wake = shared.wait(Duration::from_secs(60));
                        continue;
                    }
                }
                None => node.reboot()?,
            }
            if cfg.reboot == crate::io::config::RebootMode::Record {
                // tests: the "reboot" happened; stop like a real reboot would
                return Ok(());
            }
        }
        if opts.once {
            return failure.map_or(Ok(()), Err);
        }
        shared.set_phase("idle");
        let interval = cfg
            .feed
            .as_ref()
            .map(|f| f.poll_interval_s + jitter(f.jitter_s))
            .unwrap_or(3600);
        wake = shared.wait(Duration::from_secs(interval));
    }
}

fn cluster(
    c: &crate::io::config::ClusterConfig,
    channel: Option<String>,
) -> Result<(crate::kube::Kube, crate::kube::RebootOptions), Error> {
    let kc = match &c.kubeconfig {
        crate::io::config::Kubeconfig::InCluster => crate::kube::kubeconfig::in_cluster()?,
        crate::io::config::Kubeconfig::File(p) => crate::kube::kubeconfig::load(p)?,
    };
    let kube = crate::kube::Kube::new(&kc)?;
    let node = c
        .node
        .clone()
        .or_else(|| std::env::var("NODE_NAME").ok())
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
        })
        .ok_or_else(|| {
            Error::Usage("cluster: no node name (set cluster.node or NODE_NAME)".into())
        })?;
    let mut o = crate::kube::RebootOptions::new(node);
    o.namespace = c.namespace.clone();
    o.concurrency = c.concurrency.max(1);
    o.lease_seconds = c.lease_seconds;
    o.drain_timeout = Duration::from_secs(c.drain_timeout_s);
    o.channel = channel;
    o.drain = crate::kube::drain::DrainPolicy {
        unmanaged: c.drain_unmanaged,
        emptydir: c.delete_emptydir_data,
        blocking: c.blocking_pods.clone(),
    };
    o.alerts = c
        .alerts_url
        .as_ref()
        .map(|url| crate::kube::alerts::AlertGate {
            url: url.clone(),
            ignore: c.alerts_ignore.clone(),
            ca: c.alerts_ca.clone(),
        });
    o.lock_timeout = Duration::from_secs(c.lock_timeout_s);
    o.ready_timeout = Duration::from_secs(c.ready_timeout_s);
    Ok((kube, o))
}

fn fetcher(
    f: &FeedConfig,
    rt: tokio::runtime::Handle,
    received: Arc<AtomicU64>,
) -> Result<ota::Fetcher, Error> {
    let opts = TlsOptions {
        ca: f.ca.clone(),
        client_cert: f.client_cert.clone(),
        client_key: f.client_key.clone(),
        allow_http: f.allow_http,
        ..Default::default()
    };
    let mut client = Client::new(&opts).map_err(|e| Error::Net {
        what: "feed client".into(),
        detail: e.to_string(),
    })?;
    client.idle_timeout = Duration::from_secs(f.idle_timeout_s.max(1));
    client.min_rate_bps = f.min_rate_bps;
    Ok(ota::Fetcher {
        rt,
        client,
        attempts: f.attempts,
        backoff: Duration::from_millis(500),
        received,
    })
}

/// The highest feed serial accepted on `channel`: from the record, or once
/// from the `feed.json` of ferry 0.1 (an unreadable one is an error, never
/// "no serial": replay protection does not fail open).
fn seen_serial(node: &Node, channel: &str) -> Result<Option<u64>, Error> {
    if let Some(s) = node.eng.dev.feeds.get(channel) {
        return Ok(Some(*s));
    }
    let legacy = node.cfg.state_dir.join("feed.json");
    match std::fs::read(&legacy) {
        Ok(b) => {
            let v: serde_json::Value = serde_json::from_slice(&b).map_err(|e| {
                Error::State(format!("{} is unreadable ({e}): replay protection cannot be checked; restore it or delete it knowingly", legacy.display()))
            })?;
            match (v["channel"].as_str(), v["serial"].as_u64()) {
                (Some(c), Some(s)) if c == channel => Ok(Some(s)),
                (Some(_), Some(_)) => Ok(None),
                _ => Err(Error::State(format!(
                    "{} has no channel and serial: replay protection cannot be checked",
                    legacy.display()
                ))),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read feed state", &legacy, e)),
    }
}

/// Fetch and verify the index, pick a release, install it.
pub(crate) fn poll_once(
    node: &mut Node,
    f: &ota::Fetcher,
    fc: &FeedConfig,
    keyring: &Keyring,
) -> Result<(), Error> {
    let url = Url::parse(&fc.url).map_err(|d| Error::Usage(format!("feed url: {d}")))?;
    let sig_url = Url::parse(&format!("{}.sig", fc.url))
        .map_err(|d| Error::Usage(format!("feed url: {d}")))?;
    let get = |u: &Url, max: usize| -> Result<Vec<u8>, Error> {
        let net = |e: crate::net::http::HttpError| Error::Net {
            what: format!("GET {}", u.redacted()),
            detail: e.to_string(),
        };
        let resp = f.rt.block_on(f.client.get(u, None, &[])).map_err(net)?;
        if resp.status != 200 {
            return Err(net(crate::net::http::HttpError::Status(resp.status)));
        }
        f.rt.block_on(resp.bytes(max)).map_err(net)
    };
    let index = get(&url, feed::MAX_INDEX)?;
    let sig = get(&sig_url, feed::MAX_SIG_FILE)?;
    let seen = seen_serial(node, &fc.channel)?;
    let idx = feed::verify(
        &index,
        &String::from_utf8_lossy(&sig),
        keyring,
        &fc.channel,
        now(),
        seen,
    )?;
    if seen != Some(idx.serial) {
        // the serial lives in the device record (two copies, one writer)
        node.eng.dev.accept_feed(&fc.channel, idx.serial);
        node.save()?;
    }
    let current = node.eng.dev.slots[node.eng.booted.index()]
        .release
        .as_ref()
        .map(|r| r.version.clone());
    let floor = node.eng.dev.floor.clone();
    let Some(rel) = feed::pick(
        &idx,
        &node.board.compatible,
        current.as_ref(),
        floor.as_ref(),
        fc.version.as_ref(),
    ) else {
        match &fc.version {
            Some(t) => {
                info!(serial = idx.serial, target = %t, "the pinned version is not a newer release in this feed")
            }
            None => info!(serial = idx.serial, "no newer release"),
        }
        return Ok(());
    };
    // a release that already failed here (health, boot) is not retried: a
    // fixed release comes with a new version or at least a new manifest
    if node.eng.dev.failed.contains(&rel.manifest_sha256) {
        info!(version = %rel.version, "newest release failed on this device before; not retrying it");
        return Ok(());
    }
    if let State::RebootPending { next } = node.eng.dev.state {
        info!(next = %next, "a rollback waits for its reboot; not installing");
        return Ok(());
    }
    let bundle_url = feed::resolve(&fc.url, &rel.url);
    info!(version = %rel.version, serial = idx.serial, "new release");
    ota::install_url(node, f, &bundle_url, Some(rel.manifest_sha256), keyring)?;
    Ok(())
}

/// How a trial boot's health gate ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GateOutcome {
    Committed,
    /// Marked bad; `reboot` when the state machine asks to go back now.
    RolledBack {
        reason: String,
        reboot: bool,
    },
}

/// Health gate of a trial boot: commit, or roll back (the caller reboots).
/// `None` when the boot is not a trial. With a cluster client, the API
/// server's /readyz must pass too.
pub(crate) fn gate(
    node: &mut Node,
    readyz: Option<(&crate::kube::Kube, &tokio::runtime::Handle)>,
) -> Result<Option<GateOutcome>, Error> {
    let State::Trial { slot, release } = node.eng.dev.state.clone() else {
        return Ok(None);
    };
    let h = node.cfg.health.clone();
    info!(slot = %slot, version = %release.version, commands = h.commands.len(), "health checks started");
    let t0 = Instant::now();
    let mut g = Gate::new(h.passes, Duration::from_secs(h.deadline_s), t0.elapsed());
    loop {
        let mut r = run_round(&h);
        if let (Ok(()), Some((kube, rt))) = (&r, readyz) {
            r = match rt.block_on(kube.call("GET", "/readyz", None)) {
                Ok(reply) if reply.ok() => Ok(()),
                Ok(reply) => Err(format!("GET /readyz: HTTP {}", reply.status)),
                Err(e) => Err(format!("GET /readyz: {e}")),
            };
        }
        if let Err(e) = &r {
            info!(error = %e, "health check failed");
        }
        match g.observe(r, t0.elapsed()) {
            Verdict::Pending => std::thread::sleep(Duration::from_secs(h.interval_s)),
            Verdict::Passed => {
                node.apply(Event::HealthPassed)?;
                info!(slot = %slot, version = %release.version, "slot committed");
                return Ok(Some(GateOutcome::Committed));
            }
            Verdict::Failed(reason) => {
                let acts = node.apply(Event::HealthFailed {
                    reason: reason.clone(),
                })?;
                error!(slot = %slot, reason = %reason, "trial failed; rolling back");
                let reboot = crate::io::install::wants_reboot(&acts);
                return Ok(Some(GateOutcome::RolledBack { reason, reboot }));
            }
        }
    }
}

/// The feed to poll: the configured one, or the channel an operator set
/// with the node label `ferry.k3os.io/channel` (the configured index URL
/// must name its channel as a path segment, as `ferry feed publish` lays
/// feeds out), pinned to the version in `ferry.k3os.io/target-version` if
/// the node has one. Unreadable labels keep the configuration.
fn follow_channel(
    fc: &FeedConfig,
    kube: &crate::kube::Kube,
    node: &str,
    rt: &tokio::runtime::Runtime,
    current: Option<&str>,
) -> FeedConfig {
    use crate::kube::report::{CHANNEL_LABEL, TARGET_LABEL};
    let labels = match rt.block_on(kube.get(&format!("/api/v1/nodes/{node}"))) {
        Ok(n) => n["metadata"]["labels"].clone(),
        Err(e) => {
            warn!(error = %e, "cannot read the node's labels; keeping the configured channel");
            return fc.clone();
        }
    };
    let mut out = fc.clone();
    if let Some(t) = labels[TARGET_LABEL].as_str() {
        match semver::Version::parse(t) {
            Ok(v) => out.version = Some(v),
            Err(e) => {
                warn!(label = t, error = %e, "the node's target-version label is not a version; ignored")
            }
        }
    }
    let Some(want) = labels[CHANNEL_LABEL].as_str().filter(|w| *w != fc.channel) else {
        return out;
    };
    match crate::feed::channel_url(&fc.url, &fc.channel, want) {
        Some(url) => {
            if current != Some(want) {
                info!(channel = %want, "following the channel set on the node");
            }
            FeedConfig {
                url,
                channel: want.to_string(),
                ..out
            }
        }
        None => {
            warn!(channel = %want, "the node's channel label cannot be followed (not a channel name, or the feed URL does not name its channel as a path segment)");
            out
        }
    }
}

/// The node's condition and labels for `phase`, and an Event for the
/// transitions no other step announces (committed, rolled back, draining and
/// rebooting have their own, from `kube`).
async fn announce(
    kube: &crate::kube::Kube,
    o: &crate::kube::RebootOptions,
    phase: crate::kube::report::Phase,
    version: Option<&str>,
    message: &str,
) {
    use crate::kube::report::Phase;
    crate::kube::report::report(kube, &o.node, version, o.channel.as_deref(), phase, message).await;
    let reason = match phase {
        Phase::Installing => "FerryInstalling",
        Phase::RebootPending => "FerryInstalled",
        Phase::Trial => "FerryTrial",
        Phase::RolledBack | Phase::UpToDate => return,
    };
    crate::kube::drain::event(kube, &o.node, reason, message, false).await;
}

/// The update's phase for the node condition, the running version, a message.
fn phase_of(node: &Node) -> (crate::kube::report::Phase, Option<String>, String) {
    use crate::kube::report::Phase;
    let running = node.eng.dev.slots[node.eng.booted.index()]
        .release
        .as_ref()
        .map(|r| r.version.to_string());
    match &node.eng.dev.state {
        State::Installing { release, .. } => (
            Phase::Installing,
            running,
            format!("installing {}", release.version),
        ),
        State::Installed { slot, release } => (
            Phase::RebootPending,
            running,
            format!(
                "installed {} into slot {slot}; waiting to reboot",
                release.version
            ),
        ),
        State::RebootPending { next } => (
            Phase::RebootPending,
            running,
            format!("waiting to reboot into slot {next}"),
        ),
        State::Trial { release, .. } => (
            Phase::Trial,
            running,
            format!("on trial: {} must pass the health gate", release.version),
        ),
        State::Idle => match &node.eng.dev.last {
            Some(crate::update::machine::Outcome::RolledBack { reason, .. }) => {
                (Phase::RolledBack, running, format!("rolled back: {reason}"))
            }
            _ => (
                Phase::UpToDate,
                running.clone(),
                format!("running {}", running.unwrap_or_default()),
            ),
        },
    }
}

fn publish_status(node: &mut Node, shared: &Shared) {
    let mut v = match node.status_view() {
        Ok(v) => v,
        Err(e) => serde_json::json!({"error": e.to_string()}),
    };
    v["paused"] = serde_json::Value::Bool(shared.paused.load(Ordering::SeqCst));
    if let Ok(mut s) = shared.status.lock() {
        *s = v;
    }
}
