//! The one use-case layer between the state machine and the device: every
//! event, every install (file, block device or URL), every boot goes through
//! [`Engine`], so ordering, invalidation, resume and failure recording exist
//! once. It is generic over three small traits the edge implements: where the
//! bootloader keeps its state ([`BootEnv`]), where the record lives
//! ([`RecordStore`]) and what writes a slot ([`SlotWriter`]). The model check
//! (`tests/model.rs`) drives this same code with in-memory implementations
//! that crash or fail at every durable write.
//!
//! Order of writes, always: bootloader env first, then the record. On open,
//! the boot event is delivered, then the env is reconciled with the record
//! and the booted slot (the truth): an env that disagrees is rebuilt; one
//! that cannot be read is rebuilt from the record, never from a default.
//!
//! Never does: files, clocks, threads, processes, network (only the traits).

use tracing::{info, warn};

use super::machine::{self, Action, Event, Progress, SlotStatus, State};
use super::mutant::{active, Mutant};
use super::persist::Device;
use super::policy::{self, Candidate, SlotLayout};
use crate::board::bootenv::BootState;
use crate::board::Slot;
use crate::error::Error;

/// Where the bootloader keeps its state.
pub trait BootEnv {
    /// The state as the bootloader reads it; `None` when no copy is valid.
    fn load(&mut self) -> Result<Option<BootState>, Error>;
    /// Store a state (every copy). Must not be called with an unbootable state.
    fn store(&mut self, st: &BootState) -> Result<(), Error>;
    /// Rewrite a damaged copy from the intact one; whether anything was done.
    fn repair(&mut self) -> Result<bool, Error> {
        Ok(false)
    }
    /// `st` as this bootloader can represent it (a store then load round trip).
    fn normalize(&self, st: BootState) -> BootState {
        st
    }
}

/// Where the device record lives (two copies, see `update::persist`).
pub trait RecordStore {
    /// The newest intact record; `None` on a device that has none yet; an
    /// error naming both faults when no copy is intact.
    fn load(&mut self) -> Result<Option<Device>, Error>;
    fn save(&mut self, d: &Device) -> Result<(), Error>;
}

/// Writes one authenticated bundle into the target slot.
pub trait SlotWriter {
    /// Write every payload from `from` on, reading back what it writes
    /// (including the part of a resumed payload written before), and call
    /// `durable` whenever more is synced to the device.
    fn write(
        &mut self,
        from: Progress,
        durable: &mut dyn FnMut(Progress) -> Result<(), Error>,
    ) -> Result<(), Error>;
    /// Read payload `index` back in full and check it against its signed
    /// installed digest (for payloads a previous run wrote).
    fn verify(&mut self, index: usize) -> Result<(), Error>;
    /// Whether an error of `write` leaves the install resumable (the source
    /// may deliver whole bytes later: a network) or is final (a damaged file).
    fn resumable(&self, e: &Error) -> bool {
        e.is_transient()
    }
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub slot: Slot,
    pub version: semver::Version,
    /// Where a previous interrupted run of the same release left off.
    pub resumed_from: Option<Progress>,
}

pub struct Engine<E, R> {
    pub env: E,
    pub store: R,
    pub dev: Device,
    pub booted: Slot,
    /// Trial boot attempts the bootloader grants an armed slot.
    pub attempts: u32,
}

impl<E: BootEnv, R: RecordStore> Engine<E, R> {
    /// Open for writing: load the record, deliver this boot's `Booted` event
    /// if `boot_id` is new, repair a damaged env copy, reconcile the env.
    pub fn open(
        mut env: E,
        mut store: R,
        booted: Slot,
        boot_id: Option<String>,
        attempts: u32,
    ) -> Result<Self, Error> {
        let mut dev = store.load()?.unwrap_or_else(|| Device::first_boot(booted));
        if env.repair()? {
            warn!("a damaged bootloader environment copy was rewritten from the intact one");
        }
        // the env keeps a copy of the floor: a record that lost its newest
        // write (a damaged copy) never lowers it
        if let Some(f) = env.load()?.and_then(|st| st.floor) {
            if dev.floor.as_ref().is_none_or(|d| &f > d) {
                warn!(floor = %f, "the rollback floor in the bootloader env is higher than the record's; keeping it");
                dev.floor = Some(f);
            }
        }
        let mut e = Engine {
            env,
            store,
            dev,
            booted,
            attempts,
        };
        if boot_id.is_some() && boot_id != e.dev.boot_id {
            let acts = e.apply_with(Event::Booted { slot: booted }, |d| d.boot_id = boot_id)?;
            if acts.contains(&Action::Reboot) {
                warn!("boot event asked for a reboot; ignored");
            }
        }
        let status = |s: Slot| e.dev.slots[s.index()].status;
        if e.dev.state == State::Idle
            && !active(Mutant::RollbackWindow)
            && status(booted) != SlotStatus::Good
            && status(booted.other()) == SlotStatus::Good
        {
            warn!(booted = %booted, committed = %booted.other(), "booted a slot that is not the committed one (bootloader env lost?); the next boot returns to the committed slot");
            e.apply(Event::StrayBoot { slot: booted })?;
        }
        e.reconcile()?;
        Ok(e)
    }

