//! GRUB environment blocks and Raspberry Pi autoboot.txt.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(vars) = ferry::board::grubenv::decode(data) {
        let _ = ferry::board::bootenv::BootState::from_vars(&vars);
        if let Ok(b) = ferry::board::grubenv::encode(&vars) {
            assert_eq!(ferry::board::grubenv::decode(&b).ok(), Some(vars));
        }
    }
    let text = String::from_utf8_lossy(data);
    let _ = ferry::board::rpi::decode(&text, |n| match n {
        2 => Some(ferry::board::Slot::A),
        3 => Some(ferry::board::Slot::B),
        _ => None,
    });
});
