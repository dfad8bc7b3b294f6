//! The listener: HTTP/1.1 connections under the proxy's own limits, so slow or idle clients
//! cannot hold its resources (a slowloris holds connections by sending nothing, or half a
//! request, forever).
//!
//! - At most `server.max_connections` connections at once; past it, new ones wait in the
//!   kernel's accept backlog until one closes.
//! - A request head must be complete within `server.header_read_timeout` of its first byte.
//! - A connection with nothing in flight is closed after `server.idle_timeout` without a
//!   byte from its client (from when it opened, or when its last answer was sent).
//! - A request head is read up to twice `server.max_header_bytes` and a request line's worth
//!   (hyper's own bound is about 400 KB: a thousand unfinished heads would hold 400 MB); past
//!   it, 431 and the connection closed (see [`HEAD_TOO_LARGE`]).
//! - A client that stops reading its answer is cut off after `server.write_timeout` without
//!   progress (nginx's `send_timeout`): the answer's memory and the connection are freed.
//!
//! - With `server.tls_cert_file`, connections are TLS (see `crate::tls::ServerTls`).
//!
//! hyper has one timer for both phases (ready → head complete); they are judged apart here,
//! per connection, from what its reads and its requests show (see [`Activity`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use tokio::sync::watch;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Duration, Instant};
use tower::ServiceExt;

/// The connection limits (`[server]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub(crate) header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    /// The most a request head (request line and headers) may take in the read buffer.
    pub max_head_bytes: usize,
    /// After shutdown starts: how long requests in flight may take to finish.
    pub grace: Duration,
}

impl Limits {
    /// The room a request head gets: its headers' bound and a request line's (nginx's
    /// `large_client_header_buffers` allows 8 KiB for one).
    pub fn head_room(max_header_bytes: u64) -> usize {
        const REQUEST_LINE: usize = 8 * 1024;
        usize::try_from(max_header_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(REQUEST_LINE)
    }

    /// The longest the watchdog sleeps without looking: a deadline set while it sleeps is
    /// never nearer than this, so it is met exactly (see [`Activity::expired`]).
    fn recheck(&self) -> Duration {
        self.idle_timeout
            .min(self.header_read_timeout)
            .min(self.write_timeout)
    }
}

/// Why the listener closed a connection (the `reason` of `vbs_http_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Nothing in flight and no byte for `server.idle_timeout`.
    Idle,
    /// A request head not complete within `server.header_read_timeout`.
    SlowHead,
    /// No progress writing an answer for `server.write_timeout`.
    SlowReader,
}

impl Closed {
    pub fn label(self) -> &'static str {
        match self {
            Closed::Idle => "idle",
            Closed::SlowHead => "slow_head",
            Closed::SlowReader => "slow_reader",
        }
    }
}

/// Where a connection stands.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Nothing in flight, no byte of a next request since `since`.
    Idle { since: Instant },
    /// The first byte of a request head came at `since`; the head is not complete.
    Head { since: Instant },
    /// Requests (or their answers' bodies) in flight.
    Busy(usize),
}

