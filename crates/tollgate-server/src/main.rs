use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tollgate_server::cli::{Cli, Command, LogFormat, RunArgs};
use tollgate_server::server;

// mimalloc instead of glibc malloc: a decision allocates a few small short-lived blocks (body ids,
// response, headers) and glibc's malloc/free/consolidate were ~14% of the server's CPU under wrk.
// Measured with scripts/bench-http; see the README's Performance section.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => match server::read_config_file(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e:#}");
                std::process::ExitCode::from(1)
            }
        },
        Some(Command::Probe { url }) => match tollgate_server::probe::get_ok(&url) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tollgate probe: {e}");
                std::process::ExitCode::from(1)
            }
        },
        None => {
            init_logging(cli.run.log_format);
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("tollgate: cannot start the async runtime: {e}");
                    return std::process::ExitCode::from(1);
                }
            };
            match rt.block_on(serve(cli.run)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tollgate: {e:#}");
                    std::process::ExitCode::from(1)
                }
            }
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Shortest admin token accepted on a listener reachable from the network.
const MIN_PUBLIC_ADMIN_TOKEN_LEN: usize = 16;

async fn serve(args: RunArgs) -> anyhow::Result<()> {
    if args.admin_token.is_none() && !args.listen.ip().is_loopback() && !args.insecure_admin {
        anyhow::bail!(
            "refusing to listen on non-loopback address {} without --admin-token (anyone could change limits); set a token or pass --insecure-admin",
            args.listen
        );
    }
    if let Some(token) = &args.admin_token {
        // A token no client could send would lock every operator out.
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            anyhow::bail!(
                "--admin-token must be non-empty printable ASCII without spaces (it is sent as 'Authorization: Bearer <token>')"
            );
        }
        // Loopback-only listeners keep accepting short tokens (local tooling, tests); anything
        // reachable from the network needs one that cannot be guessed in a few requests.
        if !args.listen.ip().is_loopback() && token.len() < MIN_PUBLIC_ADMIN_TOKEN_LEN {
            anyhow::bail!(
                "--admin-token must be at least {MIN_PUBLIC_ADMIN_TOKEN_LEN} characters when listening on non-loopback address {} (got {}); generate one with e.g. `openssl rand -hex 32`",
                args.listen,
                token.len()
            );
        }
    }
    // try_from: a huge value (1e30) would make Duration::from_secs_f64 panic.
    let grace = Duration::try_from_secs_f64(args.shutdown_grace).map_err(|_| {
        anyhow::anyhow!(
            "--shutdown-grace must be a non-negative number of seconds, got {}",
            args.shutdown_grace
        )
    })?;
    let mut service = server::build(&args).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr().unwrap_or(args.listen);
    if let Some(rls_addr) = args.rls_listen.0 {
        // RLS calls carry no credentials, so they would bypass tenant keys from anywhere else.
        if args.decision_auth == tollgate_server::cli::DecisionAuth::TenantKeys
            && !rls_addr.ip().is_loopback()
        {
            anyhow::bail!(
                "--rls-listen {rls_addr} is not a loopback address, but RLS calls carry no tenant key and --decision-auth tenant-keys is set; bind RLS to loopback (e.g. an Envoy sidecar) or pass --rls-listen off"
            );
        }
        let rls = tokio::net::TcpListener::bind(rls_addr)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {rls_addr} for Envoy RLS (--rls-listen; `off` disables it)"
                )
            })?;
        let rls_addr = rls.local_addr().unwrap_or(rls_addr);
        tracing::info!(addr = %rls_addr, api = "rls", "Envoy RLS (gRPC) listening");
        service.rls = Some(rls);
    }
    tollgate_server::startup_log::log(&args, addr);
    server::run(listener, service, server::shutdown_signal(), grace).await
}
