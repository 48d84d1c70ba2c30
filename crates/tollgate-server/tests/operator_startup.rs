//! Issue 12 items 2 and 11 (boolean environment variables): start-up refuses a Redis URL without
//! the Redis store, and boolean variables take the usual spellings.

mod support;

use clap::Parser;
use support::tollgate_command;
use tollgate_server::cli::Cli;

fn free_loopback() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    format!("127.0.0.1:{port}")
}

#[test]
fn redis_url_without_redis_store_is_refused_by_validation() {
    let cli =
        Cli::try_parse_from(["tollgate", "--redis-url", "redis://127.0.0.1:6379"]).expect("parses");
    let err = cli.run.validate().expect_err("must be refused");
    assert!(err.contains("--store redis"), "{err}");
    assert!(err.contains("--redis-url"), "{err}");

    let ok = Cli::try_parse_from([
        "tollgate",
        "--store",
        "redis",
        "--redis-url",
        "redis://127.0.0.1:6379",
    ])
    .expect("parses");
    assert_eq!(ok.run.validate(), Ok(()));
    let memory = Cli::try_parse_from(["tollgate"]).expect("parses");
    assert_eq!(memory.run.validate(), Ok(()));
}

#[test]
fn binary_refuses_redis_url_env_without_redis_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The binary exits at once with a message; it never starts serving the memory store.
    let mut child = tollgate_command()
        .env("TOLLGATE_REDIS_URL", "redis://127.0.0.1:1")
        .args(["--listen", &free_loopback()])
        .args(["--data-dir", &dir.path().join("data").display().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tollgate");
    // Bounded wait so a regression (serving the memory store) fails instead of hanging.
    let mut status = None;
    for _ in 0..600 {
        if let Some(s) = child.try_wait().expect("wait") {
            status = Some(s);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let Some(status) = status else {
        let _ = child.kill();
        panic!("tollgate kept running with a Redis URL and the memory store");
    };
    assert!(!status.success(), "must refuse to start");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(stderr.contains("--store redis"), "{stderr}");
}

#[test]
fn boolean_env_vars_accept_yes_no_1_0() {
    // Spellings are checked through the binary, which reads the real environment: with
    // TOLLGATE_INSECURE_ADMIN false-ish, a public listener without a token is refused by
    // tollgate itself (not by the argument parser), which shows the value was understood.
    for falsy in ["0", "no", "false", "NO"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = tollgate_command()
            .env("TOLLGATE_INSECURE_ADMIN", falsy)
            .args(["--listen", "0.0.0.0:0"])
            .args(["--data-dir", &dir.path().join("data").display().to_string()])
            .output()
            .expect("run tollgate");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{falsy}: {stderr}");
        assert!(
            stderr.contains("refusing to listen on non-loopback"),
            "TOLLGATE_INSECURE_ADMIN={falsy}: {stderr}"
        );
    }
    for truthy in ["1", "yes", "true", "on"] {
        let cli = Cli::try_parse_from(["tollgate", "--redis-cluster", "--insecure-admin"])
            .expect("flags still work without a value");
        assert!(cli.run.insecure_admin && cli.run.redis_cluster);
        let dir = tempfile::tempdir().expect("tempdir");
        // With a truthy value and the memory store plus a Redis URL, start-up gets past the
        // argument parser and stops at the store check, so no server is left running.
        let out = tollgate_command()
            .env("TOLLGATE_REDIS_CLUSTER", truthy)
            .env("TOLLGATE_REDIS_URL", "redis://127.0.0.1:1")
            .args(["--listen", &free_loopback()])
            .args(["--data-dir", &dir.path().join("data").display().to_string()])
            .output()
            .expect("run tollgate");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--store redis"),
            "TOLLGATE_REDIS_CLUSTER={truthy} was not accepted: {stderr}"
        );
    }
}