/// One connection's phase, told by its reads (a byte while idle starts a head) and by its
/// requests (a head complete is a request handed to the service; its answer's body dropped
/// is the end of it).
///
/// Apart from the phase, whether a write is stuck: since when the socket has refused the
/// answer's bytes (its buffers full: the client stopped reading).
///
/// Nothing is signalled when either changes: the watchdog looks at least every
/// [`Limits::recheck`], the shortest of the limits, so a deadline that appears while it sleeps
/// is still met on time. A request costs two uncontended lock-and-writes and no wake-up; a
/// write, one relaxed load.
struct Activity {
    phase: Mutex<Phase>,
    /// When the connection opened: the origin of `write_blocked`.
    opened: Instant,
    /// Nanoseconds after `opened` (plus one) at which a write was first refused and has not
    /// gone through since; 0: writes are flowing.
    write_blocked: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        let opened = Instant::now();
        Activity {
            phase: Mutex::new(Phase::Idle { since: opened }),
            opened,
            write_blocked: AtomicU64::new(0),
        }
    }

    /// A write's outcome: `refused` when the socket took nothing (it would block).
    fn wrote(&self, refused: bool) {
        let blocked = self.write_blocked.load(Ordering::Relaxed);
        if refused && blocked == 0 {
            let since = self.opened.elapsed().as_nanos() as u64 + 1;
            self.write_blocked.store(since, Ordering::Relaxed);
        } else if !refused && blocked != 0 {
            self.write_blocked.store(0, Ordering::Relaxed);
        }
    }

    fn set(&self, update: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        *phase = update(*phase);
    }

    /// Bytes came; whether a request head is being read, and whether it began with them.
    fn read_bytes(&self) -> (bool, bool) {
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        match *phase {
            Phase::Idle { .. } => {
                *phase = Phase::Head {
                    since: Instant::now(),
                };
                (true, true)
            }
            Phase::Head { .. } => (true, false),
            Phase::Busy(_) => (false, false),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.set(|p| match p {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        });
        InFlight(self.clone())
    }

    /// When the connection is past its limits, and which, if nothing changes before then.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, Closed)> {
        let phase = match *self.phase.lock().unwrap_or_else(|p| p.into_inner()) {
            Phase::Idle { since } => Some((since + limits.idle_timeout, Closed::Idle)),
            Phase::Head { since } => Some((since + limits.header_read_timeout, Closed::SlowHead)),
            Phase::Busy(_) => None,
        };
        let blocked = match self.write_blocked.load(Ordering::Relaxed) {
            0 => None,
            since => {
                let since = self.opened + Duration::from_nanos(since - 1);
                Some((since + limits.write_timeout, Closed::SlowReader))
            }
        };
        match (phase, blocked) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// Resolves, with the reason, when the connection has been idle, half a head, or unable
    /// to write, for too long.
    ///
    /// A deadline that appears while the watchdog sleeps (a head started on an idle
    /// connection, a write refused) is at least [`Limits::recheck`] away when it appears, and
    /// the watchdog never sleeps longer than that: it sees it before it passes.
    async fn expired(&self, limits: &Limits) -> Closed {
        let recheck = limits.recheck();
        loop {
            let now = Instant::now();
            match self.deadline(limits) {
                Some((deadline, why)) if now >= deadline => return why,
                Some((deadline, _)) => tokio::time::sleep_until(deadline.min(now + recheck)).await,
                None => tokio::time::sleep(recheck).await,
            }
        }
    }
}

/// A request in flight on its connection, until its answer's body is done with.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.set(|p| match p {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle {
                since: Instant::now(),
            },
        });
    }
}

/// The socket, telling its connection's [`Activity`] about the bytes it reads.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
    /// Bytes read since the request head being read began.
    head_read: usize,
    /// The most a head may take before the connection is refused (see [`HEAD_TOO_LARGE`]).
    max_head_read: usize,
    /// No TLS over it: a refusal may be written as it is.
    plain: bool,
}

/// A request head still unfinished past its bound: hyper would buffer about 400 KB of it (its
/// `max_buf_size` bounds its write buffer too, and a smaller one costs every answer flushes:
/// measured, the hit path's CPU went from 21 to 37 µs). So the bound is kept here, on the
/// bytes read while a head is being read (twice the head's room: reads come in hyper's buffer
/// sizes, and may carry a body's first bytes): past it, a 431 (on plain connections) and the
/// connection is closed. A head that completes within it meets `server.max_header_bytes`
/// exactly, in `protect.rs`.
const HEAD_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\ncontent-length: 102\r\nconnection: close\r\n\r\n{\"badRequest\": {\"code\": 431, \"message\": \"Request header fields too large (server.max_header_bytes).\"}}";

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.head_read = match self.activity.read_bytes() {
                (true, true) => read,
                (true, false) => self.head_read.saturating_add(read),
                (false, _) => 0,
            };
            if self.head_read > self.max_head_read {
                if self.plain {
                    // Best effort: the client is sending, so its socket takes this at once.
                    let _ = self.stream.try_write(HEAD_TOO_LARGE);
                }
                return Poll::Ready(Err(std::io::Error::other("request head too large")));
            }
        }
        polled
    }
}

