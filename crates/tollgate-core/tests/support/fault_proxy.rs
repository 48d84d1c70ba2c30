//! Test harness: a fault-injecting TCP relay between tollgate and a Redis (or anything else) on
//! loopback. A test points tollgate at `proxy.url()` and switches the fault at runtime:
//!
//! - `set_latency(d)`: every reply chunk (upstream → client) is delivered `d` after it arrived, so
//!   each round trip gets `d` longer; throughput is not capped (chunks are queued, not serialized).
//! - `set_mode(Mode::Stall)`: established connections stop relaying in both directions; bytes wait
//!   in the kernel buffers and flow again, late, when the mode returns to `Pass` (like a partition
//!   that heals before TCP gives up). New connections still work.
//! - `set_mode(Mode::BlackHole)`: as `Stall`, and new connections are accepted but never relayed:
//!   packets vanish, nothing is closed, nothing answers.
//! - `set_mode(Mode::RefuseNew)`: new connections are closed at once; established ones still work.
//! - `reset_established()`: every open connection is closed with a TCP reset (SO_LINGER 0), on
//!   both sides, in the middle of whatever was in flight.
//!
//! The relay runs on its own thread and runtime, so it serves sync and async tests alike and is not
//! starved by the test's runtime. It listens on 127.0.0.1 only; every loop ends when the proxy is
//! dropped.
//!
//! Shared by tollgate-core's and tollgate-server's tests (the latter include it by path).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Pass = 0,
    Stall = 1,
    BlackHole = 2,
    RefuseNew = 3,
}

impl Mode {
    fn from_u8(v: u8) -> Mode {
        match v {
            1 => Mode::Stall,
            2 => Mode::BlackHole,
            3 => Mode::RefuseNew,
            _ => Mode::Pass,
        }
    }
}

struct Shared {
    mode: AtomicU8,
    latency_us: AtomicU64,
    /// Connections accepted so far (relayed or not), for tests that check reconnects happened.
    accepted: AtomicU64,
    /// Bumped by `reset_established`; every connection alive then resets itself.
    resets: watch::Sender<u64>,
    /// Bumped on every mode change, so stalled relays re-check the mode at once.
    mode_changed: watch::Sender<u64>,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a relay to `upstream` (a loopback address) on a free loopback port.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        assert!(
            upstream.ip().is_loopback(),
            "the proxy relays to loopback only"
        );
        let shared = Arc::new(Shared {
            mode: AtomicU8::new(Mode::Pass as u8),
            latency_us: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            resets: watch::channel(0).0,
            mode_changed: watch::channel(0).0,
        });
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy's port");
        std_listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = std_listener.local_addr().expect("proxy addr");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("tokio listener");
                    tokio::select! {
                        _ = accept_loop(listener, upstream, s) => {}
                        _ = rx => {}
                    }
                });
                // Dropping the runtime cancels every relay task and closes their sockets.
            })
            .expect("spawn the proxy thread");
        FaultProxy {
            addr,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::SeqCst);
        self.shared.mode_changed.send_modify(|v| *v += 1);
    }

    pub fn mode(&self) -> Mode {
        Mode::from_u8(self.shared.mode.load(Ordering::SeqCst))
    }

    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .latency_us
            .store(latency.as_micros() as u64, Ordering::SeqCst);
    }

    /// Resets every connection open now (new ones are unaffected).
    pub fn reset_established(&self) {
        self.shared.resets.send_modify(|v| *v += 1);
    }

    /// Back to a clean relay: no latency, mode `Pass`.
    pub fn clear(&self) {
        self.set_latency(Duration::ZERO);
        self.set_mode(Mode::Pass);
    }

    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors, typically: back off rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let mode = Mode::from_u8(shared.mode.load(Ordering::SeqCst));
        if mode == Mode::RefuseNew {
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            if mode == Mode::BlackHole {
                // Hold the socket open and silent; once the fault clears, the bytes the client
                // sent meanwhile reach the server late, as TCP retransmission would deliver them.
                let mut resets = shared.resets.subscribe();
                if !wait_unstalled(&shared, &mut resets).await {
                    let _ = client.set_zero_linger();
                    return;
                }
            }
            let Ok(server) = TcpStream::connect(upstream).await else {
                let _ = client.set_zero_linger();
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            relay(client, server, shared).await;
        });
    }
}

/// Relays one connection until either side closes or a reset is requested.
async fn relay(client: TcpStream, server: TcpStream, shared: Arc<Shared>) {
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    tokio::join!(
        pump(client_r, server_w, shared.clone(), false),
        pump(server_r, client_w, shared, true),
    );
}

/// Whether relaying is paused now.
fn stalled(shared: &Shared) -> bool {
    matches!(
        Mode::from_u8(shared.mode.load(Ordering::SeqCst)),
        Mode::Stall | Mode::BlackHole
    )
}

/// Waits until relaying is not paused; false if a reset came first.
async fn wait_unstalled(shared: &Shared, resets: &mut watch::Receiver<u64>) -> bool {
    let mut mode_rx = shared.mode_changed.subscribe();
    for _ in 0..1_000_000 {
        if !stalled(shared) {
            return true;
        }
        tokio::select! {
            _ = mode_rx.changed() => {}
            _ = resets.changed() => return false,
        }
    }
    false
}

/// Copies one direction. `delayed` applies the configured latency to this direction. The reader
/// and the writer run concurrently, joined by a queue of (due time, bytes), so latency delays each
/// chunk without serializing them. On a reset each side sets SO_LINGER 0 on its own socket, so the
/// close that follows is an RST.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: Arc<Shared>,
    delayed: bool,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async {
        let mut resets = shared.resets.subscribe();
        resets.mark_unchanged();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if !wait_unstalled(&shared, &mut resets).await {
                let _ = from.as_ref().set_zero_linger();
                return;
            }
            let mut mode_rx = shared.mode_changed.subscribe();
            tokio::select! {
                _ = resets.changed() => {
                    let _ = from.as_ref().set_zero_linger();
                    return;
                }
                // Re-check the mode: a stall stops reading at once.
                _ = mode_rx.changed() => {}
                n = from.read(&mut buf) => match n {
                    Ok(0) | Err(_) => {
                        // Empty = end of stream: the writer half-closes after the queued bytes.
                        let _ = tx.send((Instant::now(), Vec::new()));
                        return;
                    }
                    Ok(n) => {
                        let lat = if delayed {
                            Duration::from_micros(shared.latency_us.load(Ordering::SeqCst))
                        } else {
                            Duration::ZERO
                        };
                        let _ = tx.send((Instant::now() + lat, buf[..n].to_vec()));
                    }
                },
            }
        }
    };
    let writer = async {
        let mut resets = shared.resets.subscribe();
        resets.mark_unchanged();
        loop {
            let item = tokio::select! {
                _ = resets.changed() => None,
                item = rx.recv() => item,
            };
            let Some((due, bytes)) = item else {
                let _ = to.as_ref().set_zero_linger();
                return;
            };
            if bytes.is_empty() {
                let _ = to.shutdown().await;
                return;
            }
            let on_time = tokio::select! {
                _ = resets.changed() => false,
                _ = tokio::time::sleep_until(due) => true,
            };
            // A stall that began while this chunk waited holds it too.
            if !on_time || !wait_unstalled(&shared, &mut resets).await {
                let _ = to.as_ref().set_zero_linger();
                return;
            }
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(reader, writer);
}
