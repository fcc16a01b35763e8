//! Deadlines on a connection's socket that a slow client cannot reset by trickling.
//!
//! - **Request heads**: a head must be complete within `header_timeout` of its first byte (the
//!   first request's clock starts when the connection opens). This is separate from the idle
//!   keep-alive timeout, which hyper applies between requests: Gradle keeps pooled connections
//!   idle for minutes, but a head that has started must finish quickly. On expiry a plain-HTTP
//!   client gets a `408` and the connection closes.
//! - **Responses**: once a write would block (the client stopped reading), the client has
//!   `send_stall_timeout` to take at least [`SEND_PROGRESS`] bytes; a client reading a few
//!   bytes at a time does not restart the clock.
//!
//! Request bodies have their own rate limit, applied where the body is read
//! ([`super::body`]), because only there is it known whether a pause is the client's or ours.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Bytes a stalled client must take within `send_stall_timeout` for the response to go on.
pub const SEND_PROGRESS: usize = 16 * 1024;

const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// What a connection's requests and its socket share: whether a request is being handled
/// (so a head is not being read), and which deadline, if any, cut the connection.
#[derive(Default)]
pub struct ConnState {
    /// Requests whose heads have been read; bumped when the front starts on one.
    heads: AtomicU64,
    /// Requests in progress (0 or 1 on HTTP/1.1).
    active: AtomicU64,
    expired: AtomicU8,
}

/// Which deadline ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    Header,
    Send,
}

impl Expired {
    pub fn as_str(self) -> &'static str {
        match self {
            Expired::Header => "header",
            Expired::Send => "send",
        }
    }
}

impl ConnState {
    /// A request head was read and is being handled; the returned guard marks its end.
    pub fn request_started(self: &Arc<Self>) -> ActiveRequest {
        self.heads.fetch_add(1, Ordering::AcqRel);
        self.active.fetch_add(1, Ordering::AcqRel);
        ActiveRequest {
            state: self.clone(),
        }
    }

    pub fn expired(&self) -> Option<Expired> {
        match self.expired.load(Ordering::Acquire) {
            1 => Some(Expired::Header),
            2 => Some(Expired::Send),
            _ => None,
        }
    }

    fn set_expired(&self, which: Expired) {
        let code = match which {
            Expired::Header => 1,
            Expired::Send => 2,
        };
        self.expired.store(code, Ordering::Release);
    }
}

/// Held while a request is handled and its response sent.
pub struct ActiveRequest {
    state: Arc<ConnState>,
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.state.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Deadlines of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub header_timeout: Duration,
    pub send_stall_timeout: Duration,
    /// Whether a `408` may be written on the raw socket (not under TLS).
    pub answer_plain: bool,
}

/// A socket with the head and send deadlines applied.
pub struct DeadlineIo<IO> {
    inner: IO,
    state: Arc<ConnState>,
    deadlines: Deadlines,
    /// Running while a head is being read; with the head count it was armed at.
    head_timer: Option<(Pin<Box<Sleep>>, u64)>,
    /// Running while writes block; with the bytes taken since it was armed.
    send_timer: Option<(Pin<Box<Sleep>>, usize)>,
}

impl<IO> DeadlineIo<IO> {
    /// Wraps a freshly accepted socket: the first head's clock starts now.
    pub fn new(inner: IO, state: Arc<ConnState>, deadlines: Deadlines) -> Self {
        let heads = state.heads.load(Ordering::Acquire);
        DeadlineIo {
            inner,
            state,
            head_timer: Some((
                Box::pin(tokio::time::sleep(deadlines.header_timeout)),
                heads,
            )),
            deadlines,
            send_timer: None,
        }
    }

    /// Whether a head is being waited for: no request in progress.
    fn awaiting_head(&self) -> bool {
        self.state.active.load(Ordering::Acquire) == 0
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for DeadlineIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let heads = self.state.heads.load(Ordering::Acquire);
        // A head read since the timer was armed means the timer's head is complete.
        if self
            .head_timer
            .as_ref()
            .is_some_and(|(_, armed_at)| *armed_at != heads)
        {
            self.head_timer = None;
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let awaiting_head = self.awaiting_head();
        match polled {
            Poll::Ready(Ok(())) => {
                let got_bytes = buf.filled().len() > before;
                if got_bytes && awaiting_head && self.head_timer.is_none() {
                    let deadline = Instant::now() + self.deadlines.header_timeout;
                    self.head_timer = Some((Box::pin(tokio::time::sleep_until(deadline)), heads));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if awaiting_head => {
                let expired = match self.head_timer.as_mut() {
                    Some((timer, _)) => timer.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if !expired {
                    return Poll::Pending;
                }
                self.head_timer = None;
                self.state.set_expired(Expired::Header);
                if self.deadlines.answer_plain {
                    // Best effort: the socket buffer is empty at this point, so this rarely
                    // blocks; if it would, the client just sees the close.
                    let _ = Pin::new(&mut self.inner).poll_write(cx, REQUEST_TIMEOUT);
                }
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head not complete within limits.header_timeout",
                )))
            }
            other => other,
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> DeadlineIo<IO> {
    /// Applies the send deadline to the outcome of one write.
    fn on_write(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) => {
                if let Some((_, taken)) = self.send_timer.as_mut() {
                    *taken += n;
                    if *taken >= SEND_PROGRESS {
                        self.send_timer = None;
                    }
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                let stall = self.deadlines.send_stall_timeout;
                let (timer, _) = self
                    .send_timer
                    .get_or_insert_with(|| (Box::pin(tokio::time::sleep(stall)), 0));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.send_timer = None;
                self.state.set_expired(Expired::Send);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client stopped reading the response (limits.send_stall_timeout)",
                )))
            }
            other => other,
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for DeadlineIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        self.on_write(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.on_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
