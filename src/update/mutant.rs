//! Mutation switches for the model check (`tests/model.rs`): each one
//! reverts one of the safety fixes, so the check can show that it finds the
//! bug that fix closed. Compiled in only with the `model-mutants` feature
//! (never in a shipped build: there `active` is a constant `false`).
//!
//! Never does: files, clocks, threads, processes, network.

/// One reverted fix, named after the sequence it let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutant {
    /// A rollback goes straight to `idle`: installs and rollbacks are
    /// accepted before the reboot that carries it out.
    RollbackWindow,
    /// The resume point is not bound to its release, and payloads written
    /// by an earlier run are not read back before arming.
    StaleResume,
    /// Restarting or failing an install does not take the slot out of the
    /// boot order, and the env is not reconciled with the record on open.
    ArmingWindow,
    /// An unreadable env is taken as the default (order A), and a boot state
    /// with no bootable slot may be written.
    EnvDefault,
    /// A bundle that fills only some of the slot's partitions is accepted.
    PartialBundle,
    /// The record is kept as one copy.
    SingleRecord,
}

#[cfg(feature = "model-mutants")]
thread_local! {
    static ON: std::cell::Cell<Option<Mutant>> = const { std::cell::Cell::new(None) };
}

/// Whether `m` is switched on (on this thread).
#[inline]
pub(crate) fn active(m: Mutant) -> bool {
    #[cfg(feature = "model-mutants")]
    {
        ON.with(|c| c.get() == Some(m))
    }
    #[cfg(not(feature = "model-mutants"))]
    {
        let _ = m;
        false
    }
}

/// Switch one mutant on (or all off) for this thread.
#[cfg(feature = "model-mutants")]
pub fn set(m: Option<Mutant>) {
    ON.with(|c| c.set(m));
}
