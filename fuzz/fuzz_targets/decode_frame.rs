//! The inbound decoder on arbitrary bytes: it must never panic, and whatever it
//! accepts must serialize back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runware_ws::protocol::{SharedStr, decode_frame};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(frame) = decode_frame(&SharedStr::from(text)) {
        for item in &frame.items {
            let _ = serde_json::to_string(item);
            let _ = item.result_key();
        }
        for e in &frame.errors {
            let _ = e.kind();
        }
    }
});
