//! Listeners and connections: accept, serve HTTP/1.1 with hyper, and drain on shutdown.
//!
//! Every front is a [`Front`]; this module owns what is common to all of them: one access log
//! line and the request metrics per request ([`access`]), the connection caps ([`limits`]), the
//! head and send deadlines ([`deadline`]), who may connect ([`sources`]), the idle keep-alive
//! timeout, TLS ([`tls`]), and the graceful drain on SIGTERM.

pub mod access;
pub mod body;
pub mod deadline;
pub mod limits;
pub mod sources;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use body::ResponseBody;
use deadline::{ConnState, DeadlineIo, Deadlines};
use limits::{Capped, Permit, Refusal, Slots};

/// A protocol front: turns one request into one response.
pub trait Front: Send + Sync + 'static {
    /// The `front` label in logs and metrics.
    fn name(&self) -> &'static str;

    fn handle(&self, req: Request<Incoming>)
        -> impl Future<Output = Response<ResponseBody>> + Send;
}

/// How a listener treats its connections.
#[derive(Clone)]
pub struct ConnSettings {
    /// Idle keep-alive connections are closed after this long without a new request.
    pub idle_timeout: Duration,
    /// Head and send deadlines.
    pub deadlines: Deadlines,
    /// Largest request head, in bytes.
    pub max_header_bytes: usize,
    /// The connection cap of this listener.
    pub slots: Slots,
    /// TLS for this listener, or `None` for plain HTTP.
    pub tls: Option<Arc<tls::TlsAcceptor>>,
    /// The source networks this listener admits connections from.
    pub sources: sources::AllowedSources,
}

/// Signals shutdown to every listener and connection.
#[derive(Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

/// Longest pause between failed accepts; the pause doubles from 5 ms after each failure.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// Connections over a cap being answered 503 at once; beyond that they are closed unanswered,
/// so a flood costs a bounded number of tasks and descriptors.
const REFUSALS_IN_FLIGHT: usize = 32;
/// How long a refused connection may take to send its head and receive the 503.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Accepts connections on `listener` until shutdown, serving each with `front`.
/// Connection tasks are tracked by `tasks`, so the caller can wait for them to drain.
pub async fn serve<F: Front>(
    listener: TcpListener,
    front: Arc<F>,
    metrics: Arc<Metrics>,
    settings: ConnSettings,
    shutdown: Shutdown,
    tasks: TaskTracker,
) {
    let name = front.name();
    let mut stop = shutdown.subscribe();
    let refusals = Arc::new(tokio::sync::Semaphore::new(REFUSALS_IN_FLIGHT));
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::ZERO;
                pair
            }
            Err(e) => {
                // Usually EMFILE: the connection stays in the backlog, so wait for descriptors
                // to come free instead of spinning on the same error.
                metrics.accept_errors.with_label_values(&[name]).inc();
                backoff = (backoff * 2).clamp(Duration::from_millis(5), MAX_ACCEPT_BACKOFF);
                tracing::warn!(listener = name, error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => continue,
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        };
        if !settings.sources.is_open() {
            let local = stream.local_addr().map(|addr| addr.ip());
            if !local.is_ok_and(|local| settings.sources.admits(peer.ip(), local)) {
                // Closed unanswered, as a firewall would: nothing is read from a client that
                // may not connect (and nothing logged per connection, which it could flood).
                metrics
                    .connections_refused
                    .with_label_values(&[name, "source"])
                    .inc();
                continue;
            }
        }
        let _ = stream.set_nodelay(true);
        let permit = match settings.slots.try_acquire(peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                refuse_connection(stream, name, refusal, &metrics, &refusals, &tasks);
                continue;
            }
        };
        tasks.spawn(accept_connection(
            stream,
            peer,
            front.clone(),
            metrics.clone(),
            settings.clone(),
            permit,
            shutdown.subscribe(),
        ));
    }
}

/// Answers a connection over a cap with `503` and closes it, in a task of its own so the accept
/// loop never waits on a client. The head is read (and thrown away) first: closing a socket
/// with unread input resets it, and the client would lose the answer.
fn refuse_connection(
    mut stream: tokio::net::TcpStream,
    listener: &'static str,
    refusal: Refusal,
    metrics: &Metrics,
    refusals: &Arc<tokio::sync::Semaphore>,
    tasks: &TaskTracker,
) {
    let Ok(slot) = refusals.clone().try_acquire_owned() else {
        metrics
            .connections_refused
            .with_label_values(&[listener, "overloaded"])
            .inc();
        return; // dropping the stream closes it
    };
    metrics
        .connections_refused
        .with_label_values(&[listener, refusal.as_str(Capped::Connections)])
        .inc();
    tasks.spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _slot = slot;
        let answer = async {
            const HEAD_READ: usize = 4096;
            let mut head = [0u8; HEAD_READ];
            let mut seen = 0usize;
            // Read until the end of the head (or 4 KiB of it), then answer.
            while seen < HEAD_READ {
                let n = stream.read(&mut head[seen..]).await?;
                if n == 0 {
                    break;
                }
                seen += n;
                if head[..seen].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let body = "too many connections; retry shortly\n";
            let response = format!(
                "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).await?;
            stream.shutdown().await
        };
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, answer).await;
    });
}

