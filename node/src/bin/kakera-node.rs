//! `kakera-node --config FILE --node ID`: runs one storage node until SIGTERM or
//! SIGINT. Logs go to stderr, filtered by RUST_LOG (default `info`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kakera_config::ClusterConfig;
use kakera_net::TlsFiles;
use kakera_node::daemon::{self, NodeOptions};

/// jemalloc keeps freed pages for reuse: the data path allocates share-sized buffers
/// (up to 64 MiB) per request, which glibc's malloc maps and zeroes afresh every time
/// (a quarter of the CPU in the 16 MiB profile; docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A kakera storage node.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Examples:\n  kakera-node --config cluster.toml --node 1\n  \
                  kakera-node --config cluster.toml --node 1 --restore-from /var/backups/kakera/2026-11-21\n\n\
                  Exit codes: 0 stopped cleanly or restored, 1 failed (the log says why), 2 usage."
)]
struct Args {
    /// The cluster config file.
    #[arg(long)]
    config: PathBuf,
    /// This node's id in the config.
    #[arg(long)]
    node: u64,
    /// Certificate (PEM); default `<data_dir>/node.crt.pem`.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Private key (PEM); default `<data_dir>/node.key.pem`.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Bind here instead of the node's config address, which peers and clients keep
    /// using (for a node behind a NAT or a proxy), e.g. 10.0.0.5:7101.
    #[arg(long, conflicts_with = "restore_from")]
    listen: Option<std::net::SocketAddr>,
    /// Restore this node's data directory from its part of a backup (the directory
    /// `kakera backup` wrote, `<[backup] root>/<dir>`), print what was restored as
    /// JSON, and exit without starting. Run it on every node of the new cluster
    /// before starting any.
    #[arg(long, value_name = "BACKUP_DIR")]
    restore_from: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let (config, text) = ClusterConfig::load_with_text(&args.config).map_err(|e| e.to_string())?;
    if let Some(from) = &args.restore_from {
        let report = kakera_node::backup::restore(&config, args.node, from)
            .await
            .map_err(|e| e.to_string())?;
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), "{json}").map_err(|e| e.to_string())?;
        tracing::info!(member = %report.member, shares = report.shares, "restored");
        return Ok(());
    }
    let node = config
        .node(args.node)
        .ok_or_else(|| format!("node {} is not in {}", args.node, args.config.display()))?;
    let defaults = NodeOptions::default_tls(&config, node);
    let tls = TlsFiles {
        ca: defaults.ca,
        cert: args.cert.unwrap_or(defaults.cert),
        key: args.key.unwrap_or(defaults.key),
    };
    let opts = NodeOptions {
        config_digest: *blake3::hash(text.as_bytes()).as_bytes(),
        config,
        node_id: args.node,
        tls,
        listen: args.listen,
    };
    let handle = daemon::start(opts).await.map_err(|e| e.to_string())?;
    wait_for_signal().await?;
    tracing::info!("signal received: shutting down");
    handle.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
