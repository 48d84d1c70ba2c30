//! The real `tollgate` binary over a real socket: the README's curl flow, persistence across a
//! restart, and a graceful SIGTERM with requests in flight.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .env("TOLLGATE_RLS_LISTEN", "off")
            .args(["--listen", &addr.to_string(), "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tollgate");
        let server = Server { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = server.try_request("GET", "/api/health", None) {
                return server;
            }
            assert!(Instant::now() < deadline, "tollgate did not become healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<(u16, Value)> {
        let mut s = TcpStream::connect(self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let body = body.unwrap_or("");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        read_response(&mut s)
    }

    fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        self.try_request(method, path, body).expect("request")
    }

    fn terminate(&mut self) -> ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        self.wait(Duration::from_secs(15))
    }

    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "tollgate did not exit in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads one HTTP/1.1 response with a Content-Length body; fails on a short or reset read.
fn read_response(s: &mut TcpStream) -> std::io::Result<(u16, Value)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before headers",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < header_end + len {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "short body",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[header_end..header_end + len];
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).unwrap_or(Value::Null)
    };
    Ok((status, value))
}

/// The curl commands of the README, joined across continuation lines, in order.
fn readme_curls() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        let t = line.trim();
        if let Some(cur) = current.as_mut() {
            cur.push(' ');
            cur.push_str(t.trim_end_matches('\\'));
            if !t.ends_with('\\') {
                out.push(current.take().unwrap());
            }
        } else if t.starts_with("curl ") {
            if t.ends_with('\\') {
                current = Some(t.trim_end_matches('\\').to_string());
            } else {
                out.push(t.to_string());
            }
        }
    }
    out
}

#[test]
fn readme_flow_works_and_config_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let base = format!("http://{}", server.addr);

    let curls = readme_curls();
    assert!(
        curls.len() >= 10,
        "the README shows every endpoint: {curls:#?}"
    );
    for cmd in &curls {
        let cmd = cmd.replace("http://127.0.0.1:5000", &base);
        let out = Command::new("sh")
            .args(["-c", &format!("{cmd} -w '\\n%{{http_code}}'")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap();
        let code: u16 = code.trim().parse().unwrap();
        assert!(code == 200, "{cmd} answered {code}: {body}");
        let v: Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{cmd}: not JSON ({e}): {body}"));
        assert!(v.get("error").is_none(), "{cmd}: {body}");
    }

    // Leave some configuration behind and check it comes back after a restart.
    let (code, _) = server.request(
        "PUT",
        "/api/config/tenant/acme/action/login",
        Some(r#"{"max_requests":7,"window_duration_seconds":0.25}"#),
    );
    assert_eq!(code, 200);
    let (code, _) = server.request(
        "PUT",
        "/api/config/tenant/acme/client/bob/action/login",
        Some(r#"{"max_requests":9,"window_duration_seconds":2}"#),
    );
    assert_eq!(code, 200);
    let (code, _) = server.request(
        "PUT",
        "/api/config/tenant/acme/weight",
        Some(r#"{"weight":4}"#),
    );
    assert_eq!(code, 200);
    let (code, _) = server.request("PUT", "/api/config/global", Some(r#"{"max_global_concurrent_requests":33,"max_tenant_queue_size":7,"queue_timeout_ms":900}"#));
    assert_eq!(code, 200);
    let (_, before) = server.request("GET", "/api/config", None);
    assert_eq!(
        before["tenants"]["acme"]["actions"]["login"]["window_duration_seconds"],
        0.25
    );
    assert!(server.terminate().success());

    let server = Server::start(dir.path(), &[]);
    let (code, after) = server.request("GET", "/api/config", None);
    assert_eq!(code, 200);
    assert_eq!(after, before);
    let (_, d) = server.request(
        "POST",
        "/api/check_and_consume",
        Some(r#"{"tenant_id":"acme","client_id":"bob","action_type":"login"}"#),
    );
    assert_eq!(d["limit"]["source"], "client");
    assert_eq!(d["limit"]["max_requests"], 9);
}

#[test]
fn corrupt_persisted_config_stops_startup_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), "{\"version\": \"x\"").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .env("TOLLGATE_RLS_LISTEN", "off")
        .args([
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn sigterm_finishes_requests_in_flight_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--shutdown-grace", "5"]);
    let body = r#"{"tenant_id":"t","client_id":"c","action_type":"a","max_requests":1000,"window_duration_seconds":60}"#;
    let (first, rest) = body.split_at(body.len() / 2);
    // 50 requests whose headers and half their bodies have arrived: accepted, not yet finished.
    let mut conns: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            write!(
                s,
                "POST /api/check_and_consume HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{first}",
                body.len()
            )
            .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let ok = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "still serving the 50 accepted requests"
    );
    // No new connections once draining.
    assert!(
        server.try_request("GET", "/api/health", None).is_err(),
        "listener closed"
    );
    for s in conns.iter_mut() {
        s.write_all(rest.as_bytes()).unwrap();
    }
    let mut allowed = 0;
    for s in conns.iter_mut() {
        let (code, v) = read_response(s).expect("a full response, not a reset");
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["allowed"], true);
        allowed += 1;
    }
    assert_eq!(allowed, 50);
    let status = server.wait(Duration::from_secs(5));
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn config_file_seeds_an_empty_data_dir_and_a_broken_one_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tollgate.toml");
    std::fs::write(
        &file,
        r#"
[global]
max_global_concurrent_requests = 64
max_tenant_queue_size = 8

[tenants.acme]
weight = 3

[tenants.acme.actions.login]
max_requests = 5
window_duration_seconds = 0.5

[tenants.acme.clients.bob.login]
max_requests = 50
window_duration_seconds = 60
"#,
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", file.to_str().unwrap()]);
    let (_, cfg) = server.request("GET", "/api/config", None);
    assert_eq!(cfg["global"]["max_global_concurrent_requests"], 64);
    assert_eq!(cfg["tenants"]["acme"]["weight"], 3);
    assert_eq!(
        cfg["tenants"]["acme"]["actions"]["login"]["max_requests"],
        5
    );
    let (_, d) = server.request(
        "POST",
        "/api/check_and_consume",
        Some(r#"{"tenant_id":"acme","client_id":"bob","action_type":"login"}"#),
    );
    assert_eq!(d["limit"]["source"], "client");
    drop(server);

    std::fs::write(
        &file,
        "[global]\nmax_global_concurrent_requests = \"many\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .env("TOLLGATE_RLS_LISTEN", "off")
        .args([
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--config",
        ])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tollgate.toml") && err.contains("max_global_concurrent_requests"),
        "{err}"
    );
}
