//! Fault injection for power-cut and storage-fault tests, compiled in with
//! the `fault-hooks` feature (the host build, the QEMU suite's device build)
//! and inert unless the variable is set: `FERRY_CRASH_AT=N` aborts the process (no unwinding, no
//! cleanup: a power cut) at the N-th durable write; `FERRY_EIO_AT=N` fails the
//! N-th and later disk writes with EIO (a dying card); `FERRY_READ_EIO_AT=N`
//! fails the N-th and later read-back reads with EIO; `FERRY_CORRUPT_WRITE=N`
//! stores the N-th written block with one bit flipped (a card that keeps
//! other bits than it acknowledged), which read-back must catch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// A counter armed by an environment variable.
struct Trigger {
    var: &'static str,
    count: AtomicU64,
    limit: OnceLock<Option<u64>>,
}

impl Trigger {
    const fn new(var: &'static str) -> Trigger {
        Trigger {
            var,
            count: AtomicU64::new(0),
            limit: OnceLock::new(),
        }
    }

    /// Count one event; `Some((n, limit))` when armed.
    fn tick(&self) -> Option<(u64, u64)> {
        if !cfg!(feature = "fault-hooks") {
            return None;
        }
        let limit = (*self
            .limit
            .get_or_init(|| std::env::var(self.var).ok().and_then(|v| v.parse().ok())))?;
        Some((self.count.fetch_add(1, Ordering::SeqCst) + 1, limit))
    }
}

static CRASH: Trigger = Trigger::new("FERRY_CRASH_AT");
static EIO: Trigger = Trigger::new("FERRY_EIO_AT");
static CORRUPT: Trigger = Trigger::new("FERRY_CORRUPT_WRITE");
static READ_EIO: Trigger = Trigger::new("FERRY_READ_EIO_AT");

static TRACE: Trigger = Trigger::new("FERRY_FAULT_TRACE");

/// Mark a durable write about to happen; `what` names it in the crash line.
/// With `FERRY_FAULT_TRACE=1`, every point is printed with the number
/// `FERRY_CRASH_AT` would cut at (a test finds a named point this way).
pub(crate) fn point(what: &str) {
    if let Some((n, _)) = TRACE.tick() {
        eprintln!("ferry: fault point {n}: {what}");
    }
    if let Some((n, l)) = CRASH.tick() {
        if n == l {
            eprintln!("ferry: FERRY_CRASH_AT={l}: simulated power cut before {what}");
            std::process::abort();
        }
    }
}

/// The error a disk write should fail with, if any.
pub(crate) fn eio() -> Option<std::io::Error> {
    EIO.tick()
        .filter(|(n, l)| n >= l)
        .map(|_| std::io::Error::from_raw_os_error(5))
}

/// The error a read-back read should fail with, if any.
pub(crate) fn read_eio() -> Option<std::io::Error> {
    READ_EIO
        .tick()
        .filter(|(n, l)| n >= l)
        .map(|_| std::io::Error::from_raw_os_error(5))
}

/// The bytes a write should store instead of `buf`, if any.
pub(crate) fn corrupt(buf: &[u8]) -> Option<Vec<u8>> {
    CORRUPT
        .tick()
        .filter(|(n, l)| n == l && !buf.is_empty())
        .map(|_| {
            let mut v = buf.to_vec();
            let i = v.len() / 2;
            v[i] ^= 0x04;
            v
        })
}
