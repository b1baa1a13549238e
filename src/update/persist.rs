//! The persisted device state: a versioned record of the machine state, each
//! slot's status and release, the anti-rollback floor, the last outcome and
//! the resume point of an interrupted install. Its own serde types, separate
//! from the core ones; encoding and decoding are pure (the file I/O is in
//! `io::store`).

use serde::{Deserialize, Serialize};

use super::machine::{Action, Outcome, Release, SlotStatus, State};
use crate::board::Slot;
use crate::bundle::Sha256Digest;

pub const RECORD_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    pub status: SlotStatus,
    pub release: Option<Release>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub state: State,
    pub slots: [SlotInfo; 2],
    pub floor: Option<semver::Version>,
    pub last: Option<Outcome>,
    /// The release the last outcome concerns (also for failures).
    pub last_version: Option<semver::Version>,
    /// Kernel boot id at the last `Booted` event (one event per boot).
    pub boot_id: Option<String>,
    /// Resume point of an install: (payload, chunk) fully written and synced.
    pub resume: Option<(usize, usize)>,
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
            resume: None,
        }
    }
}

impl Device {
    /// Move to `next` after `actions`: keep the record (slot status, floor,
    /// outcome and the release it concerns, resume point). The bootloader and
    /// reboot actions are the edge's to carry out, before this.
    pub fn advance(&mut self, next: State, actions: &[Action]) {
        let release = match &self.state {
            State::Installing { release, .. }
            | State::Installed { release, .. }
            | State::Trial { release, .. } => Some(release.version.clone()),
            State::Idle => None,
        };
        self.record(actions);
        if actions.iter().any(|a| matches!(a, Action::Report(_))) {
            self.last_version = release;
        }
        if !matches!(next, State::Installing { .. }) {
            self.resume = None;
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

    pub fn encode(&self) -> Vec<u8> {
        let r = Record::from(self);
        // plain data with string keys: serialisation cannot fail
        let mut v = serde_json::to_vec_pretty(&r).unwrap_or_default();
        v.push(b'\n');
        v
    }

    pub fn decode(b: &[u8]) -> Result<Device, String> {
        let r: Record = serde_json::from_slice(b).map_err(|e| e.to_string())?;
        if r.format != RECORD_VERSION {
            return Err(format!(
                "state record version {} is not supported",
                r.format
            ));
        }
        r.try_into()
    }
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
    #[serde(default)]
    resume: Option<(usize, usize)>,
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

pub fn outcome_parts(o: &Outcome) -> (&'static str, Slot, Option<&semver::Version>, Option<&str>) {
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
            },
            State::Installing { slot, release }
            | State::Installed { slot, release }
            | State::Trial { slot, release } => StateRec {
                name: d.state.name().into(),
                slot: Some(*slot),
                release: Some(rel_rec(release)),
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
            resume: d.resume,
        }
    }
}

impl TryFrom<Record> for Device {
    type Error = String;
    fn try_from(r: Record) -> Result<Device, String> {
        let state = match (r.state.name.as_str(), r.state.slot, r.state.release) {
            ("idle", _, _) => State::Idle,
            ("installing", Some(slot), Some(re)) => State::Installing {
                slot,
                release: rel(re),
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
            resume: r.resume,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_state() {
        let release = Release {
            version: semver::Version::new(2, 0, 0),
            digest: Sha256Digest::of(b"m"),
        };
        for state in [
            State::Idle,
            State::Installing {
                slot: Slot::B,
                release: release.clone(),
            },
            State::Installed {
                slot: Slot::A,
                release: release.clone(),
            },
            State::Trial {
                slot: Slot::B,
                release: release.clone(),
            },
        ] {
            let mut d = Device {
                state,
                resume: Some((1, 7)),
                ..Default::default()
            };
            let state = d.state.clone();
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
            assert_eq!(Device::decode(&d.encode()).unwrap(), d);
        }
        assert!(Device::decode(b"{\"format\":2}").is_err());
        assert!(Device::decode(b"garbage").is_err());
    }
}
