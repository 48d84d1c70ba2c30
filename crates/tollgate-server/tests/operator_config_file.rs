//! Issue 12 items 1 and 10: with `--config FILE` the file is the source of truth (applied over a
//! stored configuration at start, re-applied when it changes on disk, API writes refused with
//! 409), DELETE for a tenant and a weight, and the start-up log line.

#[path = "../../tollgate-core/tests/support/redis_server.rs"]
mod redis_server;
mod support;

use std::path::Path;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use support::{scrape_value, send, service, tollgate_command, Binary};
use tollgate_core::config::{parse_toml, Snapshot};

const TOKEN: &str = "file-truth-admin-token";

/// The example configuration file of the README, as a newcomer copies it.
fn readme_example_toml() -> String {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("### Configuration file (TOML)")
        .nth(1)
        .expect("README has a 'Configuration file (TOML)' section");
    let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let len = section[start..].find("```").expect("end of the toml block");
    section[start..start + len].to_string()
}

/// What `GET /api/config` must show once `toml` is applied (the version aside).
fn expected_config(toml: &str) -> serde_json::Value {
    let doc = parse_toml(Path::new("tollgate.toml"), toml).expect("valid file");
    let mut v = serde_json::to_value(Snapshot::from_document(&doc).unwrap().to_document()).unwrap();
    v.as_object_mut().unwrap().remove("version");
    v
}

