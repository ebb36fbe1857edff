//! Frame decoding (what a node reads first from any peer) never panics, never reads
//! past the limits it is given, and a frame that decodes re-encodes to the bytes read.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use kakera_proto::RequestEnvelope;
use kakera_proto::frame::{read_frame, read_raw_frame, read_trailer, write_frame};
use libfuzzer_sys::fuzz_target;

const LIMIT_BYTES: u32 = 1 << 20;

/// Runs a future over in-memory readers: slices are always ready, so one poll ends it.
fn ready<T>(f: impl Future<Output = T>) -> T {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an in-memory read never waits"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    if let Ok(Some(env)) = ready(read_frame::<_, RequestEnvelope>(&mut r, LIMIT_BYTES)) {
        let used = data.len() - r.len();
        let mut again = Vec::new();
        ready(write_frame(&mut again, &env, LIMIT_BYTES)).expect("a decoded envelope encodes");
        assert_eq!(again, &data[..used], "frame decode/encode must round-trip");
    }
    let mut r = data;
    if let Ok(Some(body)) = ready(read_raw_frame(&mut r, LIMIT_BYTES)) {
        assert!(body.len() <= LIMIT_BYTES as usize);
    }
    // A trailer announced by the first two bytes, read from the rest.
    if let [a, b, rest @ ..] = data {
        let announced = u64::from(u16::from_be_bytes([*a, *b]));
        let mut r = rest;
        if let Ok(t) = ready(read_trailer(&mut r, announced, LIMIT_BYTES)) {
            assert_eq!(
                t.len() as u64,
                announced,
                "a trailer is exactly its announced size"
            );
        }
    }
});
