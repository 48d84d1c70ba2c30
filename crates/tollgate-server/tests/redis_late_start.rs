//! Issue 12 item 3: Redis down at start-up. The real binary starts anyway against a port nothing
//! listens on, reports `degraded` (readiness 503, configuration not loaded) and serves decisions
//! per `--on-store-error`; once redis-server comes up on that port it connects by itself, loads
//! the configuration stored there, and counts decisions in Redis.

#[path = "../../tollgate-core/tests/support/redis_server.rs"]
mod redis_server;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use redis_server::{free_port, skip_without_redis, RedisServer};
use serde_json::{json, Value};
use support::Binary;
use tollgate_core::config::{
    ConfigBackend, ConfigDocument, LimitSpec, RedisConfigBackend, TenantDocument,
};
use tollgate_core::redis_conn::{RedisConnection, RedisOptions};

async fn get(client: &reqwest::Client, url: String) -> (u16, Value) {
    let r = client.get(url).send().await.expect("answered");
    (r.status().as_u16(), r.json().await.expect("JSON"))
}

async fn decide(client: &reqwest::Client, bin: &Binary, body: Value) -> (u16, Value) {
    let r = client
        .post(bin.url("/api/check_and_consume"))
        .json(&body)
        .send()
        .await
        .expect("answered");
    (r.status().as_u16(), r.json().await.expect("JSON"))
}

/// A Redis holding a stored configuration (tenant `acme`, action `api`: 2 per 600 s, version 7),
/// saved to its dump file and stopped, so it can be started again later on another port.
async fn stopped_redis_with_config() -> RedisServer {
    let mut redis = RedisServer::start();
    let conn = RedisConnection::connect(&RedisOptions::new(vec![redis.url()]))
        .await
        .expect("connect");
    let backend = RedisConfigBackend::new(conn, "tollgate", Duration::from_secs(2));
    let mut tenant: TenantDocument = serde_json::from_value(json!({})).unwrap();
    tenant
        .actions
        .insert("api".into(), LimitSpec::new(2, 600.0).into());
    let doc = ConfigDocument {
        version: 7,
        tenants: BTreeMap::from([("acme".to_string(), tenant)]),
        ..Default::default()
    };
    backend
        .save(&doc, 0)
        .await
        .expect("store the configuration");
    let saved = redis.command(&["SAVE"]).expect("SAVE answered");
    assert!(saved.contains("OK"), "{saved}");
    redis.kill();
    redis
}

#[tokio::test]
async fn starts_without_redis_and_connects_when_it_comes_up() {
    if skip_without_redis("starts_without_redis_and_connects_when_it_comes_up") {
        return;
    }
    let mut redis = stopped_redis_with_config().await;
    let port = free_port(false);
    let url = format!("redis://127.0.0.1:{port}/");
    let bin = Binary::start_alive(&[
        "--store",
        "redis",
        "--redis-url",
        &url,
        "--redis-probe-interval-ms",
        "100",
    ])
    .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // Up, but not ready: the store is unreachable and the stored configuration unread.
    let (code, health) = get(&client, bin.url("/api/health")).await;
    assert_eq!((code, health["status"].as_str()), (503, Some("degraded")));
    let (code, ready) = get(&client, bin.url("/readyz")).await;
    assert_eq!(code, 503, "{ready}");
    assert_eq!(ready["reasons"], json!(["degraded", "config_not_loaded"]));
    // Decisions follow --on-store-error (allow): fail open.
    let with_limit = json!({"tenant_id": "acme", "client_id": "u", "action_type": "other",
                            "max_requests": 1, "window_duration_seconds": 600});
    for _ in 0..2 {
        let (code, v) = decide(&client, &bin, with_limit.clone()).await;
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["status"], "fail_open", "{v}");
    }

    redis.restart_on(port);
    let mut ready = (0, Value::Null);
    for _ in 0..300 {
        ready = get(&client, bin.url("/readyz")).await;
        if ready.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready.0, 200, "{} / {}", ready.1, bin.stderr());

    // The configuration stored in Redis is the one in force.
    let (code, config) = get(&client, bin.url("/api/config")).await;
    assert_eq!(code, 200, "{config}");
    assert_eq!(config["version"], 7, "{config}");
    assert_eq!(
        config["tenants"]["acme"]["actions"]["api"]["max_requests"],
        2
    );
    // Decisions are counted in Redis under the stored limit: 2 allowed, then denied.
    let configured = json!({"tenant_id": "acme", "client_id": "u", "action_type": "api"});
    for expected in [200, 200, 429] {
        let (code, v) = decide(&client, &bin, configured.clone()).await;
        assert_eq!(code, expected, "{v}");
        assert_eq!(v["status"], "processed", "{v}");
        assert_eq!(v["limit"]["source"], "action", "{v}");
    }
    let keys = redis
        .command(&["KEYS", "tollgate:{*"])
        .expect("KEYS answered");
    assert!(
        keys.starts_with("*1\r\n"),
        "one key counted in Redis: {keys:?}"
    );
    let (code, health) = get(&client, bin.url("/api/health")).await;
    assert_eq!((code, health["status"].as_str()), (200, Some("healthy")));
}

#[tokio::test]
async fn a_malformed_redis_url_still_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::tollgate_command()
        .args(["--listen", "127.0.0.1:0", "--store", "redis"])
        .args(["--redis-url", "http://not-redis"])
        .args(["--data-dir", &dir.path().display().to_string()])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a valid Redis URL"), "{err}");
}
