//! The persisted device record: the machine state (with the resume point of
//! an install inside it), each slot's status and release, the anti-rollback
//! floor, the releases that failed here, the highest feed serial accepted per
//! channel, the last outcome. One record, one writer (`update::engine`).
//!
//! It is kept as two copies, each a JSON envelope with a generation counter
//! and the SHA-256 of its body: the writer always overwrites the older copy,
//! the reader takes the newest intact one, so a torn or corrupt copy never
//! loses the floor. Encoding, decoding and the choice between copies are pure;
//! the file I/O is in `io::store`.
//!
//! Never does: files, clocks, threads, processes, network.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::machine::{Action, Outcome, Progress, Release, SlotStatus, State};
use crate::board::Slot;
use crate::bundle::Sha256Digest;

pub(crate) const RECORD_VERSION: u32 = 2;
/// Releases remembered as failed on this device.
pub(crate) const MAX_FAILED: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlotInfo {
    pub status: SlotStatus,
    pub release: Option<Release>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Device {
    pub state: State,
    pub slots: [SlotInfo; 2],
    pub floor: Option<semver::Version>,
    pub last: Option<Outcome>,
    /// The release the last outcome concerns (also for failures).
    pub last_version: Option<semver::Version>,
    /// Kernel boot id at the last `Booted` event (one event per boot).
    pub boot_id: Option<String>,
    /// Manifest digests of releases that failed here (health, boot), oldest first.
    pub failed: Vec<Sha256Digest>,
    /// Highest signed feed serial accepted, per channel (replay protection).
    pub feeds: BTreeMap<String, u64>,
}

impl Default for Device {
    fn default() -> Self {
        let empty = SlotInfo {
            status: SlotStatus::Empty,
            release: None,
        };
        Device {
            state: State::Idle,
            slots: [empty.clone(), empty],
            floor: None,
            last: None,
            last_version: None,
            boot_id: None,
            failed: Vec::new(),
            feeds: BTreeMap::new(),
        }
    }
}

impl Device {
    /// A device without a record: the slot it booted is the good one.
    pub fn first_boot(booted: Slot) -> Device {
        let mut d = Device::default();
        d.slots[booted.index()].status = SlotStatus::Good;
        d
    }

    /// Move to `next` after `actions`: keep the record (slot status, floor,
    /// outcome and the release it concerns, failed releases). The bootloader
    /// and reboot actions are the edge's to carry out, before this.
    pub fn advance(&mut self, next: State, actions: &[Action]) {
        let release = self.state.release().cloned();
        // a trial that failed its health gate, or a slot the bootloader gave
        // up on: the release itself failed here (a cancelled install did not)
        let tried = matches!(self.state, State::Trial { .. });
        self.record(actions);
        for a in actions {
            if let Action::Report(o) = a {
                self.last_version = release.as_ref().map(|r| r.version.clone());
                let failed = match o {
                    Outcome::RolledBack { .. } => tried,
                    Outcome::BootFailed { .. } => true,
                    _ => false,
                };
                if let (true, Some(r)) = (failed, &release) {
                    if !self.failed.contains(&r.digest) {
                        self.failed.push(r.digest);
                    }
                    if self.failed.len() > MAX_FAILED {
                        self.failed.remove(0);
                    }
                }
            }
        }
        self.state = next;
    }

    /// Apply the record-keeping actions (slot status, floor, report).
    fn record(&mut self, actions: &[Action]) {
        for a in actions {
            match a {
                Action::SetSlot {
                    slot,
                    status,
                    release,
                } => {
                    let s = &mut self.slots[slot.index()];
                    s.status = *status;
                    if release.is_some() || *status == SlotStatus::Bad {
                        s.release = release.clone().or(s.release.take());
                    }
                }
                Action::RaiseFloor(v) => {
                    if self.floor.as_ref().is_none_or(|f| v > f) {
                        self.floor = Some(v.clone());
                    }
                }
                Action::Report(o) => self.last = Some(o.clone()),
                Action::InvalidateBoot(_)
                | Action::ArmTrial(_)
                | Action::CommitBoot(_)
                | Action::Reboot => {}
            }
        }
    }

    /// Raise the feed serial seen on `channel` (never lowers it).
    pub(crate) fn accept_feed(&mut self, channel: &str, serial: u64) {
        let e = self.feeds.entry(channel.to_string()).or_insert(serial);
        *e = (*e).max(serial);
    }

    /// One copy of the record: an envelope with `generation` and a checksum.
    pub fn encode_copy(&self, generation: u64) -> Vec<u8> {
        // plain data with string keys: serialisation cannot fail
        let body = serde_json::to_value(Record::from(self)).unwrap_or_default();
        let sum =
            Sha256Digest(Sha256::digest(serde_json::to_vec(&body).unwrap_or_default()).into());
        let env = serde_json::json!({
            "format": RECORD_VERSION,
            "generation": generation,
            "sha256": sum.to_string(),
            "record": body,
        });
        let mut v = serde_json::to_vec_pretty(&env).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Read one copy: its generation and the record. A format-1 record (one
    /// plain copy, ferry 0.1) reads as generation 0; its resume point is
    /// dropped, since it was not bound to a release.
    pub fn decode_copy(b: &[u8]) -> Result<(u64, Device), String> {
        let v: serde_json::Value = serde_json::from_slice(b).map_err(|e| e.to_string())?;
        match v.get("format").and_then(|f| f.as_u64()) {
            Some(1) => {
                let r: Record = serde_json::from_value(v).map_err(|e| e.to_string())?;
                Ok((0, r.try_into()?))
            }
            Some(2) => {
                let gen = v["generation"]
                    .as_u64()
                    .ok_or("record copy has no generation")?;
                let body = &v["record"];
                let sum = Sha256Digest(
                    Sha256::digest(serde_json::to_vec(body).unwrap_or_default()).into(),
                );
                if v["sha256"].as_str() != Some(sum.to_string().as_str()) {
                    return Err("record copy checksum does not match (torn or corrupt)".into());
                }
                let r: Record = serde_json::from_value(body.clone()).map_err(|e| e.to_string())?;
                Ok((gen, r.try_into()?))
            }
            Some(n) => Err(format!("state record version {n} is not supported")),
            None => Err("not a ferry state record".into()),
        }
    }
}

/// What reading both copies found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub device: Device,
    pub generation: u64,
    /// Copies that were present but unreadable (repaired by the next write).
    pub damaged: Vec<(usize, String)>,
}

/// Choose between the copies (`None` = absent): the newest intact one.
/// `Ok(None)` when there is no copy at all; an error naming both faults
/// when copies exist and none is intact.
pub fn pick(copies: [Option<&[u8]>; 2]) -> Result<Option<Loaded>, String> {
    let mut best: Option<(u64, Device)> = None;
    let mut damaged = Vec::new();
    for (i, c) in copies.iter().enumerate() {
        let Some(b) = c else { continue };
        match Device::decode_copy(b) {
            Ok((g, d)) => {
                if best.as_ref().is_none_or(|(bg, _)| g > *bg) {
                    best = Some((g, d));
                }
            }
            Err(e) => damaged.push((i, e)),
        }
    }
    match best {
        Some((generation, device)) => Ok(Some(Loaded {
            device,
            generation,
            damaged,
        })),
        None if damaged.is_empty() => Ok(None),
        None => Err(damaged
            .iter()
            .map(|(i, e)| format!("copy {i}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

/// The copy a write of `generation` goes to first: the older one.
pub(crate) fn copy_for(generation: u64) -> usize {
    (generation % 2) as usize
}

/// The copies a save writes, in order: both, the older one first, so a
/// crash leaves the newest or the previous record in at least one copy and
/// a later corruption of one copy loses nothing.
pub fn write_order(generation: u64) -> Vec<usize> {
    if super::mutant::active(super::mutant::Mutant::SingleRecord) {
        return vec![0];
    }
    let first = copy_for(generation);
    vec![first, 1 - first]
}

#[derive(Serialize, Deserialize)]
struct RelRec {
    version: semver::Version,
    digest: Sha256Digest,
}

#[derive(Serialize, Deserialize)]
struct SlotRec {
    status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    release: Option<RelRec>,
}

#[derive(Serialize, Deserialize)]
struct StateRec {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slot: Option<Slot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    release: Option<RelRec>,
    /// Installing: the resume point (payload, chunk) of this release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    done: Option<(usize, usize)>,
}

#[derive(Serialize, Deserialize)]
struct OutcomeRec {
    kind: String,
    slot: Slot,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<semver::Version>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Record {
    format: u32,
    state: StateRec,
    slots: [SlotRec; 2],
    #[serde(default)]
    floor: Option<semver::Version>,
    #[serde(default)]
    last: Option<OutcomeRec>,
    #[serde(default)]
    boot_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    failed: Vec<Sha256Digest>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    feeds: BTreeMap<String, u64>,
}

fn rel_rec(r: &Release) -> RelRec {
    RelRec {
        version: r.version.clone(),
        digest: r.digest,
    }
}
fn rel(r: RelRec) -> Release {
    Release {
        version: r.version,
        digest: r.digest,
    }
}

pub(crate) fn outcome_parts(
    o: &Outcome,
) -> (&'static str, Slot, Option<&semver::Version>, Option<&str>) {
    match o {
        Outcome::Committed { slot, version } => ("committed", *slot, Some(version), None),
        Outcome::InstallFailed { slot, reason } => ("install-failed", *slot, None, Some(reason)),
        Outcome::RolledBack { slot, reason } => ("rolled-back", *slot, None, Some(reason)),
        Outcome::BootFailed { slot } => ("boot-failed", *slot, None, None),
        Outcome::Interrupted { slot } => ("interrupted", *slot, None, None),
    }
}

impl From<&Device> for Record {
    fn from(d: &Device) -> Record {
        let state = match &d.state {
            State::Idle => StateRec {
                name: "idle".into(),
                slot: None,
                release: None,
                done: None,
            },
            State::RebootPending { next } => StateRec {
                name: d.state.name().into(),
                slot: Some(*next),
                release: None,
                done: None,
            },
            State::Installing {
                slot,
                release,
                done,
            } => StateRec {
                name: d.state.name().into(),
                slot: Some(*slot),
                release: Some(rel_rec(release)),
                done: Some((done.payload, done.chunk)),
            },
            State::Installed { slot, release } | State::Trial { slot, release } => StateRec {
                name: d.state.name().into(),
                slot: Some(*slot),
                release: Some(rel_rec(release)),
                done: None,
            },
        };
        let slot = |i: usize| SlotRec {
            status: d.slots[i].status.as_str().into(),
            release: d.slots[i].release.as_ref().map(rel_rec),
        };
        Record {
            format: RECORD_VERSION,
            state,
            slots: [slot(0), slot(1)],
            floor: d.floor.clone(),
            last: d.last.as_ref().map(|o| {
                let (kind, slot, version, reason) = outcome_parts(o);
                OutcomeRec {
                    kind: kind.into(),
                    slot,
                    version: version.or(d.last_version.as_ref()).cloned(),
                    reason: reason.map(String::from),
                }
            }),
            boot_id: d.boot_id.clone(),
            failed: d.failed.clone(),
            feeds: d.feeds.clone(),
        }
    }
}

impl TryFrom<Record> for Device {
    type Error = String;
    fn try_from(r: Record) -> Result<Device, String> {
        // format 1 kept no resume point bound to a release: start over
        let done = |d: Option<(usize, usize)>| match (r.format, d) {
            (2, Some((payload, chunk))) => Progress { payload, chunk },
            _ => Progress::default(),
        };
        let state = match (r.state.name.as_str(), r.state.slot, r.state.release) {
            ("idle", _, _) => State::Idle,
            ("reboot-pending", Some(next), _) => State::RebootPending { next },
            ("installing", Some(slot), Some(re)) => State::Installing {
                slot,
                release: rel(re),
                done: done(r.state.done),
            },
            ("installed", Some(slot), Some(re)) => State::Installed {
                slot,
                release: rel(re),
            },
            ("trial", Some(slot), Some(re)) => State::Trial {
                slot,
                release: rel(re),
            },
            (n, _, _) => return Err(format!("state {n:?} is unknown or incomplete")),
        };
        let [a, b] = r.slots;
        let slot = |s: SlotRec| -> Result<SlotInfo, String> {
            Ok(SlotInfo {
                status: SlotStatus::parse(&s.status)
                    .ok_or_else(|| format!("slot status {:?} is unknown", s.status))?,
                release: s.release.map(rel),
            })
        };
        let last_version = r.last.as_ref().and_then(|o| o.version.clone());
        let last = match r.last {
            None => None,
            Some(o) => Some(match o.kind.as_str() {
                "committed" => Outcome::Committed {
                    slot: o.slot,
                    version: o.version.ok_or("committed outcome without version")?,
                },
                "install-failed" => Outcome::InstallFailed {
                    slot: o.slot,
                    reason: o.reason.unwrap_or_default(),
                },
                "rolled-back" => Outcome::RolledBack {
                    slot: o.slot,
                    reason: o.reason.unwrap_or_default(),
                },
                "boot-failed" => Outcome::BootFailed { slot: o.slot },
                "interrupted" => Outcome::Interrupted { slot: o.slot },
                k => return Err(format!("outcome {k:?} is unknown")),
            }),
        };
        Ok(Device {
            state,
            slots: [slot(a)?, slot(b)?],
            floor: r.floor,
            last,
            last_version,
            boot_id: r.boot_id,
            failed: r.failed,
            feeds: r.feeds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release() -> Release {
        Release {
            version: semver::Version::new(2, 0, 0),
            digest: Sha256Digest::of(b"m"),
        }
    }

    #[test]
    fn round_trips_every_state() {
        let release = release();
        for state in [
            State::Idle,
            State::Installing {
                slot: Slot::B,
                release: release.clone(),
                done: Progress {
                    payload: 1,
                    chunk: 7,
                },
            },
            State::Installed {
                slot: Slot::A,
                release: release.clone(),
            },
            State::Trial {
                slot: Slot::B,
                release: release.clone(),
            },
            State::RebootPending { next: Slot::A },
        ] {
            let mut d = Device {
                state: State::Trial {
                    slot: Slot::B,
                    release: release.clone(),
                },
                ..Default::default()
            };
            d.accept_feed("stable", 7);
            d.advance(
                state,
                &[
                    Action::SetSlot {
                        slot: Slot::A,
                        status: SlotStatus::Good,
                        release: Some(release.clone()),
                    },
                    Action::RaiseFloor(release.version.clone()),
                    Action::Report(Outcome::RolledBack {
                        slot: Slot::B,
                        reason: "x".into(),
                    }),
                ],
            );
            assert_eq!(d.failed, vec![release.digest]);
            let (g, back) = Device::decode_copy(&d.encode_copy(9)).unwrap();
            assert_eq!((g, back), (9, d));
        }
        assert!(Device::decode_copy(b"{\"format\":3}").is_err());
        assert!(Device::decode_copy(b"garbage").is_err());
    }

    #[test]
    fn newest_intact_copy_wins_and_damage_is_named() {
        let mut d = Device::first_boot(Slot::A);
        let old = d.encode_copy(4);
        d.floor = Some(semver::Version::new(3, 0, 0));
        let new = d.encode_copy(5);
        let got = pick([Some(&old), Some(&new)]).unwrap().unwrap();
        assert_eq!(
            (got.generation, got.device.floor.clone()),
            (5, d.floor.clone())
        );
        // one flipped byte in the newer copy: the older one is used, and named
        let mut torn = new.clone();
        let i = torn.len() / 2;
        torn[i] ^= 0x20;
        let got = pick([Some(&old), Some(&torn)]).unwrap().unwrap();
        assert_eq!(got.generation, 4);
        assert_eq!(got.damaged.len(), 1);
        // a truncated copy likewise
        let got = pick([Some(&new[..new.len() / 3]), Some(&old)])
            .unwrap()
            .unwrap();
        assert_eq!(got.generation, 4);
        assert!(pick([Some(&torn), Some(b"x")]).is_err());
        assert_eq!(pick([None, None]).unwrap(), None);
        assert_ne!(copy_for(4), copy_for(5));
    }

    #[test]
    fn format_1_records_migrate_without_their_resume_point() {
        let v1 = br#"{"format":1,"state":{"name":"installing","slot":"b","release":{"version":"1.1.0","digest":"0000000000000000000000000000000000000000000000000000000000000000"}},"slots":[{"status":"good"},{"status":"installing"}],"floor":"1.0.0","resume":[1,32]}"#;
        let (g, d) = Device::decode_copy(v1).unwrap();
        assert_eq!(g, 0);
        assert!(matches!(d.state, State::Installing { done, .. } if done == Progress::default()));
        assert_eq!(d.floor, Some(semver::Version::new(1, 0, 0)));
    }
}
