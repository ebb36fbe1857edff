//! Every message type a peer or a file can hand kakera decodes without panicking;
//! whatever decodes re-encodes to the same bytes (no two encodings of one value).
#![no_main]

use kakera_proto::audit::AuditEntry;
use kakera_proto::catalog::{Grant, RecordEntry, Ticket};
use kakera_proto::{Request, RequestEnvelope, Response, codec};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(value) = codec::decode::<T>(bytes) {
        let again = codec::encode(&value).expect("a decoded value encodes");
        assert_eq!(again, bytes, "decode/encode must round-trip");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 7 {
        0 => round_trip::<RequestEnvelope>(bytes),
        1 => round_trip::<Request>(bytes),
        2 => round_trip::<Response>(bytes),
        3 => round_trip::<RecordEntry>(bytes),
        4 => round_trip::<Grant>(bytes),
        5 => round_trip::<Ticket>(bytes),
        _ => round_trip::<AuditEntry>(bytes),
    }
});
