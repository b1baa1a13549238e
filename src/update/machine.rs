//! The update state machine. Sans-IO and typed: `step(state, event)` returns
//! the next state and the actions the edge must carry out, in order. Every
//! legal (state, event) pair is listed; anything else is an invalid
//! transition. The edge (`update::engine`) carries out the bootloader actions,
//! then persists the new record, before acting on it.
//!
//! Never does: files, clocks, threads, processes, network.
//!
//! ```text
//! Idle --InstallStarted--> Installing{done} --Progress--> Installing{done'}
//!   ^                          |  InstallStarted (same release keeps `done`,
//!   |<------InstallFailed------+  another one starts from zero; both
//!   |                          |  invalidate the slot first)
//!   |                          +--InstallFinished--> Installed --reboot--> Trial
//!   |<--HealthPassed/MarkGood (commit)------------------------------------- Trial
//!   |   RebootPending <--HealthFailed/MarkBad/Rollback (invalidate + reboot)- Trial
//!   |<--Booted(next)-- RebootPending   (installs, rollback, mark-* refused here)
//!   |<--Booted(other) (the bootloader fell back)-- Installed | Trial
//! ```
//!
//! Safety rules encoded here (the model check in `tests/model.rs` explores them):
//! - an install never targets the booted slot, and only starts when the booted
//!   slot is the committed one (`Idle`) or resumes the same slot (`Installing`);
//! - every `InstallStarted` and every `InstallFailed` takes the target out of
//!   the boot order before anything else, so no armed env survives a write;
//! - the resume point lives inside `Installing` with the release it belongs
//!   to: a different release can never inherit it;
//! - after a rollback nothing is accepted but the boot that carries it out.

use std::fmt;

use super::mutant::{active, Mutant};
use crate::board::Slot;
use crate::bundle::Sha256Digest;

/// What is being installed: the bundle's version and manifest digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Release {
    pub version: semver::Version,
    pub digest: Sha256Digest,
}

/// How far an install got durably: every payload before `payload`, and the
/// first `chunk` chunks of `payload`, are on the device (synced).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Progress {
    pub payload: usize,
    pub chunk: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum State {
    /// Nothing in flight; the booted slot is committed.
    Idle,
    /// Writing `release` into `slot` (which the bootloader will not boot);
    /// `done` is the resume point of exactly this release.
    Installing {
        slot: Slot,
        release: Release,
        done: Progress,
    },
    /// Written and verified; the bootloader will try `slot` at the next boot.
    Installed { slot: Slot, release: Release },
    /// Booted into `slot` on trial; health decides.
    Trial { slot: Slot, release: Release },
    /// A trial was rolled back: the bootloader will boot `next`, the committed
    /// slot, at the next boot. Until then the booted slot is the bad one and
    /// nothing may be installed, rolled back or marked.
    RebootPending { next: Slot },
}

