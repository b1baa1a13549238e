//! The update state machine. Sans-IO and typed: `step(state, event)` returns
//! the next state and the actions the edge must carry out, in order. Every
//! legal (state, event) pair is listed; anything else is an invalid
//! transition. The edge persists the new state durably *after* running the
//! actions that make it true and *before* acting on it (see `io::install`).
//!
//! ```text
//! Idle --InstallStarted--> Installing --InstallFinished--> Installed
//!   ^                          |  (crash: Booted keeps it, resume)    |
//!   |<------InstallFailed------+                                      | reboot
//!   |                                                                 v
//!   |<--HealthPassed/MarkGood (commit)-- Trial <--Booted(target)-- Installed
//!   |<--HealthFailed/MarkBad/Rollback (invalidate + reboot)-- Trial
//!   |<--Booted(other) (the bootloader fell back)-- Installed | Trial
//! ```

use std::fmt;

use crate::board::Slot;
use crate::bundle::Sha256Digest;

/// What is being installed: the bundle's version and manifest digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub version: semver::Version,
    pub digest: Sha256Digest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Nothing in flight; the booted slot is committed.
    Idle,
    /// Writing `release` into `slot` (which the bootloader will not boot).
    Installing { slot: Slot, release: Release },
    /// Written and verified; the bootloader will try `slot` at the next boot.
    Installed { slot: Slot, release: Release },
    /// Booted into `slot` on trial; health decides.
    Trial { slot: Slot, release: Release },
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Installing { .. } => "installing",
            State::Installed { .. } => "installed",
            State::Trial { .. } => "trial",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Idle => write!(f, "idle"),
            State::Installing { slot, release }
            | State::Installed { slot, release }
            | State::Trial { slot, release } => {
                write!(f, "{} {} into slot {slot}", self.name(), release.version)
            }
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
    InstallFinished,
    InstallFailed {
        reason: String,
    },
    /// Once per boot: the slot the kernel command line names.
    Booted {
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
    pub fn name(&self) -> &'static str {
        match self {
            Event::InstallStarted { .. } => "install",
            Event::InstallFinished => "install-finished",
            Event::InstallFailed { .. } => "install-failed",
            Event::Booted { .. } => "boot",
            Event::HealthPassed => "health-passed",
            Event::HealthFailed { .. } => "health-failed",
            Event::MarkGood => "mark-good",
            Event::MarkBad => "mark-bad",
            Event::Rollback => "rollback",
        }
    }
}

/// Per-slot status as recorded in the persisted state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    pub fn parse(s: &str) -> Option<Self> {
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

#[derive(Debug, Clone, PartialEq, Eq)]
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

