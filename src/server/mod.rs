//! Listeners and connections: accept, serve HTTP/1.1 with hyper, and drain on shutdown.
//!
//! Every front is a [`Front`]; this module owns what is common to all of them: one access log
//! line and the request metrics per request ([`access`]), the idle keep-alive timeout, TLS
//! ([`tls`]) and the graceful drain on SIGTERM.

pub mod access;
pub mod body;
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

/// A protocol front: turns one request into one response.
pub trait Front: Send + Sync + 'static {
    /// The `front` label in logs and metrics.
    fn name(&self) -> &'static str;

    fn handle(&self, req: Request<Incoming>)
        -> impl Future<Output = Response<ResponseBody>> + Send;
}

/// Connection settings shared by all listeners.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    /// Idle keep-alive connections are closed after this long without a new request.
    pub idle_timeout: Duration,
    /// TLS for this listener, or `None` for plain HTTP.
    pub tls: Option<Arc<tls::TlsAcceptor>>,
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
    let mut stop = shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Usually EMFILE: back off a little instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tasks.spawn(accept_connection(
            stream,
            peer,
            front.clone(),
            metrics.clone(),
            settings.clone(),
            shutdown.subscribe(),
        ));
    }
}

/// One accepted connection: the TLS handshake when the listener has TLS, then HTTP. The
/// handshake runs here, in the connection's own task, so a slow client never holds up accept.
async fn accept_connection<F: Front>(
    stream: TcpStream,
    peer: SocketAddr,
    front: Arc<F>,
    metrics: Arc<Metrics>,
    settings: ConnSettings,
    mut stop: watch::Receiver<bool>,
) {
    let Some(tls) = settings.tls.clone() else {
        return serve_connection(stream, peer, front, metrics, settings, stop).await;
    };
    let handshake = tokio::select! {
        handshake = tls.accept(stream, front.name()) => handshake,
        // Shutting down: a connection that has not finished its handshake has no request to drain.
        _ = stop.wait_for(|s| *s) => return,
    };
    match handshake {
        Ok(stream) => serve_connection(stream, peer, front, metrics, settings, stop).await,
        // Counted by the acceptor; at debug level because scanners and probes cause these too.
        Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
    }
}

async fn serve_connection<F: Front, IO>(
    io: IO,
    peer: SocketAddr,
    front: Arc<F>,
    metrics: Arc<Metrics>,
    settings: ConnSettings,
    mut stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let front = front.clone();
        let metrics = metrics.clone();
        async move { Ok::<_, Infallible>(access::instrument(front.as_ref(), &metrics, peer, req).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        // hyper starts this timer whenever it waits for a request head, which includes the
        // idle time between keep-alive requests: it is our idle timeout.
        .header_read_timeout(settings.idle_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            return;
        }
        _ = stop.wait_for(|s| *s) => {}
    }
    // Shutting down: finish the request in flight (if any), then close.
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "connection ended with an error while draining");
    }
}

/// Binds a listener; `""` means the listener is turned off.
pub async fn bind(addr: &str) -> std::io::Result<Option<TcpListener>> {
    if addr.is_empty() {
        return Ok(None);
    }
    TcpListener::bind(addr).await.map(Some)
}
