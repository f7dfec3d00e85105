//! The HTTP API's transport, hardened. `axum::serve` has no header or idle timeout and no
//! connection cap (20,116 idle connections exhausted the file descriptors and took routing
//! down), so connections are accepted here and served by hyper's HTTP/1 server with:
//!
//! - at most `--max-connections` open at once. At the cap a new connection makes room by
//!   closing the connection idle the longest (one with no request under way: nothing of a
//!   request read since its last answer was sent, counted in
//!   `kvroute_http_connections_evicted_total`), so valid clients do not queue behind a
//!   flood of idle connections from many addresses; a connection mid-request is never cut.
//!   Only when every connection is mid-request does the listener wait (the kernel's backlog
//!   holds the rest) until one closes;
//! - at most `--max-connections-per-ip` from one address: past it that address's new
//!   connections are closed at once, so one client cannot hold every slot;
//! - a header timeout that is also the idle timeout: hyper starts it whenever it waits for
//!   a request head, on a new connection and between kept-alive requests alike, so a client
//!   that sends nothing, or a byte at a time, loses its connection after
//!   `--header-timeout-ms` (slowloris);
//! - request heads capped at [`defaults::MAX_HEADER_BYTES`]; HTTP/1 only (the filter and
//!   the tools speak HTTP/1.1);
//! - graceful shutdown: open connections finish their request, within
//!   [`defaults::SHUTDOWN_GRACE_MS`].
//!
//! Each request carries its caller's address ([`Peer`]): tickets are tied to it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::Router;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore, TryAcquireError};
use tower::ServiceExt;

use crate::defaults;
use crate::http_limits::HttpLimits;

/// Pause after a failed accept (EMFILE and the like) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The caller's address, for handlers that tie what they hand out to who asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// Open connections per address.
#[derive(Default)]
struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`PerIp`], given back when dropped.
struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut open = self.open.lock();
        let n = open.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// `Activity::since` of a connection with a request under way.
const BUSY: u64 = u64::MAX;
/// `Activity::since` of a connection chosen to make room (closing).
const EVICTED: u64 = u64::MAX - 1;

/// What one connection is doing, for choosing whom to close at the cap. A request is under
/// way from its first byte read to the end of its answer's body.
struct Activity {
    /// [`BUSY`], [`EVICTED`], or when it became idle (nanoseconds since the table's epoch).
    since: AtomicU64,
    /// Whether an answer was sent on it (then hyper closes it gracefully once idle; before
    /// that hyper would wait for a first request).
    answered: AtomicBool,
    /// Woken when chosen to make room.
    evict: Notify,
}

impl Activity {
    /// Bytes of a request arrived.
    fn busy(&self) {
        let now = self.since.load(Ordering::Acquire);
        if now != BUSY && now != EVICTED {
            let _ = self
                .since
                .compare_exchange(now, BUSY, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// The answer's body ended (or the request was dropped).
    fn idle(&self, at: u64) {
        self.answered.store(true, Ordering::Release);
        let _ = self
            .since
            .compare_exchange(BUSY, at, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// The open connections, for closing the one idle the longest at the cap.
struct Connections {
    epoch: Instant,
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
}

impl Connections {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            next: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn now(&self) -> u64 {
        // Never BUSY or EVICTED: those are centuries away.
        self.epoch.elapsed().as_nanos() as u64
    }

    /// A new connection, idle from now until its first bytes arrive.
    fn add(&self) -> (u64, Arc<Activity>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity {
            since: AtomicU64::new(self.now()),
            answered: AtomicBool::new(false),
            evict: Notify::new(),
        });
        self.open.lock().insert(id, activity.clone());
        (id, activity)
    }

    fn remove(&self, id: u64) {
        self.open.lock().remove(&id);
    }

    /// Asks the connection idle the longest to close; false if every one is mid-request.
    /// A scan of at most `--max-connections` entries, made only at the cap.
    fn evict_oldest_idle(&self) -> bool {
        let open = self.open.lock();
        loop {
            let Some((since, oldest)) = open
                .values()
                .map(|a| (a.since.load(Ordering::Acquire), a))
                .filter(|(since, _)| *since < EVICTED)
                .min_by_key(|(since, _)| *since)
            else {
                return false;
            };
            // Lost to a request's first bytes arriving meanwhile: choose again.
            if oldest
                .since
                .compare_exchange(since, EVICTED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                oldest.evict.notify_one();
                return true;
            }
        }
    }
}

/// A TCP stream that marks its connection busy when request bytes arrive.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.busy();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Marks its connection idle when dropped: held by the answer's body until hyper has
/// taken all of it, or by the request's future if it is dropped first.
struct Answering {
    connections: Arc<Connections>,
    activity: Arc<Activity>,
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.activity.idle(self.connections.now());
    }
}

/// An answer's body, keeping its connection busy until it ends.
struct Tracked {
    body: Body,
    _answering: Answering,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Serve `app` on `listener` until `shutdown` resolves; connections closed to make room at
/// the cap are counted in `evicted`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &HttpLimits,
    evicted: Counter,
    shutdown: impl Future<Output = ()>,
) {
    // Past u32 (a semaphore's bulk acquire at shutdown) is no real cap anyway.
    let max_connections = limits.max_connections.clamp(1, u32::MAX as usize);
    let slots = Arc::new(Semaphore::new(max_connections));
    let per_ip = Arc::new(PerIp::default());
    let max_per_ip = limits.max_connections_per_ip.max(1);
    let connections = Arc::new(Connections::new());
    let (stop, stopping) = watch::channel(false);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_timeout_ms.max(1)))
        .max_buf_size(defaults::MAX_HEADER_BYTES);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(ip_slot) = per_ip.take(peer.ip(), max_per_ip) else {
            tracing::debug!(%peer, "connection refused: too many from this address");
            continue;
        };
        // At the cap, the connection idle the longest makes room; if every one is
        // mid-request, this one waits (and the listener with it) until one ends.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(TryAcquireError::Closed) => break,
            Err(TryAcquireError::NoPermits) => {
                if connections.evict_oldest_idle() {
                    evicted.inc();
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    _ = &mut shutdown => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let (id, activity) = connections.add();
        let io = TokioIo::new(Watched {
            stream,
            activity: activity.clone(),
        });
        let (app, answering) = (app.clone(), connections.clone());
        let conn_activity = activity.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(Peer(peer));
            let answering = Answering {
                connections: answering.clone(),
                activity: conn_activity.clone(),
            };
            let app = app.clone();
            async move {
                let Ok(response) = app.oneshot(req).await;
                Ok::<_, Infallible>(response.map(|body| Tracked {
                    body,
                    _answering: answering,
                }))
            }
        });
        let conn = builder.serve_connection(io, service);
        let (connections, mut stopping) = (connections.clone(), stopping.clone());
        tokio::spawn(async move {
            tokio::pin!(conn);
            let close = tokio::select! {
                _ = conn.as_mut() => false,
                _ = activity.evict.notified() => true,
                _ = stopping.wait_for(|stop| *stop) => true,
            };
            // Closing: a connection answered before or mid-request is shut down by hyper
            // (at once if idle, after its answer if not); one never answered and idle has
            // had no request, and hyper would wait for one, so it is dropped.
            let mid_request = activity.since.load(Ordering::Acquire) == BUSY;
            if close && (mid_request || activity.answered.load(Ordering::Acquire)) {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
            connections.remove(id);
            drop(ip_slot);
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let grace = Duration::from_millis(defaults::SHUTDOWN_GRACE_MS);
    // Every connection gives its slot back when it ends.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period");
    }
}
