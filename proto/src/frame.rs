//! Length-prefixed frames on a byte stream (one QUIC stream per request): a 4-byte
//! big-endian length, then that many bytes of a codec-encoded message. The reader
//! checks the length against a limit before allocating.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec;
use crate::error::{ProtoError, Result};

/// Default hard limit on one frame: 16 MiB (shares of larger records travel in
/// several frames).
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 16 * 1024 * 1024;

/// Encodes `msg` and writes it as one frame. Refuses messages over `max_frame_bytes`.
pub async fn write_frame<W, T>(w: &mut W, msg: &T, max_frame_bytes: u32) -> Result<()>
where
    W: AsyncWrite + Unpin,
    T: Serialize + ?Sized,
{
    let body = codec::encode(msg)?;
    write_raw_frame(w, &body, max_frame_bytes).await
}

/// Writes already-encoded bytes as one frame.
pub async fn write_raw_frame<W>(w: &mut W, body: &[u8], max_frame_bytes: u32) -> Result<()>
where
    W: AsyncWrite + Unpin,
{
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&l| l <= max_frame_bytes)
        .ok_or(ProtoError::TooLarge {
            size_bytes: body.len() as u64,
            limit_bytes: max_frame_bytes.into(),
        })?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(body).await?;
    Ok(())
}

/// Reads one frame's bytes. Returns `Ok(None)` on a clean end of stream before a frame
/// starts; [`ProtoError::Truncated`] if it ends inside one.
pub async fn read_raw_frame<R>(r: &mut R, max_frame_bytes: u32) -> Result<Option<Vec<u8>>>
where
    R: AsyncRead + Unpin,
{
    match read_frame_len(r, max_frame_bytes).await? {
        Some(len) => read_frame_body(r, len).await.map(Some),
        None => Ok(None),
    }
}

/// Reads a frame's 4-byte length prefix and checks it against `max_frame_bytes`:
/// `Ok(None)` on a clean end of stream before it. A reader that accounts for memory
/// reserves the length before it reads the body ([`read_frame_body`]).
pub async fn read_frame_len<R>(r: &mut R, max_frame_bytes: u32) -> Result<Option<u32>>
where
    R: AsyncRead + Unpin,
{
    let mut len_bytes = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len_bytes[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(ProtoError::Truncated)
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(len_bytes);
    if len > max_frame_bytes {
        return Err(ProtoError::TooLarge {
            size_bytes: len.into(),
            limit_bytes: max_frame_bytes.into(),
        });
    }
    Ok(Some(len))
}

/// Memory a frame body starts with; it grows with the bytes that arrive.
const FIRST_BODY_BYTES: usize = 64 * 1024;

/// Reads a frame body of `len` bytes (checked by [`read_frame_len`]). The buffer
/// grows with the bytes that arrive, never to an announced length up front: a peer
/// that announces 16 MiB and sends nothing holds 64 KiB.
pub async fn read_frame_body<R>(r: &mut R, len: u32) -> Result<Vec<u8>>
where
    R: AsyncRead + Unpin,
{
    let len = u64::from(len);
    let mut body = Vec::with_capacity((len as usize).min(FIRST_BODY_BYTES));
    r.take(len).read_to_end(&mut body).await?;
    if body.len() as u64 != len {
        return Err(ProtoError::Truncated);
    }
    Ok(body)
}

/// Reads and decodes one frame; `Ok(None)` on a clean end of stream.
pub async fn read_frame<R, T>(r: &mut R, max_frame_bytes: u32) -> Result<Option<T>>
where
    R: AsyncRead + Unpin,
    T: serde::Serialize + DeserializeOwned,
{
    match read_raw_frame(r, max_frame_bytes).await? {
        Some(body) => codec::decode(&body).map(Some),
        None => Ok(None),
    }
}

/// Size of the raw frames a trailer (share bytes, snapshot data) is cut into.
pub const TRAILER_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// [`TRAILER_CHUNK_BYTES`] as the frame limit readers of a trailer pass (a trailer's
/// total is bounded by the size its request announced, not by the envelope limit).
pub const TRAILER_FRAME_BYTES: u32 = TRAILER_CHUNK_BYTES as u32;

/// Writes `parts`, one after the other, as raw frames of at most
/// [`TRAILER_CHUNK_BYTES`]: the reader sees their concatenation, and the writer
/// never has to copy them into one buffer first.
pub async fn write_trailer<W>(w: &mut W, parts: &[&[u8]]) -> Result<()>
where
    W: AsyncWrite + Unpin,
{
    for part in parts {
        for chunk in part.chunks(TRAILER_CHUNK_BYTES) {
            // A chunk is at most 4 MiB, below any sane frame limit.
            write_raw_frame(w, chunk, TRAILER_CHUNK_BYTES as u32).await?;
        }
    }
    Ok(())
}

/// Most bytes a reader reserves ahead of the frames that fill them
/// ([`read_frame_into`]).
pub const MAX_RESERVE_AHEAD_BYTES: u64 = 64 * 1024 * 1024;

/// Reads one raw frame and appends its body to `dest`, straight from the stream
/// (no intermediate buffer). Returns `Ok(None)` on a clean end of stream before a
/// frame, else the body's length (0 for an empty frame). Refuses a frame that would
/// take `dest` past `limit_bytes`. Once the length has arrived, `dest` reserves room
/// for up to `expected_bytes` in all (at most [`MAX_RESERVE_AHEAD_BYTES`] more), so
/// a trailer whose size its caller already accounted for grows without copying
/// itself.
pub async fn read_frame_into<R>(
    r: &mut R,
    dest: &mut Vec<u8>,
    max_frame_bytes: u32,
    limit_bytes: u64,
    expected_bytes: u64,
) -> Result<Option<usize>>
where
    R: AsyncRead + Unpin,
{
    let Some(len) = read_frame_len(r, max_frame_bytes).await? else {
        return Ok(None);
    };
    let len = u64::from(len);
    let have = dest.len() as u64;
    if have + len > limit_bytes {
        return Err(ProtoError::Malformed {
            reason: format!("more than the expected {limit_bytes} bytes followed"),
        });
    }
    let want = expected_bytes.max(have + len).min(limit_bytes);
    let ahead = want.saturating_sub(have).min(MAX_RESERVE_AHEAD_BYTES);
    dest.reserve(ahead as usize);
    let got = r.take(len).read_to_end(dest).await?;
    if got as u64 != len {
        return Err(ProtoError::Truncated);
    }
    Ok(Some(got))
}

/// Reads raw frames until exactly `size_bytes` have arrived (announced earlier on the
/// same stream). Refuses a trailer that ends early or runs past the announced size.
pub async fn read_trailer<R>(r: &mut R, size_bytes: u64, max_frame_bytes: u32) -> Result<Vec<u8>>
where
    R: AsyncRead + Unpin,
{
    // Memory is reserved once the first frame's length has arrived, for the size
    // the caller announced and accounted for (`read_frame_into`); each byte is
    // copied once, from the stream into `data`.
    let mut data = Vec::new();
    // Bounded: each frame adds at least one byte or ends the loop.
    while (data.len() as u64) < size_bytes {
        match read_frame_into(r, &mut data, max_frame_bytes, size_bytes, size_bytes).await? {
            Some(n) if n > 0 => {}
            _ => return Err(ProtoError::Truncated),
        }
    }
    Ok(data)
}
