//! Header, signature block and manifest parsing of a bundle, unverified and
//! with a keyring: never a panic, never an allocation past the limits.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ferry::bundle::reader::open(&mut &data[..], None);
    let key = ferry::bundle::SecretKey::from_seed("fuzz", [7; 32]);
    let ring = ferry::bundle::Keyring::new(vec![key.public()], 1);
    let _ = ferry::bundle::reader::open(&mut &data[..], Some(&ring));
    let _ = ferry::bundle::Manifest::parse(data);
    let _ = ferry::bundle::zframe::parse(data);
});
