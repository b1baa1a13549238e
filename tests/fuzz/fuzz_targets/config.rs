//! Board files, device configuration, node provisioning files, GPT tables.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(b) = ferry::board::Board::parse(&text, "fuzz") {
        let _ = b.layout();
    }
    let _ = ferry::io::config::Config::parse(&text, std::path::Path::new("fuzz"));
    let _ = ferry::io::config::slot_from_cmdline(&text);
    if let Ok(n) = toml::from_str::<ferry::io::provision::NodeConfig>(&text) {
        let _ = n.validate();
    }
    let _ = ferry::board::gpt::parse(data);
    // the device record: one copy, and the choice between two
    if let Ok((g, d)) = ferry::update::persist::Device::decode_copy(data) {
        // what decodes re-encodes and decodes to the same record
        let (g2, d2) = ferry::update::persist::Device::decode_copy(&d.encode_copy(g))
            .expect("a decoded record re-encodes");
        assert_eq!((g, &d), (g2, &d2));
    }
    let half = data.len() / 2;
    let _ = ferry::update::persist::pick([Some(&data[..half]), Some(&data[half..])]);
    let _ = ferry::net::url::Url::parse(&text);
    let _ = ferry::daemon::window::parse(&text);
});