async fn get_config(bin: &Binary) -> serde_json::Value {
    let r = reqwest::Client::new()
        .get(bin.url("/api/config"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The configuration without what is not part of it: its version, and the paging cursor
/// (`next_after`, null on the last page).
fn without_version(mut v: serde_json::Value) -> serde_json::Value {
    let o = v.as_object_mut().unwrap();
    o.remove("version");
    o.remove("next_after");
    v
}

/// Polls until the served configuration satisfies `done` (bounded: the file is polled every
/// second; 30 s covers a loaded machine without making the test depend on timing).
async fn wait_config(bin: &Binary, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    for _ in 0..300 {
        if done(&get_config(bin).await) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{what}: never seen; config {}; stderr: {}",
        get_config(bin).await,
        bin.stderr()
    );
}

/// Keeps a Binary's directory past the process (its TempDir would be deleted with it).
fn take_dir(bin: &mut Binary) -> tempfile::TempDir {
    std::mem::replace(&mut bin.dir, tempfile::tempdir().unwrap())
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn readme_newcomer_path_applies_the_file_over_the_stored_config() {
    // 1. `cargo run --release`: no file; the API is the source of truth and a change is stored.
    let mut first = Binary::start(&["--admin-token", TOKEN]).await;
    let r = reqwest::Client::new()
        .put(first.url("/api/config/tenant/beta/action/x"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"max_requests": 9, "window_duration_seconds": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let log = first.stderr();
    assert!(log.contains("configuration source: the API"), "{log}");
    let dir = take_dir(&mut first);
    assert!(first.stop().await.success());

    // 2. The README's own example file with --config, over the same data dir.
    let toml = readme_example_toml();
    let file = dir.path().join("tollgate.toml");
    std::fs::write(&file, &toml).unwrap();
    let file_arg = file.display().to_string();
    let mut second = Binary::start_in(dir, &["--config", &file_arg, "--admin-token", TOKEN]).await;
    let served = get_config(&second).await;
    assert_eq!(
        without_version(served.clone()),
        expected_config(&toml),
        "the file replaces the stored configuration"
    );
    assert!(served["tenants"].get("beta").is_none(), "{served}");
    let log = second.stderr();
    assert!(
        log.contains("configuration source: the --config file"),
        "{log}"
    );
    assert!(log.contains("configuration file applied"), "{log}");
    assert!(log.contains("trigger=start"), "{log}");
    assert!(log.contains("config_source=file"), "{log}");

    // 3. A restart with the same file changes nothing: no version churn on every start.
    let version = served["version"].as_u64().unwrap();
    let dir = take_dir(&mut second);
    assert!(second.stop().await.success());
    let third = Binary::start_in(dir, &["--config", &file_arg, "--admin-token", TOKEN]).await;
    assert_eq!(get_config(&third).await, served);
    assert!(
        third.stderr().contains("already matches"),
        "{}",
        third.stderr()
    );
    assert_eq!(version, get_config(&third).await["version"]);
}

#[tokio::test]
async fn api_config_writes_answer_409_when_a_file_manages_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tollgate.toml");
    std::fs::write(&file, readme_example_toml()).unwrap();
    let file_arg = file.display().to_string();
    let bin = Binary::start_in(dir, &["--config", &file_arg, "--admin-token", TOKEN]).await;
    let before = get_config(&bin).await;
    let client = reqwest::Client::new();
    let limit = serde_json::json!({"max_requests": 9, "window_duration_seconds": 1});
    let writes = [
        (
            Method::PUT,
            "/api/config/global",
            serde_json::json!({"queue_timeout_ms": 5}),
        ),
        (
            Method::PUT,
            "/api/config/tenant/org_a_123/action/api_call",
            limit.clone(),
        ),
        (
            Method::PUT,
            "/api/config/tenant/org_a_123/client/vip_user/action/api_call",
            limit,
        ),
        (
            Method::PUT,
            "/api/config/tenant/org_a_123/weight",
            serde_json::json!({"weight": 5}),
        ),
        (
            Method::PUT,
            "/api/config/tenant/org_a_123/settings",
            serde_json::json!({"weight": 5}),
        ),
        (
            Method::DELETE,
            "/api/config/tenant/org_a_123/action/api_call",
            serde_json::json!({}),
        ),
        (
            Method::DELETE,
            "/api/config/tenant/org_a_123",
            serde_json::json!({}),
        ),
        (
            Method::DELETE,
            "/api/config/tenant/org_a_123/weight",
            serde_json::json!({}),
        ),
    ];
    for (method, path, body) in writes {
        let r = client
            .request(method.clone(), bin.url(path))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409, "{method} {path}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"], "config_managed_by_file", "{method} {path}: {v}");
        let message = v["message"].as_str().unwrap();
        assert!(message.contains(&file_arg), "{message}");
        assert!(message.contains("source of truth"), "{message}");
    }
    // Still authenticated first: without the token it is 401, not a hint about the file.
    let r = client
        .put(bin.url("/api/config/global"))
        .json(&serde_json::json!({"queue_timeout_ms": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Nothing changed; reads and tenant keys (which the file does not hold) stay allowed.
    assert_eq!(get_config(&bin).await, before);
    let r = client
        .post(bin.url("/api/config/tenant/org_a_123/keys"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn every_config_write_operation_is_refused_under_a_file() {
    // Every non-GET operation of the OpenAPI document under /api/config, except tenant keys.
    let doc = serde_json::to_value(tollgate_server::api::openapi()).unwrap();
    let svc = service(None);
    svc.state
        .manage_config_by_file("/etc/tollgate/tollgate.toml".into());
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/api/config") || path.contains("/keys") {
            continue;
        }
        for method in ops.as_object().unwrap().keys() {
            if method == "get" {
                continue;
            }
            let uri = path
                .replace("{tenant}", "t")
                .replace("{client}", "c")
                .replace("{action}", "a");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // A body that is not even valid: the refusal comes before the body is looked at.
            let r = send(&svc.app, m, &uri, Some("not json"), &[]).await;
            assert_eq!(
                r.status,
                StatusCode::CONFLICT,
                "{method} {path}: {}",
                r.text()
            );
            assert_eq!(r.json()["error"], "config_managed_by_file");
            let responses = &ops[method]["responses"];
            assert!(
                responses.get("409").is_some(),
                "{method} {path}: 409 is not in the OpenAPI document"
            );
            checked += 1;
        }
    }
    assert!(checked >= 9, "only {checked} write operations found");
    // Reads are untouched.
    let r = send(&svc.app, Method::GET, "/api/config", None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn delete_tenant_removes_limits_weight_and_settings_but_keeps_keys() {
    let svc = service(None);
    let app = &svc.app;
    let limit = r#"{"max_requests":5,"window_duration_seconds":60}"#;
    for (method, uri, body) in [
        (Method::PUT, "/api/config/tenant/acme/action/login", limit),
        (
            Method::PUT,
            "/api/config/tenant/acme/client/bob/action/login",
            limit,
        ),
        (
            Method::PUT,
            "/api/config/tenant/acme/settings",
            r#"{"weight":4,"max_keys":500}"#,
        ),
        (Method::PUT, "/api/config/tenant/other/action/login", limit),
    ] {
        let r = send(app, method, uri, Some(body), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text());
    }
    let r = send(app, Method::POST, "/api/config/tenant/acme/keys", None, &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    let r = send(app, Method::DELETE, "/api/config/tenant/acme", None, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "deleted");
    assert_eq!(v["tenant_id"], "acme");
    assert_eq!(v["removed"]["weight"], 4);
    assert_eq!(v["removed"]["actions"]["login"]["max_requests"], 5);
    assert_eq!(v["removed"]["clients"]["bob"]["login"]["max_requests"], 5);
    assert_eq!(v["removed"]["state_bound_overrides"]["max_keys"], 500);
    assert_eq!(v["api_keys_kept"], 1);

    let t = send(app, Method::GET, "/api/config/tenant/acme", None, &[])
        .await
        .json();
    assert_eq!(t["weight"], 1);
    assert_eq!(t["actions"], serde_json::json!({}));
    assert_eq!(t["clients"], serde_json::json!({}));
    assert_eq!(
        t["state_bounds"]["overrides"]["max_keys"],
        serde_json::Value::Null
    );
    assert_eq!(t["version"], v["version"]);
    let keys = send(app, Method::GET, "/api/config/tenant/acme/keys", None, &[])
        .await
        .json();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1, "{keys}");
    // Other tenants are untouched.
    let o = send(app, Method::GET, "/api/config/tenant/other", None, &[])
        .await
        .json();
    assert_eq!(o["actions"]["login"]["max_requests"], 5);

    // Nothing left to delete (keys are not deleted this way).
    let r = send(app, Method::DELETE, "/api/config/tenant/acme", None, &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"], "not_found");
    let r = send(app, Method::DELETE, "/api/config/tenant/nobody", None, &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = send(
        app,
        Method::DELETE,
        &format!("/api/config/tenant/{}", "x".repeat(300)),
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "invalid_argument");
}

#[tokio::test]
async fn delete_weight_restores_the_default_and_keeps_limits() {
    let svc = service(None);
    let app = &svc.app;
    let limit = r#"{"max_requests":5,"window_duration_seconds":60}"#;
    let r = send(
        app,
        Method::PUT,
        "/api/config/tenant/acme/action/login",
        Some(limit),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(
        app,
        Method::PUT,
        "/api/config/tenant/acme/weight",
        Some(r#"{"weight":7}"#),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    let r = send(
        app,
        Method::DELETE,
        "/api/config/tenant/acme/weight",
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "deleted");
    assert_eq!(v["removed_weight"], 7);
    assert_eq!(v["weight"], 1);
    let t = send(app, Method::GET, "/api/config/tenant/acme", None, &[])
        .await
        .json();
    assert_eq!(t["weight"], 1);
    assert_eq!(t["actions"]["login"]["max_requests"], 5, "limits stay");

    let r = send(
        app,
        Method::DELETE,
        "/api/config/tenant/acme/weight",
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"], "not_found");
}

#[tokio::test]
async fn file_changes_on_disk_are_applied_and_bad_ones_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tollgate.toml");
    let v1 = "[tenants.acme.actions.login]\nmax_requests = 5\nwindow_duration_seconds = 60\n";
    std::fs::write(&file, v1).unwrap();
    let file_arg = file.display().to_string();
    let bin = Binary::start_in(dir, &["--config", &file_arg, "--admin-token", TOKEN]).await;
    let start_version = get_config(&bin).await["version"].as_u64().unwrap();

    // An editor's write-and-rename.
    write_atomically(&file, &v1.replace("max_requests = 5", "max_requests = 6"));
    wait_config(&bin, "the renamed file", |c| {
        c["tenants"]["acme"]["actions"]["login"]["max_requests"] == 6
    })
    .await;
    let applied = get_config(&bin).await;
    assert_eq!(
        applied["version"].as_u64().unwrap(),
        start_version + 1,
        "one change"
    );

    // A file that does not validate: logged with its problem, the configuration stays.
    write_atomically(&file, &v1.replace("max_requests = 5", "max_requests = 0"));
    for _ in 0..300 {
        if scrape_value(&bin, "tollgate_config_reloads_total{result=\"rejected\"}").await
            == Some(1.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        scrape_value(&bin, "tollgate_config_reloads_total{result=\"rejected\"}").await,
        Some(1.0),
        "{}",
        bin.stderr()
    );
    let log = bin.stderr();
    assert!(log.contains("configuration reload rejected"), "{log}");
    assert!(
        log.contains("tenants.acme.actions.login: max_requests"),
        "{log}"
    );
    assert_eq!(
        get_config(&bin).await,
        applied,
        "the configuration in force stays"
    );

    // A global table with only some keys: the others take their defaults.
    write_atomically(
        &file,
        &format!(
            "[global]\nqueue_timeout_ms = 250\n\n{}",
            v1.replace("= 5", "= 8")
        ),
    );
    wait_config(&bin, "the partial global table", |c| {
        c["global"]["queue_timeout_ms"] == 250
    })
    .await;
    let c = get_config(&bin).await;
    assert_eq!(c["global"]["max_global_concurrent_requests"], 1000);
    assert_eq!(c["tenants"]["acme"]["actions"]["login"]["max_requests"], 8);
    // A SIGHUP with the file as applied changes nothing.
    bin.signal("HUP");
    for _ in 0..300 {
        if bin.stderr().contains("trigger=sighup") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(bin.stderr().contains("trigger=sighup"), "{}", bin.stderr());
    assert_eq!(
        get_config(&bin).await,
        c,
        "no version bump for an unchanged file"
    );
    assert_eq!(
        scrape_value(&bin, "tollgate_config_reloads_total{result=\"applied\"}").await,
        Some(2.0)
    );
}

#[cfg(unix)]
#[tokio::test]
async fn kubernetes_configmap_symlink_swap_is_applied() {
    // The layout a ConfigMap volume has: tollgate.toml -> ..data/tollgate.toml, ..data -> ..<ts>;
    // an update writes a new ..<ts> directory and swaps ..data by renaming a new symlink over it.
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("config");
    std::fs::create_dir(&mount).unwrap();
    let v1 = "[tenants.acme.actions.login]\nmax_requests = 5\nwindow_duration_seconds = 60\n";
    std::fs::create_dir(mount.join("..2026_01")).unwrap();
    std::fs::write(mount.join("..2026_01/tollgate.toml"), v1).unwrap();
    symlink("..2026_01", mount.join("..data")).unwrap();
    symlink("..data/tollgate.toml", mount.join("tollgate.toml")).unwrap();
    let file_arg = mount.join("tollgate.toml").display().to_string();
    let bin = Binary::start_in(dir, &["--config", &file_arg, "--admin-token", TOKEN]).await;
    assert_eq!(
        get_config(&bin).await["tenants"]["acme"]["actions"]["login"]["max_requests"],
        5
    );

    std::fs::create_dir(mount.join("..2026_02")).unwrap();
    std::fs::write(
        mount.join("..2026_02/tollgate.toml"),
        v1.replace("max_requests = 5", "max_requests = 42"),
    )
    .unwrap();
    symlink("..2026_02", mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    std::fs::remove_dir_all(mount.join("..2026_01")).unwrap();
    wait_config(&bin, "the swapped ConfigMap", |c| {
        c["tenants"]["acme"]["actions"]["login"]["max_requests"] == 42
    })
    .await;
    assert!(bin.stderr().contains("file_changed"), "{}", bin.stderr());
}

/// The binary's JSON log lines whose message is `message`.
fn log_lines(stderr: &str, message: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == message)
        .collect()
}

#[tokio::test]
async fn startup_log_names_version_listen_store_rule_and_policies() {
    let bin = Binary::start(&[
        "--log-format",
        "json",
        "--admin-token",
        TOKEN,
        "--on-store-error",
        "deny",
        "--unknown-tenants",
        "deny",
        "--decision-auth",
        "tenant-keys",
    ])
    .await;
    let stderr = bin.stderr();
    let lines = log_lines(&stderr, "tollgate listening");
    assert_eq!(lines.len(), 1, "{stderr}");
    let f = &lines[0]["fields"];
    assert_eq!(lines[0]["level"], "INFO");
    assert_eq!(f["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(f["listen"], bin.addr.to_string());
    assert_eq!(f["store"], "memory", "flag spelling, not Debug: {f}");
    assert_eq!(f["config_source"], "api");
    let data_dir = bin.dir.path().join("data").display().to_string();
    assert_eq!(f["config_persisted_in"], format!("data dir {data_dir}"));
    assert_eq!(f["admin_token"], "on");
    assert_eq!(f["on_store_error"], "deny");
    assert_eq!(f["unknown_tenants"], "deny");
    assert_eq!(f["decision_auth"], "tenant-keys");
    assert!(!stderr.contains(TOKEN), "the token is never logged");
    assert!(!stderr.contains("WARN"), "{stderr}");
}

#[tokio::test]
async fn startup_log_hides_the_redis_password() {
    if redis_server::skip_without_redis("startup_log_hides_the_redis_password") {
        return;
    }
    const PASSWORD: &str = "s3cret-redis-pw";
    let redis = redis_server::RedisServer::start();
    redis
        .command(&["CONFIG", "SET", "requirepass", PASSWORD])
        .expect("set a password");
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/", redis.port);
    let bin = Binary::start(&[
        "--store",
        "redis",
        "--redis-url",
        &url,
        "--log-format",
        "json",
    ])
    .await;
    let stderr = bin.stderr();
    let lines = log_lines(&stderr, "tollgate listening");
    assert_eq!(lines.len(), 1, "{stderr}");
    let f = &lines[0]["fields"];
    assert_eq!(f["store"], "redis");
    assert_eq!(f["redis"], format!("redis://127.0.0.1:{}/", redis.port));
    assert_eq!(f["config_persisted_in"], "redis, key prefix tollgate");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    assert_eq!(
        tollgate_server::startup_log::redact_redis_url(&format!(
            "redis+unix:///run/redis.sock?db=2&pass={PASSWORD}"
        )),
        "redis+unix:///run/redis.sock?db=2"
    );
    assert_eq!(
        tollgate_server::startup_log::redact_redis_url(&format!("rediss://user:{PASSWORD}@h:1")),
        "rediss://user@h:1"
    );
}

#[tokio::test]
async fn startup_warns_when_the_admin_api_is_open_to_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let port = redis_server::free_port(false);
    let stderr_path = dir.path().join("stderr.log");
    let mut child = tollgate_command()
        .args(["--listen", &format!("0.0.0.0:{port}"), "--insecure-admin"])
        .args(["--data-dir", &dir.path().join("data").display().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut log = String::new();
    for _ in 0..400 {
        log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        if log.contains("tollgate listening") || child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&stderr_path).unwrap_or(log);
    assert!(log.contains("admin_token=off"), "{log}");
    let warn = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("reachable from the network without a token"));
    assert!(warn.is_some(), "{log}");
}
