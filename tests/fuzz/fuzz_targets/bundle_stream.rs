//! The whole streaming pipeline (read + hash, zstd, digest sink) on
//! arbitrary bytes opened without a keyring: errors only, no panics, and
//! memory bounded by the manifest limits.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = &data[..];
    if let Ok(b) = ferry::bundle::reader::open(&mut r, None) {
        let mut sink = ferry::bundle::reader::DigestSink::default();
        let _ = ferry::bundle::reader::stream(r, &b, Default::default(), true, &mut sink);
    }
});
