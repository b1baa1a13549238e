//! Crash points for power-cut tests: with `FERRY_CRASH_AT=N` in the
//! environment, the process aborts (no unwinding, no cleanup, like a power
//! cut) when it reaches the N-th durable write of the run. Inert otherwise.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static COUNT: AtomicU64 = AtomicU64::new(0);

fn limit() -> Option<u64> {
    static L: OnceLock<Option<u64>> = OnceLock::new();
    *L.get_or_init(|| {
        std::env::var("FERRY_CRASH_AT")
            .ok()
            .and_then(|v| v.parse().ok())
    })
}

/// Mark a durable write about to happen; `what` names it in the crash line.
pub fn point(what: &str) {
    if let Some(l) = limit() {
        let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
        if n == l {
            eprintln!("ferry: FERRY_CRASH_AT={l}: simulated power cut before {what}");
            std::process::abort();
        }
    }
}

/// With `FERRY_CORRUPT_WRITE=N`, the N-th data block written to a target is
/// stored with one bit flipped, like a card that acknowledges a write and
/// keeps other bits. Read-back verification must catch it.
pub fn corrupt(buf: &[u8]) -> Option<Vec<u8>> {
    static N: AtomicU64 = AtomicU64::new(0);
    static L: OnceLock<Option<u64>> = OnceLock::new();
    let l = (*L.get_or_init(|| {
        std::env::var("FERRY_CORRUPT_WRITE")
            .ok()
            .and_then(|v| v.parse().ok())
    }))?;
    let n = N.fetch_add(1, Ordering::SeqCst) + 1;
    if n != l || buf.is_empty() {
        return None;
    }
    let mut v = buf.to_vec();
    let i = v.len() / 2;
    v[i] ^= 0x04;
    Some(v)
}

/// With `FERRY_EIO_AT=N`, the N-th disk write fails with EIO, as a dying
/// card does. The install must fail with a clear error and the old slot boot.
pub fn eio() -> Option<std::io::Error> {
    static N: AtomicU64 = AtomicU64::new(0);
    static L: OnceLock<Option<u64>> = OnceLock::new();
    let l = (*L.get_or_init(|| {
        std::env::var("FERRY_EIO_AT")
            .ok()
            .and_then(|v| v.parse().ok())
    }))?;
    let n = N.fetch_add(1, Ordering::SeqCst) + 1;
    (n >= l).then(|| std::io::Error::from_raw_os_error(5))
}
