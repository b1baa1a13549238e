//! Feed index and signature file parsing and verification.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = ferry::bundle::SecretKey::from_seed("fuzz", [7; 32]);
    let ring = ferry::bundle::Keyring::new(vec![key.public()], 1);
    let (idx, sig) = data.split_at(data.len() / 2);
    let sig = String::from_utf8_lossy(sig);
    let _ = ferry::feed::verify(idx, &sig, &ring, "stable", 100, Some(1));
    // also with a valid signature over arbitrary bytes: exercises the JSON rules
    let good = ferry::feed::encode_sigs(&[key.sign(ferry::bundle::keys::Context::Feed, data)]);
    let _ = ferry::feed::verify(data, &good, &ring, "stable", 100, Some(1));
    let _ = ferry::feed::parse_sigs(&String::from_utf8_lossy(data));
});
