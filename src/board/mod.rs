//! Board definitions (`board/*.toml`): partition layout, which partition each
//! payload target of each slot goes to, and the boot-selection backend with
//! its parameters. Parsing is pure; the shipped board files are embedded in
//! the binary so a device or a fresh host needs nothing else.

pub mod bootenv;
pub mod gpt;
pub mod grubenv;
pub mod rpi;
pub mod script;
pub mod ubootenv;

use std::fmt;

use serde::Deserialize;

use crate::error::Error;

/// Files that come with a board (name, text): its boot script.
pub(crate) type BoardFiles = Vec<(String, String)>;

/// One of the two slots.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
    pub fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }
    /// Upper-case letter as bootloader variables use it.
    pub(crate) fn letter(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Slot> {
        match s {
            "a" | "A" => Some(Slot::A),
            "b" | "B" => Some(Slot::B),
            _ => None,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Slot::A => "a",
            Slot::B => "b",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartKind {
    /// Bootloader files and state (not A/B).
    Boot,
    /// Belongs to one slot and receives one payload target.
    Slot,
    /// Persistent data, never touched by updates.
    Data,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fs {
    Fat,
    Ext4,
    Raw,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    pub name: String,
    pub size_mib: u64,
    pub kind: PartKind,
    #[serde(default)]
    pub slot: Option<Slot>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default = "default_fs")]
    pub fs: Fs,
}

fn default_fs() -> Fs {
    Fs::Raw
}

/// Where a bootloader environment lives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum EnvLocation {
    /// A file on a FAT partition (`uboot.env`, `grubenv`, `autoboot.txt`).
    File {
        partition: String,
        file: String,
        #[serde(default)]
        size: usize,
    },
    /// Raw bytes at disk offsets, optionally a redundant second copy.
    Raw {
        offset: u64,
        size: usize,
        #[serde(default)]
        redundant_offset: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum BackendKind {
    #[serde(rename = "uboot")]
    UBoot,
    #[serde(rename = "rpi-tryboot")]
    RpiTryboot,
    #[serde(rename = "grub")]
    Grub,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bootloader {
    pub backend: BackendKind,
    pub env: EnvLocation,
    /// Trial boots before the bootloader falls back (U-Boot, GRUB).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Boot script source under `board/<name>/`, compiled to `boot.scr` by `image build`.
    #[serde(default)]
    pub script: Option<String>,
}

fn default_attempts() -> u32 {
    3
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    pub name: String,
    pub compatible: String,
    #[serde(default)]
    pub description: String,
    pub disk_size_mib: u64,
    #[serde(rename = "partition")]
    pub partitions: Vec<Partition>,
    pub bootloader: Bootloader,
    /// Extra files for the boot partition, name -> contents (e.g. config.txt).
    #[serde(default)]
    pub boot_files: std::collections::BTreeMap<String, String>,
}

/// A shipped board: name, board file, extra files (name, contents).
pub(crate) type BuiltinBoard = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// Board files shipped with ferry, embedded at build time.
pub(crate) const BUILTIN: &[BuiltinBoard] = &[
    (
        "qemu-aarch64-virt",
        include_str!("../../board/qemu-aarch64-virt.toml"),
        &[(
            "boot.cmd",
            include_str!("../../board/qemu-aarch64-virt/boot.cmd"),
        )],
    ),
    (
        "raspberry-pi-4",
        include_str!("../../board/raspberry-pi-4.toml"),
        &[(
            "boot.cmd",
            include_str!("../../board/raspberry-pi-4/boot.cmd"),
        )],
    ),
    (
        "raspberry-pi-4-tryboot",
        include_str!("../../board/raspberry-pi-4-tryboot.toml"),
        &[],
    ),
    (
        "generic-uboot-emmc",
        include_str!("../../board/generic-uboot-emmc.toml"),
        &[(
            "boot.cmd",
            include_str!("../../board/generic-uboot-emmc/boot.cmd"),
        )],
    ),
    ("x86-grub", include_str!("../../board/x86-grub.toml"), &[]),
];

/// First partition LBA (1 MiB alignment).
pub(crate) const FIRST_MIB: u64 = 1;

fn cfg_err(path: &str, detail: impl Into<String>) -> Error {
    Error::Config {
        path: path.into(),
        detail: detail.into(),
    }
}

impl Board {
    pub fn parse(text: &str, origin: &str) -> Result<Board, Error> {
        let b: Board = toml::from_str(text).map_err(|e| cfg_err(origin, e.to_string()))?;
        b.validate(origin)?;
        Ok(b)
    }

    /// A board shipped in the binary, by name, with its files (boot script).
    pub(crate) fn builtin(name: &str) -> Option<Result<(Board, BoardFiles), Error>> {
        let (_, text, files) = BUILTIN.iter().find(|(n, _, _)| *n == name)?;
        let files = files
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(Board::parse(text, name).map(|b| (b, files)))
    }

    fn validate(&self, origin: &str) -> Result<(), Error> {
        use crate::bundle::manifest::safe_name;
        if !safe_name(&self.name) || !safe_name(&self.compatible) {
            return Err(cfg_err(
                origin,
                "board name and compatible must be safe names",
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for p in &self.partitions {
            if !safe_name(&p.name) || p.name.len() > 36 {
                return Err(cfg_err(
                    origin,
                    format!("partition name {:?} is not safe", p.name),
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err(cfg_err(origin, format!("duplicate partition {:?}", p.name)));
            }
            if p.size_mib == 0 {
                return Err(cfg_err(origin, format!("partition {} has size 0", p.name)));
            }
            match (p.kind, &p.slot, &p.target) {
                (PartKind::Slot, Some(_), Some(t)) if safe_name(t) => {}
                (PartKind::Slot, _, _) => {
                    return Err(cfg_err(
                        origin,
                        format!("slot partition {} needs slot and a safe target", p.name),
                    ))
                }
                (_, None, None) => {}
                _ => {
                    return Err(cfg_err(
                        origin,
                        format!(
                            "partition {}: only slot partitions have slot/target",
                            p.name
                        ),
                    ))
                }
            }
        }
        for slot in [Slot::A, Slot::B] {
            let mut t: Vec<&str> = self.slot_targets(slot).collect();
            let n = t.len();
            t.dedup();
            if n == 0 || t.len() != n {
                return Err(cfg_err(
                    origin,
                    format!("slot {slot} needs at least one partition and unique targets"),
                ));
            }
        }
        let mut ta: Vec<&str> = self.slot_targets(Slot::A).collect();
        let mut tb: Vec<&str> = self.slot_targets(Slot::B).collect();
        ta.sort();
        tb.sort();
        if ta != tb {
            return Err(cfg_err(origin, "slots a and b must have the same targets"));
        }
        let used: u64 = self.partitions.iter().map(|p| p.size_mib).sum::<u64>() + FIRST_MIB + 1;
        if used > self.disk_size_mib {
            return Err(cfg_err(
                origin,
                format!(
                    "partitions need {used} MiB, disk_size_mib is {}",
                    self.disk_size_mib
                ),
            ));
        }
        if let EnvLocation::File { partition, .. } = &self.bootloader.env {
            if !self
                .partitions
                .iter()
                .any(|p| &p.name == partition && p.fs == Fs::Fat)
            {
                return Err(cfg_err(
                    origin,
                    format!("bootloader env partition {partition:?} is not a FAT partition"),
                ));
            }
        }
        if self.bootloader.attempts == 0 || self.bootloader.attempts > 9 {
            return Err(cfg_err(origin, "bootloader attempts must be 1..=9"));
        }
        Ok(())
    }

    pub(crate) fn slot_targets(&self, slot: Slot) -> impl Iterator<Item = &str> {
        self.partitions
            .iter()
            .filter(move |p| p.kind == PartKind::Slot && p.slot == Some(slot))
            .filter_map(|p| p.target.as_deref())
    }

    /// The partition receiving `target` in `slot`.
    pub(crate) fn slot_partition(&self, slot: Slot, target: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| {
            p.kind == PartKind::Slot && p.slot == Some(slot) && p.target.as_deref() == Some(target)
        })
    }

    /// 1-based partition number of a partition (as in /dev/vdaN).
    pub(crate) fn part_number(&self, name: &str) -> Option<usize> {
        self.partitions
            .iter()
            .position(|p| p.name == name)
            .map(|i| i + 1)
    }

    /// The layout as GPT entries, 1 MiB aligned, in file order.
    pub fn layout(&self) -> Vec<gpt::Entry> {
        let mut lba = FIRST_MIB * 2048;
        self.partitions
            .iter()
            .map(|p| {
                let n = p.size_mib * 2048;
                let e = gpt::Entry {
                    name: p.name.clone(),
                    type_guid: match (p.kind, p.fs) {
                        (PartKind::Boot, Fs::Fat) => gpt::TYPE_BASIC_DATA,
                        (_, Fs::Fat) => gpt::TYPE_BASIC_DATA,
                        _ => gpt::TYPE_LINUX,
                    },
                    unique_guid: gpt::derived_guid(&format!("{}/{}", self.name, p.name)),
                    first_lba: lba,
                    last_lba: lba + n - 1,
                    attributes: if p.kind == PartKind::Boot {
                        gpt::ATTR_LEGACY_BOOT
                    } else {
                        0
                    },
                };
                lba += n;
                e
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_boards_parse() {
        for (name, _, _) in BUILTIN {
            let (b, _) = crate::io::boardfile::load(name).unwrap();
            assert_eq!(&b.name, name);
            let layout = b.layout();
            assert_eq!(layout.len(), b.partitions.len());
            assert!(
                layout.last().unwrap().last_lba < b.disk_size_mib * 2048 - gpt::reserved_tail()
            );
            for s in [Slot::A, Slot::B] {
                assert!(
                    b.slot_partition(s, "rootfs").is_some(),
                    "{name} has no rootfs in {s}"
                );
            }
        }
    }

    #[test]
    fn invalid_boards_are_refused() {
        let (_, text, _) = BUILTIN[0];
        let bad = [
            text.replace("name = \"rootfs_b\"", "name = \"rootfs_a\""),
            text.replace("target = \"k3s\"\n", "target = \"../k3s\"\n"),
            text.replace("disk_size_mib = ", "disk_size_mib = 1 #"),
            text.replace("slot = \"b\"", "slot = \"a\""),
            format!("{text}\nunknown_key = 1\n"),
        ];
        for t in bad {
            assert!(Board::parse(&t, "test").is_err(), "accepted:\n{t}");
        }
    }
}
