//! Test harness: throwaway `redis-server` processes (and a 3-master Redis Cluster) on free loopback
//! ports, each with its own temporary directory and no persistence, killed on drop. Never the
//! system Redis on 6379.
//!
//! Shared by tollgate-core's and tollgate-server's tests (the latter include it by path).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `redis-server` can be run here. Tests that need it skip (with a message) only when not.
pub fn redis_available() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Prints why a Redis test is skipped; returns true when it must be.
pub fn skip_without_redis(test: &str) -> bool {
    if redis_available() {
        return false;
    }
    // In CI a missing Redis is a broken set-up, never a reason to pass without testing.
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: redis-server is not on PATH, and CI=true forbids skipping Redis tests");
    }
    eprintln!("SKIPPED {test}: redis-server is not on PATH (install redis-server to run it)");
    true
}

/// A port nothing listens on now; for cluster nodes the bus port (+10000) is free too.
pub fn free_port(cluster: bool) -> u16 {
    for _ in 0..1000 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().expect("local addr").port();
        drop(l);
        if !cluster {
            return port;
        }
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port found");
}

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    cluster: bool,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A node started in cluster mode, not yet part of any cluster.
    pub fn start_cluster_node() -> Self {
        Self::start_with(true)
    }

    fn start_with(cluster: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let port = free_port(cluster);
        let mut s = Self {
            child: None,
            port,
            dir,
            cluster,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]);
        }
        self.child = Some(cmd.spawn().expect("start redis-server"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not come up", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn ping(&self) -> bool {
        self.command(&["PING"]).is_some_and(|r| r.contains("PONG"))
    }

    /// Runs one command with a raw RESP round trip; returns the raw reply.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{}\r\n", a.len(), a));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut buf = vec![0u8; 1 << 16];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Kills the server (SIGKILL) without cleaning up, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on `port`, same directory (so a dump written by `SAVE` is loaded).
    pub fn restart_on(&mut self, port: u16) {
        self.kill();
        self.port = port;
        self.spawn();
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 3-master Redis Cluster on loopback, optionally with replicas.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        Self::start_with_replicas(0)
    }

    /// 3 masters with `replicas` replicas each (`redis-cli --cluster create --cluster-replicas`);
    /// returns once the cluster is ok and every master has all its replicas attached.
    pub fn start_with_replicas(replicas: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
            .map(|_| RedisServer::start_with(true))
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = nodes.iter().all(|n| {
                n.command(&["CLUSTER", "INFO"])
                    .is_some_and(|r| r.contains("cluster_state:ok"))
            }) && nodes.iter().all(|n| {
                n.command(&["INFO", "replication"]).is_some_and(|r| {
                    r.contains("role:slave") && r.contains("master_link_status:up")
                        || r.contains(&format!("connected_slaves:{replicas}"))
                })
            });
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "cluster did not become ok with its replicas attached"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { nodes }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }
}
