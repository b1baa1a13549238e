//! The device configuration file (`/etc/ferry/ferry.toml`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::Error;

pub const DEFAULT_PATH: &str = "/etc/ferry/ferry.toml";

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
    #[serde(default = "default_reboot")]
    pub reboot: String,
    #[serde(default)]
    pub health: crate::health::HealthConfig,
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
fn default_boot_id() -> PathBuf {
    "/proc/sys/kernel/random/boot_id".into()
}
fn default_reboot() -> String {
    "system".into()
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read config", path, e))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, Error> {
        let c: Config = toml::from_str(text).map_err(|e| Error::Config {
            path: path.into(),
            detail: e.to_string(),
        })?;
        if c.reboot != "system" && c.reboot != "record" {
            return Err(Error::Config {
                path: path.into(),
                detail: format!("reboot = {:?}: expected system or record", c.reboot),
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
