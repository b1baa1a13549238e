//! U-Boot environment images (single and redundant) and the boot state in them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ferry::board::ubootenv;

fuzz_target!(|data: &[u8]| {
    for red in [false, true] {
        if let Some((vars, flag)) = ubootenv::decode(data, red) {
            let _ = ferry::board::bootenv::BootState::from_vars(&vars);
            // what decodes must encode and decode to the same vars
            if let Ok(img) = ubootenv::encode(&vars, data.len(), red, flag) {
                assert_eq!(ubootenv::decode(&img, red).map(|v| v.0), Some(vars));
            }
        }
    }
    let half = data.len() / 2;
    let _ = ubootenv::pick([ubootenv::decode(&data[..half], true), ubootenv::decode(&data[half..], true)]);
});
