//! The control socket's decoder: whatever a line holds, it yields a request
//! or an error response, and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        match geowall::control::proto::decode(line) {
            Ok(request) => {
                // What decodes must encode again.
                let _ = serde_json::to_string(&geowall::control::proto::RequestEnvelope {
                    v: geowall::control::proto::VERSION,
                    request,
                })
                .expect("a decoded request encodes");
            }
            Err(response) => assert!(!response.ok && response.error.is_some()),
        }
    }
});