impl State {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Installing { .. } => "installing",
            State::Installed { .. } => "installed",
            State::Trial { .. } => "trial",
            State::RebootPending { .. } => "reboot-pending",
        }
    }

    /// The release this state concerns, if any.
    pub(crate) fn release(&self) -> Option<&Release> {
        match self {
            State::Installing { release, .. }
            | State::Installed { release, .. }
            | State::Trial { release, .. } => Some(release),
            State::Idle | State::RebootPending { .. } => None,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Idle => write!(f, "idle"),
            State::Installing { slot, release, .. }
            | State::Installed { slot, release }
            | State::Trial { slot, release } => {
                write!(f, "{} {} into slot {slot}", self.name(), release.version)
            }
            State::RebootPending { next } => write!(
                f,
                "reboot-pending (rolled back; the next boot is slot {next}: reboot first)"
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    InstallStarted {
        slot: Slot,
        booted: Slot,
        release: Release,
    },
    /// More of the install is durably on the device.
    Progress(Progress),
    /// Every payload of the slot was read back against its signed digest.
    InstallFinished,
    InstallFailed {
        reason: String,
    },
    /// Once per boot: the slot the kernel command line names.
    Booted {
        slot: Slot,
    },
    /// The bootloader started a slot the record does not call good while
    /// the other one is committed (its env was lost and it used its
    /// default): go back to the committed slot at the next boot.
    StrayBoot {
        slot: Slot,
    },
    HealthPassed,
    HealthFailed {
        reason: String,
    },
    MarkGood,
    MarkBad,
    Rollback,
}

impl Event {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Event::InstallStarted { .. } => "install",
            Event::Progress(_) => "progress",
            Event::InstallFinished => "install-finished",
            Event::InstallFailed { .. } => "install-failed",
            Event::Booted { .. } => "boot",
            Event::StrayBoot { .. } => "stray-boot",
            Event::HealthPassed => "health-passed",
            Event::HealthFailed { .. } => "health-failed",
            Event::MarkGood => "mark-good",
            Event::MarkBad => "mark-bad",
            Event::Rollback => "rollback",
        }
    }
}

/// Per-slot status as recorded in the persisted state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotStatus {
    Empty,
    Installing,
    Installed,
    Trial,
    Good,
    Bad,
}