    /// A read-only view (status): the record as the next writer will see it
    /// after this boot's event, without writing anything.
    pub(crate) fn view(
        mut store: R,
        env: E,
        booted: Slot,
        boot_id: Option<String>,
        attempts: u32,
    ) -> Result<Self, Error> {
        let mut dev = store.load()?.unwrap_or_else(|| Device::first_boot(booted));
        if boot_id.is_some() && boot_id != dev.boot_id {
            if let Ok((next, acts)) =
                machine::step(dev.state.clone(), Event::Booted { slot: booted })
            {
                dev.boot_id = boot_id;
                dev.advance(next, &acts);
            }
        }
        Ok(Engine {
            env,
            store,
            dev,
            booted,
            attempts,
        })
    }

    /// Run an event: bootloader actions first, then the durable record.
    pub fn apply(&mut self, event: Event) -> Result<Vec<Action>, Error> {
        self.apply_with(event, |_| {})
    }

    fn apply_with(
        &mut self,
        event: Event,
        extra: impl FnOnce(&mut Device),
    ) -> Result<Vec<Action>, Error> {
        let ev = event.name();
        let (next, actions) =
            machine::step(self.dev.state.clone(), event).map_err(|e| Error::InvalidTransition {
                state: e.state,
                event: e.event.to_string(),
            })?;
        let mut nd = self.dev.clone();
        extra(&mut nd);
        nd.advance(next, &actions);
        if actions.iter().any(Action::is_boot_write) {
            let mut st = match self.env.load()? {
                Some(st) => st,
                None if active(Mutant::EnvDefault) => BootState::default(),
                // unreadable: rebuild from the record, never from a default
                None => expected(&nd, self.booted, self.attempts).map_err(Error::Boot)?,
            };
            for a in &actions {
                st = match a {
                    Action::InvalidateBoot(s) => st.invalidate(*s),
                    Action::ArmTrial(s) => st.arm_trial(*s, self.attempts),
                    Action::CommitBoot(s) => st.commit(*s),
                    _ => st,
                };
            }
            st.floor = nd.floor.clone();
            self.store_env(&st)?;
        }
        if self.dev.state != nd.state || !actions.is_empty() {
            info!(event = ev, from = %self.dev.state, to = %nd.state, "state transition");
        }
        self.store.save(&nd)?;
        self.dev = nd;
        Ok(actions)
    }

    fn store_env(&mut self, st: &BootState) -> Result<(), Error> {
        if st.next_boot().is_none()
            && !active(Mutant::EnvDefault)
            && !active(Mutant::RollbackWindow)
        {
            return Err(Error::Internal(format!(
                "refusing to write a boot state with no bootable slot ({st:?})"
            )));
        }
        self.env.store(st)
    }

    /// Persist the record as it is (feed serials).
    pub(crate) fn save(&mut self) -> Result<(), Error> {
        self.store.save(&self.dev)
    }

    /// Make the env agree with the record and the booted slot.
    pub(crate) fn reconcile(&mut self) -> Result<(), Error> {
        if active(Mutant::ArmingWindow)
            || active(Mutant::EnvDefault)
            || active(Mutant::RollbackWindow)
        {
            return Ok(());
        }
        let found = self.env.load()?;
        let want = expected(&self.dev, self.booted, self.attempts).map_err(|what| {
            Error::Boot(format!(
                "the record and the booted slot disagree ({what}); nothing was written: see README, 'Recovery'"
            ))
        })?;
        let want = match (&self.dev.state, &found) {
            // a trial keeps the attempts it has left
            (State::Trial { slot, .. }, Some(f)) if f.trial == Some(*slot) => {
                let mut w = want;
                w.left[slot.index()] = f.left[slot.index()];
                w
            }
            _ => want,
        };
        let want = self.env.normalize(want);
        let ok = found.as_ref().is_some_and(|f| {
            let f = self.env.normalize(f.clone());
            f.order == want.order
                && f.trial == want.trial
                && f.floor == want.floor
                && match &self.dev.state {
                    State::Installed { slot, .. } => f.left[slot.index()] > 0,
                    _ => true,
                }
        });
        if !ok {
            warn!(found = ?found, rebuilt = ?want, state = %self.dev.state, "bootloader environment disagreed with the record; rebuilt");
            self.store_env(&want)?;
        }
        Ok(())
    }

