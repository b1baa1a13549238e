//! Property tests of the update state machine together with the boot-slot
//! logic, the way the edge runs them (`io::node::apply`): for any sequence of
//! events — install, crash, reboot, health pass/fail, timeout, mark-good,
//! mark-bad, rollback — the bootloader always has a slot to boot that is
//! committed-good or the verified trial, never a half-written one, and the
//! persisted record always parses back to the same state.

use ferry::board::bootenv::BootState;
use ferry::board::Slot;
use ferry::bundle::Sha256Digest;
use ferry::update::machine::{step, Action, Event, Release, SlotStatus, State};
use ferry::update::persist::Device;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Install,
    FinishInstall,
    FailInstall,
    /// Power cut / reboot: the bootloader picks per its state (and may burn an attempt).
    Reboot,
    /// The trial kernel panics before userspace.
    KernelPanic,
    HealthPass,
    HealthFail,
    MarkGood,
    MarkBad,
    Rollback,
}

fn op() -> impl Strategy<Value = Op> {
    // weighted toward the steps of a full cycle, so long runs reach every state
    prop_oneof![
        4 => Just(Op::Install),
        4 => Just(Op::FinishInstall),
        1 => Just(Op::FailInstall),
        4 => Just(Op::Reboot),
        1 => Just(Op::KernelPanic),
        3 => Just(Op::HealthPass),
        1 => Just(Op::HealthFail),
        1 => Just(Op::MarkGood),
        1 => Just(Op::MarkBad),
        1 => Just(Op::Rollback),
    ]
}

struct World {
    dev: Device,
    boot: BootState,
    booted: Slot,
    /// What is physically in each slot: Some(version) when fully written.
    content: [Option<u64>; 2],
    next_version: u64,
}

impl World {
    fn apply(&mut self, ev: Event) {
        let Ok((next, acts)) = step(self.dev.state.clone(), ev) else {
            return;
        };
        for a in &acts {
            self.boot = match a {
                Action::InvalidateBoot(s) => self.boot.invalidate(*s),
                Action::ArmTrial(s) => self.boot.arm_trial(*s, 3),
                Action::CommitBoot(s) => self.boot.commit(*s),
                _ => self.boot.clone(),
            };
        }
        self.dev.advance(next, &acts);
        // persisted after every transition: it must parse back to the same
        let (_, back) = Device::decode_copy(&self.dev.encode_copy(1)).expect("record parses");
        assert_eq!(back, self.dev);
        if acts.contains(&Action::Reboot) {
            self.reboot(false);
        }
    }

    /// The U-Boot script's choice, then the boot event.
    fn reboot(&mut self, panic: bool) {
        let Some(s) = self.boot.next_boot() else {
            panic!("no bootable slot: {:?}", self.boot)
        };
        if self.boot.trial == Some(s) {
            self.boot.left[s.index()] -= 1;
            if panic {
                // the kernel never reaches userspace; the board resets
                return self.reboot(false);
            }
        }
        self.booted = s;
        self.apply(Event::Booted { slot: s });
    }

    fn check(&self) {
        let s = self.boot.next_boot().expect("always a bootable slot");
        let good = self.dev.slots[s.index()].status == SlotStatus::Good;
        let trial = self.boot.trial == Some(s) && self.content[s.index()].is_some();
        assert!(
            good || trial,
            "next boot {s} is neither committed-good nor a verified trial: {:?} {:?}",
            self.boot,
            self.dev
        );
        assert!(
            self.content[s.index()].is_some(),
            "next boot {s} is half-written"
        );
        // every slot in the boot order is fully written
        for o in &self.boot.order {
            assert!(
                self.content[o.index()].is_some(),
                "slot {o} in the boot order but not fully written"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn always_a_bootable_committed_slot(ops in prop::collection::vec(op(), 1..40)) {
        let mut w = World {
            dev: Device::default(),
            boot: BootState::default(),
            booted: Slot::A,
            content: [Some(1), None],
            next_version: 2,
        };
        w.dev.slots[0].status = SlotStatus::Good;
        for o in ops {
            match o {
                Op::Install => {
                    let target = w.booted.other();
                    let release = Release { version: semver::Version::new(1, w.next_version, 0), digest: Sha256Digest::of(&w.next_version.to_le_bytes()) };
                    let before = w.dev.state.clone();
                    w.apply(Event::InstallStarted { slot: target, booted: w.booted, release });
                    if w.dev.state != before || matches!(w.dev.state, State::Installing { .. }) {
                        // writing begins only now that the slot is out of the boot order
                        assert!(!w.boot.order.contains(&target));
                        w.content[target.index()] = None;
                    }
                }
                Op::FinishInstall => {
                    if let State::Installing { slot, .. } = w.dev.state {
                        w.content[slot.index()] = Some(w.next_version);
                        w.next_version += 1;
                        w.apply(Event::InstallFinished);
                    }
                }
                Op::FailInstall => w.apply(Event::InstallFailed { reason: "eio".into() }),
                Op::Reboot => w.reboot(false),
                Op::KernelPanic => {
                    if w.boot.trial.is_some() && w.boot.next_boot() == w.boot.trial {
                        w.reboot(true)
                    } else {
                        w.reboot(false)
                    }
                }
                Op::HealthPass => w.apply(Event::HealthPassed),
                Op::HealthFail => w.apply(Event::HealthFailed { reason: "timeout".into() }),
                Op::MarkGood => w.apply(Event::MarkGood),
                Op::MarkBad => w.apply(Event::MarkBad),
                Op::Rollback => w.apply(Event::Rollback),
            }
            w.check();
        }
    }
}
