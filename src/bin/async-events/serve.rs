//! `async-events serve`: the lake over Flight SQL.

use datafusion_async_events::Lake;
use datafusion_async_events::provider::ScanOptions;
use datafusion_async_events::server::{AsyncEventsFlightSql, ServerOptions, Spill};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

type Failure = Box<dyn std::error::Error>;

/// Environment variable holding the bearer token (instead of `--token-file`).
const TOKEN_VAR: &str = "ASYNC_EVENTS_TOKEN";

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the address is printed).
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
    /// File holding the bearer token every call must carry (`authorization: Bearer <token>`);
    /// default: the ASYNC_EVENTS_TOKEN environment variable, else no token.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Allow listening on a non-loopback address without a token.
    #[arg(long)]
    insecure: bool,
    /// Queries running at once; more wait for a slot, up to --queue-timeout.
    #[arg(long, default_value_t = 8)]
    max_concurrent_queries: usize,
    /// Seconds a query waits for a slot before failing with ResourceExhausted.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    queue_timeout: f64,
    /// Memory of all queries together, in MiB (0: unlimited): DataFusion's sorts, joins and
    /// aggregates, blocks in flight, span maps and metadata listings; a query that cannot get
    /// what it needs fails with ResourceExhausted.
    #[arg(long, value_name = "MB", default_value_t = 4096)]
    memory_mb: usize,
    /// The most one query may take of --memory-mb, in MiB (0: all of it).
    #[arg(long, value_name = "MB", default_value_t = 1024)]
    query_memory_mb: usize,
    /// Seconds a query may run, from arrival to last batch (0: no limit); the client's own
    /// gRPC deadline applies when nearer. Past it the query is cancelled (DeadlineExceeded).
    #[arg(long, value_name = "SECONDS", default_value_t = 300.0)]
    query_timeout: f64,
    /// Seconds a client may leave a batch unread before its query is cancelled (0: no limit).
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    idle_timeout: f64,
    /// Folder where sorts and aggregates that outgrow their memory spill; without it nothing
    /// spills and such a query fails with ResourceExhausted.
    #[arg(long, value_name = "PATH")]
    spill_dir: Option<PathBuf>,
    /// The most disk all spill files may take, in MiB (with --spill-dir).
    #[arg(
        long,
        value_name = "MB",
        default_value_t = 10240,
        requires = "spill_dir"
    )]
    max_spill_mb: u64,
    /// Compile stream layouts for each request instead of keeping them across requests (to
    /// measure what the cache saves; slower).
    #[arg(long)]
    no_layout_cache: bool,
}

/// The value of option `--name` in seconds.
fn seconds(name: &str, seconds: f64) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("--{name} {seconds}: not a number of seconds").into())
}

/// `seconds` as an optional limit (0: none).
fn limit(name: &str, value: f64) -> Result<Option<Duration>, Failure> {
    if value == 0.0 {
        return Ok(None);
    }
    seconds(name, value).map(Some)
}

/// `megabytes` in bytes (0: none).
fn megabytes(megabytes: usize) -> Option<usize> {
    (megabytes > 0).then(|| megabytes.saturating_mul(1024 * 1024))
}

/// Refuses a token file that others than its owner may read.
fn check_private(path: &std::path::Path) -> Result<(), Failure> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("--token-file {}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "--token-file {}: readable by others than its owner (mode {:o}); run chmod 600 on it",
                path.display(),
                mode & 0o777
            )
            .into());
        }
    }
    Ok(())
}

fn token(args: &ServeArgs) -> Result<Option<String>, Failure> {
    let token = match &args.token_file {
        Some(path) => {
            check_private(path)?;
            Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("--token-file {}: {e}", path.display()))?,
            )
        }
        None => std::env::var(TOKEN_VAR).ok(),
    };
    match token.map(|t| t.trim().to_owned()) {
        Some(t) if t.is_empty() => Err("the token is empty".into()),
        Some(t) if t.chars().any(|c| !c.is_ascii_graphic()) => {
            Err("the token must be printable ASCII without spaces".into())
        }
        other => Ok(other),
    }
}

pub async fn run(lake: Lake, scan: ScanOptions, args: ServeArgs) -> Result<(), Failure> {
    let token = token(&args)?;
    if token.is_none() && !args.addr.ip().is_loopback() && !args.insecure {
        return Err(format!(
            "refusing to serve {} without a token: pass --token-file (or set {TOKEN_VAR}), or --insecure",
            args.addr
        )
        .into());
    }
    if token.is_none() && !args.addr.ip().is_loopback() {
        eprintln!(
            "warning: --insecure: anyone who can reach {} can read the lake without a token",
            args.addr
        );
    }
    let queue_timeout = seconds("queue-timeout", args.queue_timeout)?;
    if args.max_concurrent_queries == 0 {
        return Err("--max-concurrent-queries must be at least 1".into());
    }
    let options = ServerOptions {
        scan,
        max_concurrent_queries: args.max_concurrent_queries,
        queue_timeout,
        memory_limit: megabytes(args.memory_mb),
        query_memory: megabytes(args.query_memory_mb),
        query_timeout: limit("query-timeout", args.query_timeout)?,
        idle_timeout: limit("idle-timeout", args.idle_timeout)?,
        spill: args.spill_dir.map(|dir| Spill {
            dir,
            max_bytes: args.max_spill_mb.saturating_mul(1024 * 1024),
        }),
        token: token.clone(),
        cache_layouts: !args.no_layout_cache,
    };
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    let local = listener.local_addr()?;
    println!(
        "serving {} over Flight SQL on grpc://{local}{}",
        lake.database_url(),
        if token.is_some() {
            " (bearer token required)"
        } else {
            ""
        }
    );
    std::io::stdout().flush()?;
    AsyncEventsFlightSql::new(lake, options)?
        .serve(listener, shutdown_signal())
        .await?;
    println!("stopped");
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
