//! Share decoding never panics, and whatever decodes re-encodes to the same bytes.
#![no_main]

use kakera_shamir::Share;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(share) = Share::decode(data) {
        assert_eq!(share.encode(), data, "decode/encode must round-trip");
    }
});