impl SlotStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotStatus::Empty => "empty",
            SlotStatus::Installing => "installing",
            SlotStatus::Installed => "installed",
            SlotStatus::Trial => "trial",
            SlotStatus::Good => "good",
            SlotStatus::Bad => "bad",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Self> {
        [
            Self::Empty,
            Self::Installing,
            Self::Installed,
            Self::Trial,
            Self::Good,
            Self::Bad,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Remove the slot from the boot order (bootloader write).
    InvalidateBoot(Slot),
    /// Let the bootloader try the slot for its attempts (bootloader write).
    ArmTrial(Slot),
    /// Make the slot the committed default (bootloader write).
    CommitBoot(Slot),
    /// Record a slot's status (and release, when it carries one).
    SetSlot {
        slot: Slot,
        status: SlotStatus,
        release: Option<Release>,
    },
    /// Raise the anti-rollback floor to this version.
    RaiseFloor(semver::Version),
    /// Record the outcome of an update attempt.
    Report(Outcome),
    Reboot,
}

impl Action {
    /// Whether the action writes the bootloader environment.
    pub(crate) fn is_boot_write(&self) -> bool {
        matches!(
            self,
            Action::InvalidateBoot(_) | Action::ArmTrial(_) | Action::CommitBoot(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    Committed {
        slot: Slot,
        version: semver::Version,
    },
    InstallFailed {
        slot: Slot,
        reason: String,
    },
    /// Rolled back by ferry (health failed, or by hand).
    RolledBack {
        slot: Slot,
        reason: String,
    },
    /// The bootloader never got the trial slot to userspace and fell back.
    BootFailed {
        slot: Slot,
    },
    /// An install was interrupted by a reboot; it can be retried or resumed.
    Interrupted {
        slot: Slot,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTransition {
    pub state: String,
    pub event: &'static str,
}

pub(crate) type Step = Result<(State, Vec<Action>), InvalidTransition>;

use Action as A;
use State as S;

fn fail_back(slot: Slot, outcome: Outcome) -> Vec<Action> {
    vec![
        A::InvalidateBoot(slot),
        A::SetSlot {
            slot,
            status: SlotStatus::Bad,
            release: None,
        },
        A::Report(outcome),
    ]
}

fn start_install(slot: Slot, release: Release, done: Progress) -> (State, Vec<Action>) {
    let acts = vec![
        // out of the boot order before the first byte, whatever came before
        A::InvalidateBoot(slot),
        A::SetSlot {
            slot,
            status: SlotStatus::Installing,
            release: Some(release.clone()),
        },
    ];

    (
        S::Installing {
            slot,
            release,
            done,
        },
        acts,
    )
}

/// After rolling back `slot` (booted), until the reboot into the other.
fn pending_after_rollback(slot: Slot) -> State {
    if active(Mutant::RollbackWindow) {
        return S::Idle;
    }
    S::RebootPending { next: slot.other() }
}

/// The transition function.
pub fn step(state: State, event: Event) -> Step {
    let invalid = |s: &State, e: &Event| InvalidTransition {
        state: s.to_string(),
        event: e.name(),
    };
    match (state, event) {
        (
            S::Idle,
            Event::InstallStarted {
                slot,
                booted,
                release,
            },
        ) if slot != booted => Ok(start_install(slot, release, Progress::default())),
        // An interrupted install is resumed (same release: its own progress)
        // or restarted (another release: from zero). Never inherited.
        (
            S::Installing {
                slot,
                release: old,
                done,
            },
            Event::InstallStarted {
                slot: new,
                booted,
                release,
            },
        ) if new == slot && booted != slot => {
            let done = if old == release || active(Mutant::StaleResume) {
                done
            } else {
                Progress::default()
            };
            let (st, mut acts) = start_install(slot, release, done);
            if active(Mutant::ArmingWindow) {
                acts.retain(|a| !matches!(a, A::InvalidateBoot(_)));
            }
            Ok((st, acts))
        }
        (S::Installing { slot, release, .. }, Event::Progress(done)) => Ok((
            S::Installing {
                slot,
                release,
                done,
            },
            vec![],
        )),
        (S::Installing { slot, release, .. }, Event::InstallFinished) => {
            let acts = vec![
                A::SetSlot {
                    slot,
                    status: SlotStatus::Installed,
                    release: Some(release.clone()),
                },
                A::ArmTrial(slot),
            ];
            Ok((S::Installed { slot, release }, acts))
        }
        (S::Installing { slot, .. }, Event::InstallFailed { reason }) => {
            let mut acts = vec![
                A::InvalidateBoot(slot),
                A::SetSlot {
                    slot,
                    status: SlotStatus::Bad,
                    release: None,
                },
                A::Report(Outcome::InstallFailed { slot, reason }),
            ];
            if active(Mutant::ArmingWindow) {
                acts.remove(0);
            }
            Ok((S::Idle, acts))
        }
        // Power cut or reboot mid-install: the old slot booted (the target was
        // invalidated first). Stay resumable.
        (
            S::Installing {
                slot,
                release,
                done,
            },
            Event::Booted { slot: b },
        ) if b != slot => Ok((
            S::Installing {
                slot,
                release,
                done,
            },
            vec![A::Report(Outcome::Interrupted { slot })],
        )),
        // The bootloader boots the target only once armed, which happens only
        // after every payload was verified: a crash between arming and
        // persisting lands here.
        (
            S::Installed { slot, release } | S::Installing { slot, release, .. },
            Event::Booted { slot: b },
        ) if b == slot => {
            let acts = vec![A::SetSlot {
                slot,
                status: SlotStatus::Trial,
                release: Some(release.clone()),
            }];
            Ok((S::Trial { slot, release }, acts))
        }
        (S::Installed { slot, .. } | S::Trial { slot, .. }, Event::Booted { slot: b })
            if b != slot =>
        {
            Ok((S::Idle, fail_back(slot, Outcome::BootFailed { slot })))
        }
        // A reboot during the trial (the bootloader spent one more attempt).
        (S::Trial { slot, release }, Event::Booted { slot: b }) if b == slot => {
            Ok((S::Trial { slot, release }, vec![]))
        }
        (S::Installed { slot, .. }, Event::MarkBad | Event::Rollback) => Ok((
            S::Idle,
            fail_back(
                slot,
                Outcome::RolledBack {
                    slot,
                    reason: "cancelled before reboot".into(),
                },
            ),
        )),
        (S::Trial { slot, release }, Event::HealthPassed | Event::MarkGood) => {
            let acts = vec![
                A::CommitBoot(slot),
                A::SetSlot {
                    slot,
                    status: SlotStatus::Good,
                    release: Some(release.clone()),
                },
                A::RaiseFloor(release.version.clone()),
                A::Report(Outcome::Committed {
                    slot,
                    version: release.version,
                }),
            ];
            Ok((S::Idle, acts))
        }
        (S::Trial { slot, .. }, Event::HealthFailed { reason }) => {
            let mut acts = fail_back(slot, Outcome::RolledBack { slot, reason });
            acts.push(A::Reboot);
            Ok((pending_after_rollback(slot), acts))
        }
        (S::Trial { slot, .. }, Event::MarkBad | Event::Rollback) => {
            let mut acts = fail_back(
                slot,
                Outcome::RolledBack {
                    slot,
                    reason: "marked bad by hand".into(),
                },
            );
            acts.push(A::Reboot);
            Ok((pending_after_rollback(slot), acts))
        }
        // The pending reboot happened: the committed slot runs again.
        (S::RebootPending { next }, Event::Booted { slot }) if slot == next => {
            Ok((S::Idle, vec![]))
        }
        // The rolled-back slot booted again (its env write was lost): stay
        // pending; the engine rebuilds the env from the record.
        (S::RebootPending { next }, Event::Booted { slot }) if slot != next => {
            Ok((S::RebootPending { next }, vec![]))
        }
        (S::Idle, Event::Booted { .. } | Event::MarkGood) => Ok((S::Idle, vec![])),
        (S::Idle, Event::StrayBoot { slot }) => Ok((
            S::RebootPending { next: slot.other() },
            vec![A::InvalidateBoot(slot), A::Reboot],
        )),
        (
            s @ (S::Installing { .. }
            | S::Installed { .. }
            | S::Trial { .. }
            | S::RebootPending { .. }),
            e @ Event::StrayBoot { .. },
        ) => Err(invalid(&s, &e)),
        (
            s @ S::Idle,
            e @ (Event::InstallStarted { .. }
            | Event::Progress(_)
            | Event::InstallFinished
            | Event::InstallFailed { .. }),
        )
        | (
            s @ S::Idle,
            e @ (Event::HealthPassed
            | Event::HealthFailed { .. }
            | Event::MarkBad
            | Event::Rollback),
        )
        | (
            s @ S::Installing { .. },
            e @ (Event::InstallStarted { .. } | Event::Booted { .. } | Event::HealthPassed),
        )
        | (
            s @ S::Installing { .. },
            e @ (Event::HealthFailed { .. } | Event::MarkGood | Event::MarkBad | Event::Rollback),
        )
        | (
            s @ S::Installed { .. },
            e @ (Event::InstallStarted { .. }
            | Event::Progress(_)
            | Event::InstallFinished
            | Event::InstallFailed { .. }),
        )
        | (
            s @ S::Installed { .. },
            e @ (Event::Booted { .. }
            | Event::HealthPassed
            | Event::HealthFailed { .. }
            | Event::MarkGood),
        )
        | (
            s @ S::Trial { .. },
            e @ (Event::InstallStarted { .. }
            | Event::Progress(_)
            | Event::InstallFinished
            | Event::InstallFailed { .. }),
        )
        | (s @ S::Trial { .. }, e @ Event::Booted { .. })
        | (
            s @ S::RebootPending { .. },
            e @ (Event::InstallStarted { .. }
            | Event::Progress(_)
            | Event::InstallFinished
            | Event::InstallFailed { .. }
            | Event::Booted { .. }),
        )
        | (
            s @ S::RebootPending { .. },
            e @ (Event::HealthPassed
            | Event::HealthFailed { .. }
            | Event::MarkGood
            | Event::MarkBad
            | Event::Rollback),
        ) => Err(invalid(&s, &e)),
    }
}

#[cfg(test)]
mod tests;
