//! Any bytes: decoding a prekey bundle and checking its signatures never panics, and whatever
//! decodes re-encodes to the same bytes.
#![no_main]

use hushwire::proto::{Codec, PreKeyBundle};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(bundle) = PreKeyBundle::from_bytes(data) {
        let _ = bundle.verify();
        assert_eq!(bundle.to_bytes(), data, "non-canonical encoding accepted");
    }
});
