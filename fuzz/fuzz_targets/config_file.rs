#![no_main]

use libfuzzer_sys::fuzz_target;

// The config file parser (`src/config_file.rs`) takes text an operator wrote, on start and on
// every SIGHUP: no input may panic it (a bad file must end the reload with a message, never the
// process), and an error is one line that names the file.
fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(message) = socksloop::config_file::parse(text, "fuzz.toml") {
        assert!(message.starts_with("fuzz.toml"), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }
});
