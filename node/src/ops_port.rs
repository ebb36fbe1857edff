//! The operators' HTTP port (`metrics_addr` in the node's config entry): hyper,
//! HTTP/1.1, GET only, one exchange per connection, heads, connections and time
//! bounded, apart from the QUIC path: a scraper or a load balancer never needs a
//! cluster certificate, and a flood of scrapes never competes with requests for QUIC
//! streams.
//!
//! - `GET /metrics` — Prometheus text format ([`crate::metrics`]): requests by name
//!   and outcome, latency histograms, Raft term and indexes, shares and bytes stored
//!   (RocksDB's estimates), staged bytes, the repair queue, audit entries.
//! - `GET /healthz` — 200 while the process serves and its database answers.
//! - `GET /readyz` — 200 once the node is a member of the group, knows a leader and
//!   has applied its log to within [`crate::metrics::READY_MAX_LAG_ENTRIES`];
//!   otherwise 503 with the reasons, one per line.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response as HttpResponse, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::metrics::{MAX_COUNTED_REPAIRS, Readings};
use crate::transport::server::ServerContext;

/// Largest HTTP request head read; a longer one is answered 431. (hyper's smallest
/// read buffer: it refuses less.)
pub const MAX_HTTP_HEAD_BYTES: usize = 8 * 1024;
/// HTTP connections served at once; further ones wait in the kernel's backlog.
pub const MAX_HTTP_CONNECTIONS: usize = 16;
/// Time a client has to send its request head.
pub const HTTP_READ_TIMEOUT_MS: u64 = 5_000;
/// Time a whole exchange may take, answer included, before the connection is closed.
pub const HTTP_EXCHANGE_TIMEOUT_MS: u64 = 10_000;

/// Reads what the gauges show from the node.
fn readings(ctx: &ServerContext) -> std::io::Result<Readings> {
    let status = crate::transport::server::status(ctx);
    let progress = crate::transport::repair::lock(&ctx.view.progress).clone();
    Ok(Readings {
        raft_id: ctx.raft_id,
        raft: status.raft,
        shares: ctx.shares.estimates()?,
        staged_reserved_bytes: ctx.shares.ledger().total_bytes(),
        repair_pending: ctx.state.pending_repair_count(MAX_COUNTED_REPAIRS)?,
        repair: (progress.needed, progress.waiting, progress.done),
        audit_entries: ctx.state.audit_head()?.seq,
        usage: status.usage,
        scrub: *crate::transport::repair::lock(&ctx.view.scrub),
    })
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown` turns true.
pub async fn serve_http(
    listener: TcpListener,
    ctx: Arc<ServerContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HTTP_CONNECTIONS));
    loop {
        // Waiting for a slot before accepting keeps at most MAX_HTTP_CONNECTIONS
        // connections served; the rest queue in the listen backlog.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, ctx).await {
                            tracing::debug!(error = %e, "metrics connection failed");
                        }
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

/// One HTTP/1.1 exchange on hyper: the head must arrive within
/// [`HTTP_READ_TIMEOUT_MS`] and fit [`MAX_HTTP_HEAD_BYTES`] (hyper answers 431
/// otherwise), the body of a request is never read, the whole exchange ends within
/// [`HTTP_EXCHANGE_TIMEOUT_MS`], and the connection closes after the answer.
async fn answer(stream: TcpStream, ctx: Arc<ServerContext>) -> Result<(), hyper::Error> {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let ctx = ctx.clone();
        async move {
            let (status, content_type, body) = route(request.method(), request.uri().path(), &ctx);
            let mut out = HttpResponse::new(Full::new(Bytes::from(body)));
            *out.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let headers = out.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok::<_, std::convert::Infallible>(out)
        }
    });
    let exchange = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(HTTP_READ_TIMEOUT_MS))
        .max_buf_size(MAX_HTTP_HEAD_BYTES)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(Duration::from_millis(HTTP_EXCHANGE_TIMEOUT_MS), exchange).await {
        Ok(done) => done,
        // Too slow: dropping the connection closes it.
        Err(_) => Ok(()),
    }
}

const TEXT: &str = "text/plain; charset=utf-8";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Picks the answer for a request: (status, content type, body).
fn route(method: &Method, path: &str, ctx: &ServerContext) -> (u16, &'static str, String) {
    if method != Method::GET {
        return (405, TEXT, "only GET is served\n".into());
    }
    match path {
        "/metrics" => match readings(ctx).and_then(|r| ctx.metrics.render(&r)) {
            Ok(body) => (200, PROMETHEUS, body),
            Err(e) => {
                tracing::warn!(error = %e, "metrics could not be read");
                (500, TEXT, format!("metrics could not be read: {e}\n"))
            }
        },
        "/healthz" => match ctx.state.audit_head() {
            Ok(_) => (200, TEXT, "ok\n".into()),
            Err(e) => (
                503,
                TEXT,
                format!("the node's database does not answer: {e}\n"),
            ),
        },
        "/readyz" => {
            let raft = crate::transport::server::raft_status(ctx);
            let reasons = crate::metrics::readiness(&raft, ctx.raft_id);
            if reasons.is_empty() {
                (200, TEXT, "ready\n".into())
            } else {
                let mut body = String::from("not ready:\n");
                for r in reasons {
                    let _ = writeln!(body, "- {r}");
                }
                (503, TEXT, body)
            }
        }
        _ => (
            404,
            TEXT,
            "not found: this port serves /metrics, /healthz and /readyz\n".into(),
        ),
    }
}
