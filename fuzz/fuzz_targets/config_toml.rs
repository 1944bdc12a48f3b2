//! The TOML configuration file: never panics, and validation of whatever parsed
//! never panics either.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = tidegate::config::Config::from_toml(text) {
        let _ = cfg.validate();
    }
});
