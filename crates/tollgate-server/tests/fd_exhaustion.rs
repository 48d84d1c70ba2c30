//! Resource exhaustion: the real binary under a low file-descriptor limit (`ulimit -n 64`) and a
//! flood of idle connections that uses up every descriptor. An established client keeps getting
//! answers (decisions and health), the cause is logged, and once the flood is gone new clients are
//! served again.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_exhaustion_keeps_established_clients_served_logs_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let stderr_path = dir.path().join("stderr.log");
    let mut cmd = std::process::Command::new("sh");
    for (k, _) in std::env::vars() {
        if k.starts_with("TOLLGATE_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_tollgate"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", &dir.path().join("data").display().to_string()])
        // Idle flood connections are dropped after this, which frees their descriptors.
        .args(["--header-read-timeout", "1"])
        .env("TOLLGATE_LOG", "info")
        .env("TOLLGATE_RLS_LISTEN", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("spawn tollgate under ulimit -n 64");
    let log = || std::fs::read_to_string(&stderr_path).unwrap_or_default();

    // One client with one kept-alive connection, established before the flood.
    let established = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut up = false;
    for _ in 0..200 {
        if let Ok(Some(s)) = child.try_wait() {
            panic!("tollgate exited ({s}): {}", log());
        }
        if established
            .get(format!("{base}/api/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "tollgate did not start: {}", log());

    // The flood: more idle connections than the process has descriptors.
    let mut flood = Vec::new();
    for _ in 0..150 {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            flood.push(s);
        }
    }
    let decision = json!({"tenant_id": "fd", "client_id": "c", "action_type": "a",
                          "max_requests": 1_000_000, "window_duration_seconds": 60});
    let started = Instant::now();
    let mut answered = 0;
    for _ in 0..2000 {
        if started.elapsed() > Duration::from_millis(2500) {
            break;
        }
        let r = established
            .post(format!("{base}/api/check_and_consume"))
            .json(&decision)
            .send()
            .await
            .expect("the established client is answered during the flood");
        assert_eq!(r.status().as_u16(), 200);
        let h = established
            .get(format!("{base}/api/health"))
            .send()
            .await
            .expect("health answered during the flood");
        assert_eq!(h.status().as_u16(), 200);
        answered += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered >= 3, "only {answered} answers during the flood");
    let logged = log();
    assert!(
        logged.contains("accept failed") && logged.contains("os error 24"),
        "the cause (out of descriptors) was not logged: {logged}"
    );
    let accept_warnings = logged.matches("accept failed").count();

    // The flood ends; new clients are served again.
    drop(flood);
    let fresh_started = Instant::now();
    let mut recovered = false;
    for _ in 0..200 {
        let fresh = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        if fresh
            .get(format!("{base}/api/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        recovered,
        "new clients were not served after the flood: {}",
        log()
    );
    println!(
        "fd exhaustion: {answered} request pairs answered on the established connection during the \
         flood; {accept_warnings} 'accept failed' warnings; a new client served {:?} after the \
         flood ended",
        fresh_started.elapsed()
    );
    assert!(child.try_wait().expect("wait").is_none(), "tollgate exited");
    let _ = child.kill();
    let _ = child.wait();
}
