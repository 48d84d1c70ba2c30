//! Operations through the real binary: refusing an unprotected public listener, SIGHUP reload,
//! and slow clients not holding the service.

mod support;

use std::time::Duration;

use support::{scrape_value, tollgate_command, Binary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "reload-test-token";

async fn wait_for_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    for _ in 0..400 {
        if let Ok(Some(s)) = child.try_wait() {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    panic!("process did not exit");
}

#[tokio::test]
async fn non_loopback_listen_without_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    // By flag and by environment variable.
    let runs: [(&[&str], Option<&str>); 2] = [
        (&["--listen", "0.0.0.0:0", "--data-dir", &data], None),
        (&["--data-dir", &data], Some("0.0.0.0:0")),
    ];
    for (args, env_listen) in runs {
        let mut cmd = tollgate_command();
        cmd.args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if let Some(l) = env_listen {
            cmd.env("TOLLGATE_LISTEN", l);
        }
        let mut child = cmd.spawn().unwrap();
        let status = wait_for_exit(&mut child).await;
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(err.contains("refusing to listen on non-loopback"), "{err}");
        assert!(err.contains("--admin-token"), "{err}");
    }
}

fn write(path: &std::path::Path, text: &str) {
    // Write then rename, as an operator's deploy tool would, so a reload never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
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

async fn wait_reloads(bin: &Binary, result: &str, n: f64) {
    let series = format!("tollgate_config_reloads_total{{result=\"{result}\"}}");
    for _ in 0..200 {
        if scrape_value(bin, &series).await == Some(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{series} never reached {n}; stderr: {}", bin.stderr());
}

const V1: &str = r#"
[global]
max_global_concurrent_requests = 100
max_tenant_queue_size = 10

[tenants.acme.actions.login]
max_requests = 5
window_duration_seconds = 60
"#;

const V2: &str = r#"
[global]
max_global_concurrent_requests = 50
max_tenant_queue_size = 20
queue_timeout_ms = 250

[tenants.acme.actions.login]
max_requests = 7
window_duration_seconds = 30

[tenants.gamma]
weight = 3

[tenants.gamma.clients.vip.search]
max_requests = 1000
window_duration_seconds = 0.5
"#;

#[tokio::test]
async fn sighup_applies_valid_file_and_rejects_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tollgate.toml");
    write(&file, V1);
    let file_arg = file.display().to_string();
    let bin = Binary::start_in(dir, &["--config", &file_arg, "--admin-token", TOKEN]).await;
    let client = reqwest::Client::new();

    let c = get_config(&bin).await;
    assert_eq!(c["tenants"]["acme"]["actions"]["login"]["max_requests"], 5);
    // With --config the file is the source of truth: a runtime change through the API is refused.
    let r = client
        .put(bin.url("/api/config/tenant/beta/action/x"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"max_requests": 9, "window_duration_seconds": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let before = get_config(&bin).await;
    let v_before = before["version"].as_u64().unwrap();

    write(&file, V2);
    bin.signal("HUP");
    wait_reloads(&bin, "applied", 1.0).await;
    let after = get_config(&bin).await;
    assert_eq!(
        after["version"].as_u64().unwrap(),
        v_before + 1,
        "one atomic change"
    );
    assert_eq!(after["global"]["max_global_concurrent_requests"], 50);
    assert_eq!(after["global"]["queue_timeout_ms"], 250);
    assert_eq!(
        after["tenants"]["acme"]["actions"]["login"]["max_requests"],
        7
    );
    assert_eq!(after["tenants"]["gamma"]["weight"], 3);
    assert_eq!(
        after["tenants"]["gamma"]["clients"]["vip"]["search"]["window_duration_seconds"],
        0.5
    );
    assert!(
        after["tenants"].get("beta").is_none(),
        "the refused change never happened: {after}"
    );
    // The next decision uses the new limit.
    let d: serde_json::Value = client
        .post(bin.url("/api/check_and_consume"))
        .json(&serde_json::json!({"tenant_id":"acme","client_id":"u","action_type":"login"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["limit"]["max_requests"], 7, "{d}");
    assert_eq!(d["limit"]["source"], "action");
    let health: serde_json::Value = reqwest::get(bin.url("/api/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["config_version"], after["version"]);

    // Broken files: invalid values (reported with their location), then a TOML syntax error.
    let invalid = V2.replace("max_requests = 7", "max_requests = 0");
    write(&file, &invalid);
    bin.signal("HUP");
    wait_reloads(&bin, "rejected", 1.0).await;
    assert_eq!(get_config(&bin).await, after, "running config untouched");
    let log = bin.stderr();
    assert!(log.contains("configuration reload rejected"), "{log}");
    assert!(
        log.contains("tenants.acme.actions.login: max_requests"),
        "{log}"
    );

    write(&file, "[global\nmax_global_concurrent_requests = ");
    bin.signal("HUP");
    wait_reloads(&bin, "rejected", 2.0).await;
    assert_eq!(get_config(&bin).await, after, "running config untouched");

    // Gone file.
    std::fs::remove_file(&file).unwrap();
    bin.signal("HUP");
    wait_reloads(&bin, "rejected", 3.0).await;
    assert_eq!(get_config(&bin).await, after);
    assert_eq!(
        scrape_value(&bin, "tollgate_config_reloads_total{result=\"applied\"}").await,
        Some(1.0)
    );

    let status = bin.stop().await;
    assert!(status.success(), "{status}");
}

/// Opens `n` connections that send part of a request head and then trickle one header byte at a
/// time, never finishing. Each task returns true when the server closed its connection.
fn slowloris(addr: std::net::SocketAddr, n: usize) -> Vec<tokio::task::JoinHandle<bool>> {
    (0..n)
        .map(|_| {
            tokio::spawn(async move {
                let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                    return false;
                };
                if s.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    .await
                    .is_err()
                {
                    return true;
                }
                let mut buf = [0u8; 512];
                // Bounded: 100 trickles at 100 ms is 10 s, far past the header deadline.
                for _ in 0..100 {
                    tokio::select! {
                        _ = s.read(&mut buf) => {
                            // EOF, a reset, or an error response before the close: evicted.
                            return true;
                        }
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {
                            if s.write_all(b"a").await.is_err() {
                                return true;
                            }
                        }
                    }
                }
                false
            })
        })
        .collect()
}

#[tokio::test]
async fn slow_clients_do_not_stop_normal_requests() {
    let bin = Binary::start(&["--header-read-timeout", "1"]).await;
    let slow = slowloris(bin.addr, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for i in 0..20 {
        let r = client
            .post(bin.url("/api/check_and_consume"))
            .json(&serde_json::json!({"tenant_id":"t","client_id":format!("c{i}"),"action_type":"a","max_requests":5,"window_duration_seconds":60}))
            .send()
            .await
            .expect("served while slow clients hold sockets");
        assert_eq!(r.status(), 200);
    }
    for h in slow {
        assert!(h.await.unwrap(), "a slow client was never disconnected");
    }
    assert!(bin.stop().await.success());
}

#[tokio::test]
async fn slow_clients_filling_the_connection_cap_are_evicted() {
    let bin = Binary::start(&["--header-read-timeout", "1", "--max-connections", "16"]).await;
    // Twice the cap: the first 16 hold every slot, the rest wait in the backlog.
    let slow = slowloris(bin.addr, 32);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let r = client
        .get(bin.url("/api/health"))
        .send()
        .await
        .expect("served once the header deadline evicted the slow clients");
    assert_eq!(r.status(), 200);
    for h in slow {
        assert!(h.await.unwrap(), "a slow client was never disconnected");
    }
    assert!(bin.stop().await.success());
}
