//! Any bytes: decoding a session message never panics, and whatever decodes re-encodes to the
//! same bytes (canonical encoding).
#![no_main]

use hushwire::proto::Codec;
use hushwire::wire::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::from_bytes(data) {
        assert_eq!(message.to_bytes(), data, "non-canonical encoding accepted");
    }
});
