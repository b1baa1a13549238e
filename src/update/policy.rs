//! Install policy: is this (authentic) bundle acceptable for this device now?
//! Pure: what the bundle claims, the target slot's layout and the device
//! record in, a refusal reason out.
//!
//! Never does: files, clocks, threads, processes, network.

use super::machine::Release;
use super::persist::Device;
use crate::board::{Board, Slot};
use crate::bundle::{Manifest, Sha256Digest};
use crate::error::PolicyError;

/// What an authenticated bundle offers, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub release: Release,
    pub compatible: String,
    pub min_installed_version: Option<semver::Version>,
    /// (payload name, target, installed size)
    pub payloads: Vec<(String, String, u64)>,
}

impl Candidate {
    pub(crate) fn of(m: &Manifest, digest: Sha256Digest) -> Candidate {
        Candidate {
            release: Release {
                version: m.version.clone(),
                digest,
            },
            compatible: m.compatible.clone(),
            min_installed_version: m.min_installed_version.clone(),
            payloads: m
                .payloads
                .iter()
                .map(|p| (p.name.clone(), p.target.clone(), p.installed_size))
                .collect(),
        }
    }
}

/// The target slot as the board defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotLayout {
    pub compatible: String,
    /// (target, partition, capacity in bytes)
    pub targets: Vec<(String, String, u64)>,
}

impl SlotLayout {
    pub(crate) fn of(board: &Board, slot: Slot) -> SlotLayout {
        SlotLayout {
            compatible: board.compatible.clone(),
            targets: board
                .slot_targets(slot)
                .filter_map(|t| {
                    board
                        .slot_partition(slot, t)
                        .map(|p| (t.to_string(), p.name.clone(), p.size_mib << 20))
                })
                .collect(),
        }
    }
}

/// Refuse a bundle that is authentic but not for this device now: another
/// board, below the rollback floor, too new for what runs, a release that
/// already failed here, or one that does not fill every partition of the
/// slot (a slot must never hold two releases).
pub(crate) fn check(
    c: &Candidate,
    layout: &SlotLayout,
    dev: &Device,
    booted: Slot,
) -> Result<(), PolicyError> {
    if c.compatible != layout.compatible {
        return Err(PolicyError::WrongBoard {
            bundle: c.compatible.clone(),
            device: layout.compatible.clone(),
        });
    }
    if let Some(f) = &dev.floor {
        if &c.release.version < f {
            return Err(PolicyError::Downgrade {
                bundle: c.release.version.to_string(),
                floor: f.to_string(),
            });
        }
    }
    let installed = dev.slots[booted.index()]
        .release
        .as_ref()
        .map(|r| &r.version);
    if let (Some(req), Some(cur)) = (&c.min_installed_version, installed) {
        if cur < req {
            return Err(PolicyError::TooOld {
                installed: cur.to_string(),
                required: req.to_string(),
            });
        }
    }
    if dev.failed.contains(&c.release.digest) {
        return Err(PolicyError::FailedBefore {
            version: c.release.version.to_string(),
        });
    }
    for (name, target, size) in &c.payloads {
        let (_, part, capacity) = layout
            .targets
            .iter()
            .find(|(t, _, _)| t == target)
            .ok_or_else(|| PolicyError::MissingTarget {
                target: target.clone(),
            })?;
        if size > capacity {
            return Err(PolicyError::TooLarge {
                payload: name.clone(),
                size: *size,
                partition: part.clone(),
                capacity: *capacity,
            });
        }
    }
    let missing: Vec<String> = layout
        .targets
        .iter()
        .filter(|(t, _, _)| !c.payloads.iter().any(|(_, pt, _)| pt == t))
        .map(|(t, _, _)| t.clone())
        .collect();
    if !missing.is_empty() && !super::mutant::active(super::mutant::Mutant::PartialBundle) {
        return Err(PolicyError::Incomplete { missing });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::machine::SlotStatus;

    fn layout() -> SlotLayout {
        SlotLayout {
            compatible: "qemu".into(),
            targets: vec![
                ("kernel".into(), "kernel_b".into(), 64 << 20),
                ("rootfs".into(), "rootfs_b".into(), 96 << 20),
            ],
        }
    }
    fn cand(v: &str, targets: &[&str]) -> Candidate {
        Candidate {
            release: Release {
                version: semver::Version::parse(v).unwrap(),
                digest: Sha256Digest::of(v.as_bytes()),
            },
            compatible: "qemu".into(),
            min_installed_version: None,
            payloads: targets
                .iter()
                .map(|t| (t.to_string(), t.to_string(), 1 << 20))
                .collect(),
        }
    }

    #[test]
    fn refusals_name_the_cause() {
        let mut dev = Device::first_boot(Slot::A);
        let all = ["kernel", "rootfs"];
        assert_eq!(
            check(&cand("2.0.0", &all), &layout(), &dev, Slot::A),
            Ok(())
        );
        assert_eq!(
            check(&cand("2.0.0", &["kernel"]), &layout(), &dev, Slot::A),
            Err(PolicyError::Incomplete {
                missing: vec!["rootfs".into()]
            })
        );
        assert!(matches!(
            check(
                &cand("2.0.0", &["kernel", "rootfs", "k3s"]),
                &layout(),
                &dev,
                Slot::A
            ),
            Err(PolicyError::MissingTarget { .. })
        ));
        dev.floor = Some(semver::Version::new(3, 0, 0));
        assert!(matches!(
            check(&cand("2.0.0", &all), &layout(), &dev, Slot::A),
            Err(PolicyError::Downgrade { .. })
        ));
        dev.floor = None;
        dev.failed.push(cand("2.0.0", &all).release.digest);
        assert!(matches!(
            check(&cand("2.0.0", &all), &layout(), &dev, Slot::A),
            Err(PolicyError::FailedBefore { .. })
        ));
        dev.slots[0].status = SlotStatus::Good;
        let mut other = cand("2.0.0", &all);
        other.compatible = "pi".into();
        assert!(matches!(
            check(&other, &layout(), &dev, Slot::A),
            Err(PolicyError::WrongBoard { .. })
        ));
    }
}