/// What the server tells a front about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
}

/// One accepted connection: its deadlines, the TLS handshake when the listener has TLS, then
/// HTTP. The handshake runs here, in the connection's own task, so a slow client never holds up
/// accept; the head deadline covers it too. The connection holds its slot until it ends.
async fn accept_connection<F: Front>(
    stream: TcpStream,
    peer: SocketAddr,
    front: Arc<F>,
    metrics: Arc<Metrics>,
    settings: ConnSettings,
    permit: Permit,
    mut stop: watch::Receiver<bool>,
) {
    let _permit = permit;
    let state = Arc::new(ConnState::default());
    let deadlines = Deadlines {
        // A 408 written on the raw socket would be garbage inside a TLS session.
        answer_plain: settings.tls.is_none(),
        ..settings.deadlines
    };
    let io = DeadlineIo::new(stream, state.clone(), deadlines);
    let Some(tls) = settings.tls.clone() else {
        return serve_connection(io, peer, state, front, metrics, settings, stop).await;
    };
    let handshake = tokio::select! {
        handshake = tls.accept(io, front.name()) => handshake,
        // Shutting down: a connection that has not finished its handshake has no request to drain.
        _ = stop.wait_for(|s| *s) => return,
    };
    match handshake {
        Ok(stream) => serve_connection(stream, peer, state, front, metrics, settings, stop).await,
        // Counted by the acceptor; at debug level because scanners and probes cause these too.
        Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
    }
}

async fn serve_connection<F: Front, IO>(
    io: IO,
    peer: SocketAddr,
    state: Arc<ConnState>,
    front: Arc<F>,
    metrics: Arc<Metrics>,
    settings: ConnSettings,
    mut stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let state = state.clone();
        let metrics = metrics.clone();
        let front = front.clone();
        service_fn(move |mut req: Request<Incoming>| {
            let front = front.clone();
            let metrics = metrics.clone();
            let active = state.request_started();
            req.extensions_mut().insert(ConnInfo { peer });
            async move {
                Ok::<_, Infallible>(
                    access::instrument(front.as_ref(), &metrics, peer, active, req).await,
                )
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        // A client that half-closes after sending a complete request still gets its answer.
        .half_close(true)
        // hyper starts this timer whenever it waits for a request head, which includes the
        // idle time between keep-alive requests: it is our idle timeout. A head that has begun
        // is held to the much shorter `limits.header_timeout` by `DeadlineIo`.
        .header_read_timeout(settings.idle_timeout)
        .max_header_size(settings.max_header_bytes)
        // The read buffer also carries body bytes on their way to the store: keep it small, it
        // is memory every stalled upload holds.
        .max_buf_size(READ_BUFFER.max(settings.max_header_bytes + 1024));
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let finished = tokio::select! {
        result = conn.as_mut() => Some(result),
        _ = stop.wait_for(|s| *s) => None,
    };
    let result = match finished {
        Some(result) => result,
        None => {
            // Shutting down: finish the request in flight (if any), then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
    if let Some(expired) = state.expired() {
        metrics
            .request_timeouts
            .with_label_values(&[front.name(), expired.as_str()])
            .inc();
        tracing::info!(listener = front.name(), %peer, deadline = expired.as_str(), "connection cut off at its deadline");
    }
}

/// hyper's read buffer per connection, for heads and body bytes alike.
const READ_BUFFER: usize = 64 * 1024;

/// Binds a listener; `""` means the listener is turned off.
pub async fn bind(addr: &str) -> std::io::Result<Option<TcpListener>> {
    if addr.is_empty() {
        return Ok(None);
    }
    TcpListener::bind(addr).await.map(Some)
}

/// What a front needs to take request bodies: the pace they must keep, the upload slots, and
/// the declared bytes one client address may have in flight.
#[derive(Clone)]
pub struct UploadLimits {
    pub body: body::BodyLimits,
    pub slots: Slots,
    pub bytes: Slots,
    /// The most a body sent without a length may have (where a front accepts one).
    pub max_unsized: u64,
}

impl UploadLimits {
    /// Admits an upload of `len` declared bytes from `peer`: a slot and its bytes, held until
    /// the permits are dropped; or the limit in the way.
    pub fn admit(
        &self,
        peer: std::net::IpAddr,
        len: u64,
    ) -> Result<(Permit, Permit), &'static str> {
        let slot = self
            .slots
            .try_acquire(peer)
            .map_err(|r| r.as_str(Capped::Uploads))?;
        let bytes = self
            .bytes
            .try_acquire_weighted(peer, len)
            .map_err(|r| r.as_str(Capped::UploadBytes))?;
        Ok((slot, bytes))
    }
}
