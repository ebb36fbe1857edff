//! Raw requests on a QUIC connection, for tests that must control every byte a peer
//! sends (limits, malformed frames).
#![allow(dead_code)] // not every test file uses every helper

use std::net::SocketAddr;

use kakera_net::{QuicLimits, TlsFiles, TlsMaterial};
use kakera_proto::frame::{DEFAULT_MAX_FRAME_BYTES, read_frame, write_frame, write_trailer};
use kakera_proto::{ErrorKind, RecordId, Request, RequestEnvelope, RequestId, Response, StageItem};

/// A raw QUIC connection to the node `server_name` at `addr` under `files`.
pub async fn connect(files: &TlsFiles, addr: SocketAddr, server_name: &str) -> quinn::Connection {
    let tls = TlsMaterial::load(files).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(tls.client_config(QuicLimits::default()).unwrap());
    endpoint.connect(addr, server_name).unwrap().await.unwrap()
}

pub fn envelope(body: Request) -> RequestEnvelope {
    RequestEnvelope {
        cluster_id: "proc-test".into(),
        request_id: RequestId([9; 16]),
        body,
    }
}

/// One request on its own stream of `conn`, with `trailer` bytes after it.
pub async fn ask_on(
    conn: &quinn::Connection,
    body: Request,
    trailer: &[u8],
) -> Result<Response, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    // A refused request is answered without reading the trailer, a busy one without
    // reading the envelope either (the node stops the stream): read the answer
    // whether or not the writes went through.
    let wrote = match write_frame(&mut send, &envelope(body), DEFAULT_MAX_FRAME_BYTES).await {
        Ok(()) => write_trailer(&mut send, &[trailer]).await,
        Err(e) => Err(e),
    };
    if wrote.is_ok() {
        let _ = send.finish();
    }
    match read_frame::<_, Response>(&mut recv, DEFAULT_MAX_FRAME_BYTES).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => {
            Err(wrote.map_or_else(|e| e.to_string(), |()| "closed without an answer".into()))
        }
        Err(e) => Err(wrote.err().unwrap_or(e).to_string()),
    }
}

/// Sends `bytes` as they are on a new stream of `conn` and reads one answer frame.
pub async fn send_bytes(conn: &quinn::Connection, bytes: &[u8]) -> Result<Response, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    match read_frame::<_, Response>(&mut recv, DEFAULT_MAX_FRAME_BYTES).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err("closed without an answer".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A staging request for `items` and the share bytes that follow it.
pub fn stage_request(items: &[(RecordId, Vec<u8>)]) -> (Request, Vec<u8>) {
    let request = Request::StageShares {
        items: items
            .iter()
            .map(|(record, share)| StageItem {
                record: *record,
                size_bytes: share.len() as u64,
            })
            .collect(),
    };
    (request, items.iter().flat_map(|(_, s)| s.clone()).collect())
}

/// The message of a refusal of one of `kinds`; panics naming `what` otherwise.
pub fn refused(r: &Result<Response, String>, kinds: &[ErrorKind], what: &str) -> String {
    match r {
        Ok(Response::Error(e)) if kinds.contains(&e.kind) => e.message.clone(),
        other => panic!("{what}: expected a refusal ({kinds:?}), got {other:?}"),
    }
}