    /// Install an authenticated bundle into the inactive slot: the one path
    /// for files, block devices and URLs.
    pub fn install(
        &mut self,
        cand: &Candidate,
        layout: &SlotLayout,
        w: &mut dyn SlotWriter,
    ) -> Result<Installed, Error> {
        let target = self.booted.other();
        match &self.dev.state {
            State::Idle => {}
            State::Installing { slot, .. } if *slot == target => {}
            s => {
                return Err(Error::InvalidTransition {
                    state: s.to_string(),
                    event: "install".into(),
                })
            }
        }
        policy::check(cand, layout, &self.dev, self.booted)?;
        self.apply(Event::InstallStarted {
            slot: target,
            booted: self.booted,
            release: cand.release.clone(),
        })?;
        let from = match &self.dev.state {
            State::Installing { done, .. } => *done,
            s => return Err(Error::Internal(format!("install started into state {s}"))),
        };
        info!(version = %cand.release.version, manifest = %cand.release.digest, payload = from.payload, chunk = from.chunk, "installing");
        let res = self.write_and_verify(w, from, cand.payloads.len());
        match res {
            Ok(()) => {
                self.apply(Event::InstallFinished)?;
                Ok(Installed {
                    slot: target,
                    version: cand.release.version.clone(),
                    resumed_from: (from != Progress::default()).then_some(from),
                })
            }
            // resumable: the slot is out of the boot order, the record says where
            Err(e) if w.resumable(&e) => Err(e),
            Err(e) => {
                if let Err(e2) = self.apply(Event::InstallFailed {
                    reason: e.to_string(),
                }) {
                    warn!(error = %e2, "could not record the failed install");
                }
                Err(e)
            }
        }
    }

    fn write_and_verify(
        &mut self,
        w: &mut dyn SlotWriter,
        from: Progress,
        n: usize,
    ) -> Result<(), Error> {
        let mut durable = |p: Progress| self.apply(Event::Progress(p)).map(|_| ());
        w.write(from, &mut durable)?;
        // what earlier runs wrote is checked now, whatever was resumed
        let n = if active(Mutant::StaleResume) { 0 } else { n };
        for i in 0..from.payload.min(n) {
            w.verify(i)?;
        }
        Ok(())
    }
}

/// The boot state the record and the booted slot call for, or why they
/// contradict each other. Pure.
pub(crate) fn expected(dev: &Device, booted: Slot, attempts: u32) -> Result<BootState, String> {
    let good = |s: Slot| dev.slots[s.index()].status == SlotStatus::Good;
    let other = booted.other();
    let mut st = BootState {
        order: Vec::new(),
        trial: None,
        left: [0, 0],
        floor: dev.floor.clone(),
    };
    let need_good = |s: Slot, why: &str| {
        if good(s) {
            Ok(())
        } else {
            Err(format!(
                "{why}, but slot {s} is recorded as {}",
                dev.slots[s.index()].status.as_str()
            ))
        }
    };
    match &dev.state {
        State::Idle => {
            need_good(booted, &format!("idle and booted from slot {booted}"))?;
            st.order.push(booted);
            if good(other) {
                st.order.push(other);
            }
        }
        State::RebootPending { next } => {
            need_good(*next, "a rollback is pending")?;
            st.order.push(*next);
        }
        State::Installing { slot, .. } | State::Installed { slot, .. } if *slot == booted => {
            return Err(format!(
                "{} into slot {slot}, which is the booted slot",
                dev.state.name()
            ))
        }
        State::Installing { .. } => {
            need_good(booted, "installing")?;
            st.order.push(booted);
        }
        State::Installed { slot, .. } => {
            need_good(booted, "installed")?;
            st.order = vec![*slot, booted];
            st.trial = Some(*slot);
            st.left[slot.index()] = attempts;
        }
        State::Trial { slot, .. } if *slot != booted => {
            return Err(format!(
                "on trial in slot {slot}, booted from slot {booted}"
            ))
        }
        State::Trial { slot, .. } => {
            st.order.push(*slot);
            if good(other) {
                st.order.push(other);
            }
            st.trial = Some(*slot);
        }
    }
    Ok(st)
}