pub type Step = Result<(State, Vec<Action>), InvalidTransition>;

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
        ) if slot != booted => {
            let acts = vec![
                A::InvalidateBoot(slot),
                A::SetSlot {
                    slot,
                    status: SlotStatus::Installing,
                    release: Some(release.clone()),
                },
            ];
            Ok((S::Installing { slot, release }, acts))
        }
        // An interrupted install may be restarted or resumed with the same or a new release.
        (
            S::Installing { slot, .. },
            Event::InstallStarted {
                slot: new,
                booted,
                release,
            },
        ) if new == slot && booted != slot => {
            let acts = vec![A::SetSlot {
                slot,
                status: SlotStatus::Installing,
                release: Some(release.clone()),
            }];
            Ok((S::Installing { slot, release }, acts))
        }
        (S::Installing { slot, release }, Event::InstallFinished) => {
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
        (S::Installing { slot, .. }, Event::InstallFailed { reason }) => Ok((
            S::Idle,
            vec![
                A::SetSlot {
                    slot,
                    status: SlotStatus::Bad,
                    release: None,
                },
                A::Report(Outcome::InstallFailed { slot, reason }),
            ],
        )),
        // Power cut or reboot mid-install: the old slot booted (the target was
        // invalidated first). Stay resumable.
        (S::Installing { slot, release }, Event::Booted { slot: b }) if b != slot => Ok((
            S::Installing { slot, release },
            vec![A::Report(Outcome::Interrupted { slot })],
        )),
        // The bootloader boots the target only once armed, which happens only
        // after verification: a crash between arming and persisting lands here.
        (
            S::Installed { slot, release } | S::Installing { slot, release },
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
            Ok((S::Idle, acts))
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
            Ok((S::Idle, acts))
        }
        (S::Idle, Event::Booted { .. } | Event::MarkGood) => Ok((S::Idle, vec![])),
        (
            s @ S::Idle,
            e @ (Event::InstallStarted { .. }
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
            | Event::InstallFinished
            | Event::InstallFailed { .. }),
        )
        | (s @ S::Trial { .. }, e @ Event::Booted { .. }) => Err(invalid(&s, &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(v: &str) -> Release {
        Release {
            version: semver::Version::parse(v).unwrap(),
            digest: Sha256Digest::of(v.as_bytes()),
        }
    }

    fn installing() -> State {
        S::Installing {
            slot: Slot::B,
            release: rel("2.0.0"),
        }
    }
    fn installed() -> State {
        S::Installed {
            slot: Slot::B,
            release: rel("2.0.0"),
        }
    }
    fn trial() -> State {
        S::Trial {
            slot: Slot::B,
            release: rel("2.0.0"),
        }
    }
    fn start(slot: Slot, booted: Slot) -> Event {
        Event::InstallStarted {
            slot,
            booted,
            release: rel("2.0.0"),
        }
    }

    #[test]
    fn legal_transitions_table() {
        let b = Slot::B;
        let table: Vec<(State, Event, State, Vec<Action>)> = vec![
            (
                S::Idle,
                start(b, Slot::A),
                installing(),
                vec![
                    A::InvalidateBoot(b),
                    A::SetSlot {
                        slot: b,
                        status: SlotStatus::Installing,
                        release: Some(rel("2.0.0")),
                    },
                ],
            ),
            (
                installing(),
                start(b, Slot::A),
                installing(),
                vec![A::SetSlot {
                    slot: b,
                    status: SlotStatus::Installing,
                    release: Some(rel("2.0.0")),
                }],
            ),
            (
                installing(),
                Event::InstallFinished,
                installed(),
                vec![
                    A::SetSlot {
                        slot: b,
                        status: SlotStatus::Installed,
                        release: Some(rel("2.0.0")),
                    },
                    A::ArmTrial(b),
                ],
            ),
            (
                installing(),
                Event::InstallFailed {
                    reason: "eio".into(),
                },
                S::Idle,
                vec![
                    A::SetSlot {
                        slot: b,
                        status: SlotStatus::Bad,
                        release: None,
                    },
                    A::Report(Outcome::InstallFailed {
                        slot: b,
                        reason: "eio".into(),
                    }),
                ],
            ),
            (
                installing(),
                Event::Booted { slot: Slot::A },
                installing(),
                vec![A::Report(Outcome::Interrupted { slot: b })],
            ),
            (
                installing(),
                Event::Booted { slot: b },
                trial(),
                vec![A::SetSlot {
                    slot: b,
                    status: SlotStatus::Trial,
                    release: Some(rel("2.0.0")),
                }],
            ),
            (
                installed(),
                Event::Booted { slot: b },
                trial(),
                vec![A::SetSlot {
                    slot: b,
                    status: SlotStatus::Trial,
                    release: Some(rel("2.0.0")),
                }],
            ),
            (
                installed(),
                Event::Booted { slot: Slot::A },
                S::Idle,
                fail_back(b, Outcome::BootFailed { slot: b }),
            ),
            (
                trial(),
                Event::Booted { slot: Slot::A },
                S::Idle,
                fail_back(b, Outcome::BootFailed { slot: b }),
            ),
            (trial(), Event::Booted { slot: b }, trial(), vec![]),
            (
                trial(),
                Event::HealthPassed,
                S::Idle,
                vec![
                    A::CommitBoot(b),
                    A::SetSlot {
                        slot: b,
                        status: SlotStatus::Good,
                        release: Some(rel("2.0.0")),
                    },
                    A::RaiseFloor(rel("2.0.0").version),
                    A::Report(Outcome::Committed {
                        slot: b,
                        version: rel("2.0.0").version,
                    }),
                ],
            ),
            (
                trial(),
                Event::HealthFailed {
                    reason: "readyz".into(),
                },
                S::Idle,
                [
                    fail_back(
                        b,
                        Outcome::RolledBack {
                            slot: b,
                            reason: "readyz".into(),
                        },
                    ),
                    vec![A::Reboot],
                ]
                .concat(),
            ),
            (S::Idle, Event::Booted { slot: Slot::A }, S::Idle, vec![]),
            (S::Idle, Event::MarkGood, S::Idle, vec![]),
        ];
        for (s, e, want_s, want_a) in table {
            let what = format!("{s} + {}", e.name());
            let (got_s, got_a) = step(s, e).unwrap_or_else(|x| panic!("{what}: {x:?}"));
            assert_eq!(got_s, want_s, "{what}");
            assert_eq!(got_a, want_a, "{what}");
        }
    }

    #[test]
    fn illegal_transitions_table() {
        let table: Vec<(State, Event)> = vec![
            (S::Idle, start(Slot::A, Slot::A)), // never install into the booted slot
            (S::Idle, Event::InstallFinished),
            (S::Idle, Event::HealthPassed),
            (S::Idle, Event::Rollback),
            (installing(), start(Slot::A, Slot::B)),
            (installing(), Event::MarkGood),
            (installing(), Event::HealthPassed),
            (installed(), Event::HealthPassed),
            (installed(), Event::MarkGood),
            (installed(), start(Slot::B, Slot::A)),
            (trial(), start(Slot::A, Slot::B)),
            (trial(), Event::InstallFinished),
        ];
        for (s, e) in table {
            let what = format!("{s} + {}", e.name());
            assert!(step(s, e).is_err(), "{what} was accepted");
        }
    }
}
