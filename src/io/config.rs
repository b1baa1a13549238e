//! The device configuration file (`/etc/ferry/ferry.toml`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::Error;

pub(crate) const DEFAULT_PATH: &str = "/etc/ferry/ferry.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A built-in board name or a path to a board file.
    pub board: String,
    /// Block device or disk image holding the GPT.
    pub disk: PathBuf,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Directory of trusted `*.pub` keys.
    #[serde(default = "default_keyring")]
    pub keyring: PathBuf,
    #[serde(default = "one")]
    pub threshold: usize,
    /// Where the kernel command line (with `ferry.slot=a|b`) is read from.
    #[serde(default = "default_cmdline")]
    pub cmdline: PathBuf,
    /// Where the per-boot id is read from (one boot event per id).
    #[serde(default = "default_boot_id")]
    pub boot_id: PathBuf,
    /// `system` reboots the machine; `record` only writes `state_dir/reboot-requested`.
    #[serde(default)]
    pub reboot: RebootMode,
    /// The init's orderly reboot (services stop in order: k3s, containerd),
    /// e.g. `["systemctl", "reboot", "{arg}"]` or `["/sbin/reboot"]`. `{arg}`
    /// is replaced by the firmware's reboot argument (the Pi's `0 tryboot`)
    /// or dropped when there is none. Unset: sync and reboot(2) at once.
    #[serde(default)]
    pub reboot_command: Option<Vec<String>>,
    /// When the init has not restarted the machine this many seconds after
    /// `reboot_command` succeeded (or the command failed), reboot(2) anyway.
    #[serde(default = "default_reboot_deadline")]
    pub reboot_deadline_s: u64,
    #[serde(default)]
    pub health: crate::health::HealthConfig,
    /// Where the daemon finds releases; no feed: the daemon only gates trial boots.
    #[serde(default)]
    pub feed: Option<FeedConfig>,
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// Cluster-aware reboots (lock, cordon, drain) through the Kubernetes API.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// A kubeconfig (k3s writes /etc/rancher/k3s/k3s.yaml), or "in-cluster"
    /// for the service account of the DaemonSet.
    #[serde(default = "default_kubeconfig")]
    pub kubeconfig: Kubeconfig,
    /// This node's name; default: $NODE_NAME, else the host name.
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default = "default_ns")]
    pub namespace: String,
    /// Nodes that may reboot for an update at once.
    #[serde(default = "one_u32")]
    pub concurrency: u32,
    #[serde(default = "default_lease")]
    pub lease_seconds: u64,
    #[serde(default = "default_drain")]
    pub drain_timeout_s: u64,
    #[serde(default = "default_drain")]
    pub lock_timeout_s: u64,
    #[serde(default = "default_drain")]
    pub ready_timeout_s: u64,
    /// Also gate trial boots on the API server's /readyz (server nodes).
    #[serde(default)]
    pub readyz: bool,
    /// Evict pods no controller recreates (`kubectl drain --force`).
    #[serde(default)]
    pub drain_unmanaged: bool,
    /// Evict pods with emptyDir volumes (`--delete-emptydir-data`).
    #[serde(default)]
    pub delete_emptydir_data: bool,
    /// Label selectors (`app=db,tier=x`): a matching pod on the node blocks
    /// the reboot until it is gone.
    #[serde(default)]
    pub blocking_pods: Vec<String>,
    /// Prometheus base URL: a firing alert (not ignored) defers the reboot,
    /// and so does a Prometheus that cannot be asked.
    #[serde(default)]
    pub alerts_url: Option<String>,
    /// Alert names that never defer a reboot.
    #[serde(default = "default_alerts_ignore")]
    pub alerts_ignore: Vec<String>,
    /// CA files for an https `alerts_url`.
    #[serde(default)]
    pub alerts_ca: Vec<PathBuf>,
}

/// kube-prometheus' always-firing heartbeat and its inhibitor helper.
fn default_alerts_ignore() -> Vec<String> {
    vec!["Watchdog".into(), "InfoInhibitor".into()]
}

/// Where the cluster credentials come from, parsed with the config: a
/// kubeconfig file, or the pod's service account (`"in-cluster"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kubeconfig {
    File(PathBuf),
    InCluster,
}

impl<'de> Deserialize<'de> for Kubeconfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "in-cluster" => Ok(Kubeconfig::InCluster),
            "" => Err(serde::de::Error::custom(
                "kubeconfig is empty (a path, or \"in-cluster\")",
            )),
            p => Ok(Kubeconfig::File(PathBuf::from(p))),
        }
    }
}

