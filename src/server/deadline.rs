//! Deadlines on what a client sends: the first bytes of a connection, and a request's body.
//!
//! hyper's `header_read_timeout` starts once HTTP/1 parsing does, but the listener first reads
//! up to 24 bytes (the length of HTTP/2's preface) to tell HTTP/1 from HTTP/2, with no timer:
//! a connection that sent nothing, or the first bytes of the preface (`PRI * HTTP`), was held
//! forever. [`FirstBytes`] gives it `limits.header_timeout` for its first 24 bytes.
//! A request body has no timer in hyper either: a client that announces 100 bytes and sends
//! one held its connection (and the handler) as long as it liked. [`BodyDeadline`] gives the
//! whole body `limits.body_timeout` from the moment the request arrived; past it the body
//! fails, the request gets 408 and the connection is closed.
//!
//! Neither costs a request without a body anything but a branch: no timer is made until a
//! read would wait.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How many bytes the listener may read before it knows the protocol: HTTP/2's preface.
const OPENING: usize = 24;

/// A connection that must send its first [`OPENING`] bytes before a deadline.
#[derive(Debug)]
pub struct FirstBytes<I> {
    io: I,
    /// Until the opening has arrived.
    wait: Option<Opening>,
}

#[derive(Debug)]
struct Opening {
    /// How long it may take.
    within: Duration,
    /// Its timer, once a read waited.
    timer: Option<Pin<Box<Sleep>>>,
    /// How many of its bytes are still to come.
    left: usize,
}

impl<I> FirstBytes<I> {
    pub fn new(io: I, within: Duration) -> Self {
        FirstBytes {
            io,
            wait: Some(Opening {
                within,
                timer: None,
                left: OPENING,
            }),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstBytes<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let read = buf.filled().len() - before;
                if let Some(o) = &mut this.wait {
                    o.left = o.left.saturating_sub(read);
                    if o.left == 0 {
                        this.wait = None;
                    }
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if let Some(o) = &mut this.wait {
                    let within = o.within;
                    let timer = o
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(within)));
                    if timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the client did not send its first bytes within limits.header_timeout",
                        )));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FirstBytes<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The body did not arrive in time. Its text is what the client reads (in a 408).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} (limits.body_timeout)", crate::model::Dur(*.0))]
pub struct BodyTimedOut(pub Duration);

/// A request body that must have arrived by a deadline.
#[derive(Debug)]
pub struct BodyDeadline {
    body: Incoming,
    /// `None` for a body known to be empty (a GET): no clock is read, no timer made.
    until: Option<(Instant, Duration)>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl BodyDeadline {
    pub fn new(body: Incoming, within: Duration) -> Self {
        let until = (!body.is_end_stream()).then(|| (Instant::now() + within, within));
        BodyDeadline {
            body,
            until,
            timer: None,
        }
    }
}

impl Body for BodyDeadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let Some((until, within)) = this.until else {
            return Poll::Pending;
        };
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyTimedOut(within)))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
