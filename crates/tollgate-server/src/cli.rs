//! Command-line flags; each also reads the environment variable `TOLLGATE_<FLAG>`. Boolean
//! variables accept 1/0, true/false, yes/no and on/off.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Multi-tenant rate limiter service"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a TOML configuration file and print every problem with its location.
    CheckConfig { file: PathBuf },
    /// Exit 0 if an HTTP GET of URL answers 200, else 1 (container health checks in images
    /// without curl). Plain http only.
    Probe {
        #[arg(default_value = "http://127.0.0.1:5000/livez")]
        url: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnStoreError {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UnknownTenants {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DecisionAuth {
    None,
    TenantKeys,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Address to listen on.
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,
    /// Address of the Envoy Rate Limit Service (gRPC, RLS v3) listener, or `off`.
    #[arg(
        long,
        env = "TOLLGATE_RLS_LISTEN",
        default_value = "127.0.0.1:8081",
        value_parser = parse_rls_listen
    )]
    pub rls_listen: RlsListen,
    /// Where limits are counted.
    #[arg(long, env = "TOLLGATE_STORE", value_enum, default_value = "memory")]
    pub store: StoreKind,
    /// Redis URL; repeat or comma-separate to give Redis Cluster seed nodes.
    #[arg(long = "redis-url", env = "TOLLGATE_REDIS_URL", value_delimiter = ',')]
    pub redis_url: Vec<String>,
    /// Directory for persisted runtime configuration (memory mode).
    #[arg(long, env = "TOLLGATE_DATA_DIR", default_value = "./tollgate-data")]
    pub data_dir: PathBuf,
    /// TOML file with initial limits and global settings.
    #[arg(long, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Bearer token required on /api/config* calls.
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Allow listening on a non-loopback address without an admin token.
    #[arg(long, env = "TOLLGATE_INSECURE_ADMIN", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub insecure_admin: bool,
    /// Seconds to finish accepted requests after SIGTERM/SIGINT.
    #[arg(long, env = "TOLLGATE_SHUTDOWN_GRACE", default_value_t = 10.0)]
    pub shutdown_grace: f64,
    /// Seconds to keep serving after SIGTERM/SIGINT with readiness already 503 `draining`, so
    /// load balancers stop routing here before the listener closes (e.g. 5 under Kubernetes).
    #[arg(long, env = "TOLLGATE_DRAIN_DELAY", default_value_t = 0.0)]
    pub drain_delay: f64,
    /// Log line format.
    #[arg(long, env = "TOLLGATE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// What to answer when the store is unreachable: allow (fail open) or deny (503).
    #[arg(
        long,
        env = "TOLLGATE_ON_STORE_ERROR",
        value_enum,
        default_value = "allow"
    )]
    pub on_store_error: OnStoreError,
    /// Decisions and status calls for tenants without configuration: allow, or deny with 403
    /// unknown_tenant before any state is created.
    #[arg(
        long,
        env = "TOLLGATE_UNKNOWN_TENANTS",
        value_enum,
        default_value = "allow"
    )]
    pub unknown_tenants: UnknownTenants,
    /// Put every limit in shadow mode: decide and count as usual, never deny; answers say
    /// `shadow_denied` when a limit would have denied (README "Policies").
    #[arg(long, env = "TOLLGATE_SHADOW", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub shadow: bool,
    /// Who may call the decision API: anyone (none), or only holders of a key of the tenant
    /// (tenant-keys; `Authorization: Bearer <key>`, or the admin token for every tenant).
    #[arg(
        long,
        env = "TOLLGATE_DECISION_AUTH",
        value_enum,
        default_value = "none"
    )]
    pub decision_auth: DecisionAuth,
    /// Most keys the memory store tracks; new keys past it get 503 key_budget_exhausted.
    #[arg(long, env = "TOLLGATE_MAX_KEYS", default_value_t = tollgate_core::store::memory::DEFAULT_MAX_KEYS)]
    pub max_keys: usize,
    /// Redis mode: longest a Redis command may take before it counts as a store failure.
    #[arg(long, env = "TOLLGATE_REDIS_TIMEOUT_MS", default_value_t = 50)]
    pub redis_timeout_ms: u64,
    /// Redis mode: while Redis is failing, how often one request probes it (the rest fail fast).
    #[arg(long, env = "TOLLGATE_REDIS_PROBE_INTERVAL_MS", default_value_t = 500)]
    pub redis_probe_interval_ms: u64,
    /// Redis mode: prefix of every key and channel tollgate uses, so deployments can share a Redis.
    #[arg(long, env = "TOLLGATE_REDIS_PREFIX", default_value = "tollgate")]
    pub redis_prefix: String,
    /// Redis mode: treat a single --redis-url as a Redis Cluster seed node.
    #[arg(long, env = "TOLLGATE_REDIS_CLUSTER", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub redis_cluster: bool,
    /// Testing aid: offset this instance's clock by this many milliseconds (simulates a host with
    /// a skewed clock; in redis mode decisions use Redis time and must not change).
    #[arg(
        long,
        env = "TOLLGATE_CLOCK_OFFSET_MS",
        default_value_t = 0,
        hide = true,
        allow_hyphen_values = true
    )]
    pub clock_offset_ms: i64,
    /// Tuning aid: batched one-consume Redis calls outstanding at once before decisions queue
    /// and go together (0: every decision its own call); README "Redis".
    #[arg(
        long,
        env = "TOLLGATE_REDIS_BATCH_IN_FLIGHT",
        default_value_t = tollgate_core::store::redis::DEFAULT_BATCH_IN_FLIGHT,
        hide = true
    )]
    pub redis_batch_in_flight: usize,
    #[command(flatten)]
    pub http: HttpArgs,
}

