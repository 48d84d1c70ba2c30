//! Issue 19 item 3: clients that send headers and then trickle the body must not hold the
//! connection cap. Through the real binary and real sockets.

mod support;

use std::time::Duration;

use support::Binary;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How one slow-body connection ended.
#[derive(Debug)]
struct Ended {
    /// The server closed the connection (or answered) before the trickle ran out.
    evicted: bool,
    /// What the server sent, if anything arrived before the close.
    answer: String,
}

/// Opens `n` connections that send a complete head announcing a 60,000-byte body, then one body
/// byte every 100 ms. Bounded: 100 trickles is 10 s, far past the deadlines under test.
fn slow_bodies(addr: std::net::SocketAddr, n: usize) -> Vec<tokio::task::JoinHandle<Ended>> {
    (0..n)
        .map(|_| {
            tokio::spawn(async move {
                let ended = |evicted, answer: &[u8]| Ended {
                    evicted,
                    answer: String::from_utf8_lossy(answer).into_owned(),
                };
                let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                    return ended(false, b"");
                };
                let head = "POST /api/check_and_consume HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{";
                if s.write_all(head.as_bytes()).await.is_err() {
                    return ended(true, b"");
                }
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                for _ in 0..100 {
                    tokio::select! {
                        biased;
                        r = s.read(&mut buf) => {
                            match r {
                                Ok(n) if n > 0 => {
                                    got.extend_from_slice(&buf[..n]);
                                    // Read the rest of the answer up to the close (bounded).
                                    for _ in 0..20 {
                                        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
                                            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                                            _ => break,
                                        }
                                    }
                                    return ended(true, &got);
                                }
                                // EOF or a reset: evicted.
                                _ => return ended(true, &got),
                            }
                        }
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {
                            if s.write_all(b" ").await.is_err() {
                                return ended(true, &got);
                            }
                        }
                    }
                }
                ended(false, &got)
            })
        })
        .collect()
}

/// Fills the connection cap twice over with slow bodies, then checks that normal requests are
/// answered, every slow connection was cut, and the answers that reached the slow clients are
/// 408 `body_timeout`.
async fn slow_bodies_are_cut(args: &[&str]) {
    let bin = Binary::start(args).await;
    let slow = slow_bodies(bin.addr, 8);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Well under the old release time (the 30 s request timeout), well over the new deadlines.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    for i in 0..3 {
        let r = client
            .post(bin.url("/api/check_and_consume"))
            .json(&serde_json::json!({"tenant_id":"t","client_id":format!("c{i}"),"action_type":"a","max_requests":5,"window_duration_seconds":60}))
            .send()
            .await
            .expect("answered while slow bodies fill the connection cap");
        assert_eq!(r.status(), 200);
    }
    let mut answers = Vec::new();
    for h in slow {
        let e = h.await.unwrap();
        assert!(e.evicted, "a slow body held its connection: {e:?}");
        if !e.answer.is_empty() {
            answers.push(e.answer);
        }
    }
    assert!(
        !answers.is_empty(),
        "no slow client received an answer before its connection was closed"
    );
    for a in &answers {
        assert!(a.starts_with("HTTP/1.1 408"), "{a}");
        assert!(a.contains("\"error\":\"body_timeout\""), "{a}");
        assert!(a.to_ascii_lowercase().contains("connection: close"), "{a}");
    }
    // The service is healthy afterwards.
    let r = client.get(bin.url("/api/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(bin.stop().await.success());
}

#[tokio::test]
async fn slow_bodies_are_cut_at_the_body_deadline() {
    // The rate check off: only the whole-body deadline cuts them.
    slow_bodies_are_cut(&[
        "--max-connections",
        "4",
        "--body-timeout",
        "1",
        "--body-min-rate",
        "0",
    ])
    .await;
}

#[tokio::test]
async fn slow_bodies_are_cut_below_the_minimum_rate() {
    // A body deadline far past the test's bounds: only the rate check (10 B/s < 1000 B/s) cuts
    // them in time.
    slow_bodies_are_cut(&[
        "--max-connections",
        "4",
        "--body-timeout",
        "60",
        "--body-min-rate",
        "1000",
    ])
    .await;
}

#[tokio::test]
async fn body_flags_are_validated() {
    for args in [["--body-timeout", "0"], ["--body-timeout", "nan"]] {
        let out = support::tollgate_command()
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(tempfile::tempdir().unwrap().path())
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--body-timeout"), "{err}");
    }
}
