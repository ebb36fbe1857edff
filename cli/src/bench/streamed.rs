//! Records larger than `max_record_bytes` in `kakera bench` (issue 24.5: a 1 GiB
//! record put and get timed): each is put through `Client::put_stream` from a
//! generator that produces its bytes as they are read (never whole in memory) and
//! read back through `Client::get_stream` into a hasher, its BLAKE3 compared with
//! the generator's. One record per request, `concurrency` at once, as for whole
//! records; the phase is timed the same way.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use kakera_proto::{Digest, RecordId};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::stats::{Mode, Op, Phase, Shape};
use super::{JOB, bench_meta, drive, phase_of};
use crate::error::CliError;
use kakera_client::Client;

/// Bytes the generator and the reader move per step.
const STEP_BYTES: usize = 1024 * 1024;

/// Record `i` of a run: `len` bytes of the keyed BLAKE3 output stream of `i`, made
/// as they are read.
struct Generated {
    out: blake3::OutputReader,
    left: u64,
}

impl Generated {
    fn new(seed: &[u8; 32], i: u64, len: u64) -> Generated {
        let mut h = blake3::Hasher::new_keyed(seed);
        h.update(&i.to_le_bytes());
        Generated {
            out: h.finalize_xof(),
            left: len,
        }
    }
}

impl AsyncRead for Generated {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let n = usize::try_from(this.left)
            .unwrap_or(usize::MAX)
            .min(buf.remaining())
            .min(STEP_BYTES);
        let dst = buf.initialize_unfilled_to(n);
        this.out.fill(dst);
        buf.advance(n);
        this.left -= n as u64;
        Poll::Ready(Ok(()))
    }
}

/// The digest of record `i` (generated once, a step at a time, before the clock).
fn digest_of(seed: &[u8; 32], i: u64, len: u64) -> Digest {
    let mut g = Generated::new(seed, i, len);
    let mut h = blake3::Hasher::new();
    let mut step = vec![0u8; STEP_BYTES];
    let mut left = len;
    // Bounded by `len`.
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(STEP_BYTES);
        g.out.fill(&mut step[..n]);
        h.update(&step[..n]);
        left -= n as u64;
    }
    Digest(*h.finalize().as_bytes())
}

/// Puts `count` records of `size` bytes as streams; their ids and digests.
pub(super) async fn put_phase(
    client: &Arc<Client>,
    mode: Mode,
    shape: Shape,
    count: u64,
) -> Result<(Phase, Vec<(RecordId, Digest)>), CliError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| CliError::Bench(format!("the OS random source failed: {e}")))?;
    let size = shape.record_bytes;
    let mut requests = Vec::new();
    for i in 0..count {
        requests.push((Client::new_record_id()?, i, digest_of(&seed, i, size)));
    }
    let client = client.clone();
    let (elapsed_ms, latencies, results) = drive(
        shape.concurrency,
        requests,
        move |(id, i, digest): (RecordId, u64, Digest)| {
            let client = client.clone();
            async move {
                let meta = bench_meta(i)?;
                let source = Generated::new(&seed, i, size);
                match mode {
                    Mode::Sharing => client.put_stream_with_id(id, meta, source).await?,
                    #[cfg(feature = "bench-baseline")]
                    Mode::Replicas => client.put_stream_plain_replicas(id, meta, source).await?,
                    // Refused at the start of the run (BASELINE_BUILT).
                    #[cfg(not(feature = "bench-baseline"))]
                    Mode::Replicas => {
                        return Err(CliError::Invalid(
                            "no replication baseline in this build".into(),
                        ));
                    }
                };
                Ok((id, digest))
            }
        },
    )
    .await?;
    let phase = phase_of(
        Op::Put,
        mode,
        shape,
        results.len() as u64,
        elapsed_ms,
        latencies,
    )?;
    Ok((phase, results))
}

/// Reads the records back as streams, checking every byte's digest.
pub(super) async fn get_phase(
    client: &Arc<Client>,
    mode: Mode,
    shape: Shape,
    ids: &[(RecordId, Digest)],
) -> Result<Phase, CliError> {
    let client = client.clone();
    let (elapsed_ms, latencies, results) = drive(
        shape.concurrency,
        ids.to_vec(),
        move |(id, digest): (RecordId, Digest)| {
            let client = client.clone();
            async move {
                let mut stream = client.get_stream(JOB, id).await?;
                let mut h = blake3::Hasher::new();
                let mut step = vec![0u8; STEP_BYTES];
                // Bounded by the record's length: each turn reads at least a byte.
                loop {
                    let n = stream.read(&mut step).await.map_err(|e| {
                        CliError::Bench(format!("record {id} did not read back: {e}"))
                    })?;
                    if n == 0 {
                        break;
                    }
                    h.update(&step[..n]);
                }
                if Digest(*h.finalize().as_bytes()) != digest {
                    return Err(CliError::Bench(format!(
                        "record {id} read back with different bytes"
                    )));
                }
                Ok(1u64)
            }
        },
    )
    .await?;
    let records = results.iter().sum();
    phase_of(Op::Get, mode, shape, records, elapsed_ms, latencies)
}

/// The largest resident set this process has had (VmHWM), in bytes, where the OS
/// reports it.
pub(super) fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
