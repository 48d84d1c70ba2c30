//! The start-up summary: what an operator needs to know about a running instance, in one line,
//! with flag values spelled as they are typed and no secret in it.

use std::net::SocketAddr;

use clap::ValueEnum;

use crate::cli::{RunArgs, StoreKind};

/// A Redis URL without its password (`redis://user:secret@host` → `redis://user@host`, and the
/// `pass`/`password` query parameters of socket URLs dropped). A URL that does not parse is
/// replaced whole, since where its password is cannot be told.
pub fn redact_redis_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw.trim()) else {
        return "<unparsable URL, not shown>".into();
    };
    if url.password().is_some() {
        // Fails only for URLs that cannot carry credentials, which then have none to hide.
        let _ = url.set_password(None);
    }
    if url.query().is_some() {
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| !matches!(k.as_ref(), "pass" | "password"))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
    }
    url.to_string()
}

/// The flag value of a `ValueEnum`, e.g. `tenant-keys`.
fn flag<T: ValueEnum>(value: T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// Logs the summary for a service listening on `addr`, and a warning when the admin API is open
/// to the network.
pub fn log(args: &RunArgs, addr: SocketAddr) {
    let redis = match args.store {
        StoreKind::Redis => Some(
            args.redis_url
                .iter()
                .map(|u| redact_redis_url(u))
                .collect::<Vec<_>>()
                .join(","),
        ),
        StoreKind::Memory => None,
    };
    // Where the configuration lives between runs.
    let persisted = match args.store {
        StoreKind::Memory => format!("data dir {}", args.data_dir.display()),
        StoreKind::Redis => format!("redis, key prefix {}", args.redis_prefix),
    };
    let config_source = if args.config.is_some() { "file" } else { "api" };
    let config_file = args.config.as_ref().map(|p| p.display().to_string());
    tracing::info!(
        version = %env!("CARGO_PKG_VERSION"),
        listen = %addr,
        store = %args.store.name(),
        redis = redis.as_deref(),
        config_source = %config_source,
        config_file = config_file.as_deref(),
        config_persisted_in = %persisted,
        admin_token = %if args.admin_token.is_some() { "on" } else { "off" },
        on_store_error = %flag(args.on_store_error),
        unknown_tenants = %flag(args.unknown_tenants),
        decision_auth = %flag(args.decision_auth),
        "tollgate listening"
    );
    if args.admin_token.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            listen = %addr,
            "the admin API (/api/config*) is reachable from the network without a token (--insecure-admin): anyone who can connect can change limits. Set --admin-token"
        );
    }
}