impl Watched {
    fn wrote<T>(&self, polled: Poll<T>) -> Poll<T> {
        self.activity.wrote(polled.is_pending());
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.wrote(polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// An answer's body that keeps its request in flight until hyper is done with it.
struct Tracked {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Counts a connection closed on a limit (a metric of the application's).
pub type ClosedCounter = Arc<dyn Fn(Closed) + Send + Sync>;

/// Marks a request that came over the listener's TLS: its links say `https`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServedOverTls;

/// Serve `app` on `listener` within `limits` until `shutdown` resolves; then stop accepting,
/// close idle connections at once, and give the others `limits.grace` to finish. With `tls`,
/// every connection is TLS; its handshake must be done within `limits.header_read_timeout`.
/// Each request is served by the application `app` holds when it arrives (the edge and its
/// routes; a new set of regions swaps it, see `app::keep_fresh`).
pub async fn run(
    listener: TcpListener,
    app: watch::Receiver<super::Edge>,
    limits: Limits,
    closed: ClosedCounter,
    tls: Option<Arc<crate::tls::ServerTls>>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Shutdown first, every time: a queue of ready connections must not starve it.
        let slot = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: the condition passes; do not spin on it.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let watched = Watched {
            stream,
            activity: activity.clone(),
            head_read: 0,
            max_head_read: limits.max_head_bytes.saturating_mul(2),
            plain: tls.is_none(),
        };
        let connection = Connection {
            app: app.clone(),
            activity,
            peer,
            limits,
            closed: closed.clone(),
            watcher: graceful.watcher(),
        };
        let acceptor = tls.as_ref().map(|tls| tls.acceptor());
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                None => connection.serve(watched, false).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(
                        limits.header_read_timeout,
                        acceptor.accept(watched),
                    );
                    match handshake.await {
                        Ok(Ok(stream)) => connection.serve(stream, true).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.grace) => {
            tracing::warn!(grace = ?limits.grace, "shutdown grace expired with requests still in flight");
        }
    }
}

/// One accepted connection, before its requests are served.
struct Connection {
    app: watch::Receiver<super::Edge>,
    activity: Arc<Activity>,
    peer: SocketAddr,
    limits: Limits,
    closed: ClosedCounter,
    watcher: hyper_util::server::graceful::Watcher,
}

impl Connection {
    /// HTTP/1.1 on `io` until the client closes, the connection idles or stalls past its
    /// limits, or shutdown closes it.
    async fn serve<IO>(self, io: IO, over_tls: bool)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            app,
            activity,
            peer,
            limits,
            closed,
            watcher,
        } = self;
        let service = {
            let activity = activity.clone();
            hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                let extensions = request.extensions_mut();
                extensions.insert(ConnectInfo::<SocketAddr>(peer));
                if over_tls {
                    extensions.insert(ServedOverTls);
                }
                let in_flight = activity.begin();
                let answer = app.borrow().clone().oneshot(request.map(axum::body::Body::new));
                async move {
                    let response = answer.await?;
                    Ok::<_, std::convert::Infallible>(response.map(|body| Tracked {
                        body,
                        _in_flight: in_flight,
                    }))
                }
            })
        };
        let connection = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(io), service);
        tokio::select! {
            _ = watcher.watch(connection) => {}
            why = activity.expired(&limits) => {
                closed(why);
                tracing::debug!(%peer, reason = why.label(), "closed a connection past a limit");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_of_a_head_too_large_is_a_whole_cinder_fault() {
        let text = std::str::from_utf8(HEAD_TOO_LARGE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        let fault: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(fault["badRequest"]["code"], 431);
    }
}
