//! The transition table, exhaustively, and the invariants per state.
use super::*;

fn rel(v: &str) -> Release {
    Release {
        version: semver::Version::parse(v).unwrap(),
        digest: Sha256Digest::of(v.as_bytes()),
    }
}

fn installing() -> State {
    installing_at(Progress::default())
}
fn installing_at(done: Progress) -> State {
    S::Installing {
        slot: Slot::B,
        release: rel("2.0.0"),
        done,
    }
}
fn pending() -> State {
    S::RebootPending { next: Slot::A }
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
        // the same release resumes where it got to ...
        (
            installing_at(Progress {
                payload: 1,
                chunk: 32,
            }),
            start(b, Slot::A),
            installing_at(Progress {
                payload: 1,
                chunk: 32,
            }),
            vec![
                A::InvalidateBoot(b),
                A::SetSlot {
                    slot: b,
                    status: SlotStatus::Installing,
                    release: Some(rel("2.0.0")),
                },
            ],
        ),
        // ... another release never inherits that progress
        (
            installing_at(Progress {
                payload: 1,
                chunk: 32,
            }),
            Event::InstallStarted {
                slot: b,
                booted: Slot::A,
                release: rel("3.0.0"),
            },
            S::Installing {
                slot: b,
                release: rel("3.0.0"),
                done: Progress::default(),
            },
            vec![
                A::InvalidateBoot(b),
                A::SetSlot {
                    slot: b,
                    status: SlotStatus::Installing,
                    release: Some(rel("3.0.0")),
                },
            ],
        ),
        (
            installing(),
            Event::Progress(Progress {
                payload: 0,
                chunk: 8,
            }),
            installing_at(Progress {
                payload: 0,
                chunk: 8,
            }),
            vec![],
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
                A::InvalidateBoot(b),
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
            pending(),
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
        (pending(), Event::Booted { slot: Slot::A }, S::Idle, vec![]),
        (pending(), Event::Booted { slot: b }, pending(), vec![]),
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

fn b() -> Slot {
    Slot::B
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
        (S::Idle, Event::Progress(Progress::default())),
        // the rollback window: nothing but the boot that carries it out
        (pending(), start(b(), Slot::B)),
        (pending(), start(Slot::A, Slot::B)),
        (pending(), Event::Rollback),
        (pending(), Event::MarkGood),
        (pending(), Event::MarkBad),
        (pending(), Event::HealthPassed),
        (pending(), Event::InstallFinished),
    ];
    for (s, e) in table {
        let what = format!("{s} + {}", e.name());
        assert!(step(s, e).is_err(), "{what} was accepted");
    }
}
