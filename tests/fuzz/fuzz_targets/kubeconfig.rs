//! Kubeconfigs (YAML block, flow and JSON styles, as kubectl accepts them),
//! k3OS config.yaml conversion, and Prometheus alert replies: the parsers
//! never panic, and a YAML document that loads is always a JSON value.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = ferry::kube::kubeconfig::parse(&text, std::path::Path::new("/nonexistent"));
    if let Ok(doc) = ferry::yaml::parse(&text) {
        let _ = ferry::settings::from_k3os(&doc);
        let _ = ferry::kube::alerts::firing(&doc, &["Watchdog".to_string()]);
    }
});
