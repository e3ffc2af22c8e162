//! Arbitrary bytes as a control-socket line: parsing must never panic.
#![no_main]
use dataplane::api::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = serde_json::from_str::<Request>(s);
        let _ = dataplane::config::Config::from_toml(s);
    }
});