impl RunArgs {
    /// Combinations of flags that parse but cannot mean what the operator wrote.
    pub fn validate(&self) -> Result<(), String> {
        // A URL with the memory store would silently give every instance its own limits; a URL
        // does not switch the store either, so which store runs is always what --store says.
        if !self.redis_url.is_empty() && self.store != StoreKind::Redis {
            return Err(format!(
                "--redis-url (or TOLLGATE_REDIS_URL) is set but --store is {}; limits would be counted in this process's memory, not in Redis. Pass --store redis (TOLLGATE_STORE=redis) to use Redis, or unset the URL to use the memory store",
                self.store.name()
            ));
        }
        Ok(())
    }
}

/// Where the RLS listener binds; `None` when disabled with `off`. A newtype so clap treats it as
/// one value with a default rather than an optional flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RlsListen(pub Option<SocketAddr>);

fn parse_rls_listen(s: &str) -> Result<RlsListen, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(RlsListen(None));
    }
    s.trim()
        .parse()
        .map(|a| RlsListen(Some(a)))
        .map_err(|_| format!("expected an address such as 127.0.0.1:8081, or off; got '{s}'"))
}

impl StoreKind {
    /// The flag value, as an operator types it.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Redis => "redis",
        }
    }
}

/// Limits on clients' connections and requests.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// Seconds a request may take end to end (body, queueing, decision) before it is answered
    /// 503 request_timeout.
    #[arg(long, env = "TOLLGATE_REQUEST_TIMEOUT", default_value_t = 30.0)]
    pub request_timeout: f64,
    /// Seconds a client has to send a request's headers; idle keep-alive connections are closed
    /// after the same time.
    #[arg(long, env = "TOLLGATE_HEADER_READ_TIMEOUT", default_value_t = 10.0)]
    pub header_read_timeout: f64,
    /// Most client connections served at once; further ones wait in the listen backlog.
    #[arg(long, env = "TOLLGATE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Seconds a client has to send a whole request body once its headers are in; past it the
    /// request is answered 408 body_timeout and the connection closed.
    #[arg(long, env = "TOLLGATE_BODY_TIMEOUT", default_value_t = 5.0)]
    pub body_timeout: f64,
    /// Slowest body transfer accepted, in bytes per second, after a one-second grace; slower
    /// bodies are cut like late ones. 0 turns the rate check off.
    #[arg(long, env = "TOLLGATE_BODY_MIN_RATE", default_value_t = 1024)]
    pub body_min_rate: u64,
}