fn default_kubeconfig() -> Kubeconfig {
    Kubeconfig::File("/etc/rancher/k3s/k3s.yaml".into())
}
fn default_ns() -> String {
    "kube-system".into()
}
fn one_u32() -> u32 {
    1
}
fn default_lease() -> u64 {
    1800
}
fn default_drain() -> u64 {
    600
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// URL of the channel's index.json.
    pub url: String,
    pub channel: String,
    /// PEM files of the CAs trusted for the feed (a private CA is common).
    #[serde(default)]
    pub ca: Vec<PathBuf>,
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Plain http is refused unless this is set.
    #[serde(default)]
    pub allow_http: bool,
    #[serde(default = "default_poll")]
    pub poll_interval_s: u64,
    /// Up to this many seconds are added at random to each poll interval.
    #[serde(default = "default_jitter")]
    pub jitter_s: u64,
    /// "HH:MM-HH:MM" UTC; installs and reboots only inside it (checked
    /// when the config is read).
    #[serde(default)]
    pub maintenance_window: Option<crate::daemon::window::Window>,
    /// Download attempts per install (network faults), with back-off.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Seconds to wait for the next bytes before a connection counts as stalled.
    #[serde(default = "default_idle")]
    pub idle_timeout_s: u64,
    /// After the first `idle_timeout_s` of a transfer, abandon it when it
    /// averages fewer bytes per second than this (a slow-retrieval attack or
    /// a dying link; it is resumed later). 0: off.
    #[serde(default = "default_min_rate")]
    pub min_rate_bps: u64,
    /// Install exactly this version once the channel's signed index lists
    /// it (never a downgrade); default: the newest. The node label
    /// `ferry.k3os.io/target-version` overrides it.
    #[serde(default)]
    pub version: Option<semver::Version>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Local control API (root only, 0600).
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Hardware watchdog to pet while the daemon runs (e.g. /dev/watchdog).
    #[serde(default)]
    pub watchdog: Option<PathBuf>,
    /// Reboot into an installed update without waiting to be told.
    #[serde(default = "yes")]
    pub auto_reboot: bool,
    /// The watchdogs (hardware and systemd's) are fed only while the main
    /// loop showed a sign of life within this many seconds.
    #[serde(default = "default_stall")]
    pub stall_s: u64,
    /// Serve Prometheus metrics on this `ADDRESS:PORT` (off by default).
    #[serde(default)]
    pub metrics: Option<String>,
}

fn default_reboot_deadline() -> u64 {
    120
}

fn default_stall() -> u64 {
    1800
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            socket: default_socket(),
            watchdog: None,
            auto_reboot: true,
            stall_s: default_stall(),
            metrics: None,
        }
    }
}

fn default_poll() -> u64 {
    3600
}
fn default_jitter() -> u64 {
    300
}
fn default_attempts() -> u32 {
    6
}
fn default_idle() -> u64 {
    30
}
fn default_socket() -> PathBuf {
    "/run/ferry.sock".into()
}
fn yes() -> bool {
    true
}

fn default_state_dir() -> PathBuf {
    "/var/lib/ferry".into()
}
fn default_keyring() -> PathBuf {
    "/etc/ferry/keys".into()
}
fn one() -> usize {
    1
}
fn default_cmdline() -> PathBuf {
    "/proc/cmdline".into()
}
fn default_min_rate() -> u64 {
    1024
}
fn default_boot_id() -> PathBuf {
    "/proc/sys/kernel/random/boot_id".into()
}
/// What "reboot" means on this device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RebootMode {
    /// Sync and restart the machine.
    #[default]
    System,
    /// Only write `state_dir/reboot-requested` (tests, or an external agent reboots).
    Record,
}

impl Config {
    pub(crate) fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read config", path, e))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, Error> {
        let c: Config = toml::from_str(text).map_err(|e| Error::Config {
            path: path.into(),
            detail: e.to_string(),
        })?;
        if c.reboot_command.as_ref().is_some_and(|v| v.is_empty()) {
            return Err(Error::Config {
                path: path.into(),
                detail: "reboot_command is empty (leave it out to reboot directly)".into(),
            });
        }
        Ok(c)
    }
}

/// `ferry.slot=a|b` from a kernel command line.
pub fn slot_from_cmdline(text: &str) -> Option<crate::board::Slot> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("ferry.slot="))
        .and_then(crate::board::Slot::parse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::Slot;

    #[test]
    fn parses_with_defaults() {
        let c = Config::parse(
            "board = \"qemu-aarch64-virt\"\ndisk = \"/dev/vda\"\n",
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/ferry"));
        assert_eq!(c.threshold, 1);
        assert!(Config::parse("board = 1", Path::new("t")).is_err());
        assert!(
            Config::parse("board=\"x\"\ndisk=\"y\"\nreboot=\"maybe\"", Path::new("t")).is_err()
        );
        // a bad maintenance window is refused when the config is read, not later
        let e = Config::parse(
            "board=\"x\"\ndisk=\"y\"\n[feed]\nurl=\"https://f/i.json\"\nchannel=\"stable\"\nmaintenance_window=\"25:00-01:00\"",
            Path::new("t"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        let c = Config::parse(
            "board=\"x\"\ndisk=\"y\"\nreboot=\"record\"\n[feed]\nurl=\"https://f/i.json\"\nchannel=\"stable\"\nmaintenance_window=\"23:00-01:00\"",
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(c.reboot, RebootMode::Record);
        assert_eq!(
            c.feed.unwrap().maintenance_window.map(|w| (w.start, w.end)),
            Some((23 * 60, 60))
        );
        assert!(Config::parse("board=\"x\"\ndisk=\"y\"\ntypo=1", Path::new("t")).is_err());
    }

    #[test]
    fn cmdline_slot() {
        assert_eq!(
            slot_from_cmdline("console=ttyAMA0 ferry.slot=b quiet"),
            Some(Slot::B)
        );
        assert_eq!(slot_from_cmdline("ferry.slot=c"), None);
        assert_eq!(slot_from_cmdline("root=/dev/vda3"), None);
    }
}
