//! The page's connections, bounded: at most [`MAX_CONNECTIONS`] open at
//! once (past that the listener waits, and the kernel's backlog holds the
//! rest: the agent's own file handles are never used up), and a connection
//! that neither sends nor receives a byte for [`IDLE`] is closed (a client
//! that sends half a request and waits, stops reading a stream, or went
//! away without a word). The
//! token is checked only once a request has arrived, so neither bound can
//! wait for it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Browsers open ~6 per page; a few installers and scripts fit many times over.
pub const MAX_CONNECTIONS: usize = 64;
/// A stream sends its newest picture again at least every
/// [`super::server::STREAM_KEEPALIVE`] even when nothing changed (a quiet road, a
/// finished file); the page asks for its state every second.
pub const IDLE: Duration = Duration::from_secs(30);

pub struct BoundedListener {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    idle: Duration,
}

impl BoundedListener {
    pub fn new(listener: TcpListener, max_connections: usize, idle: Duration) -> BoundedListener {
        BoundedListener { listener, slots: Arc::new(Semaphore::new(max_connections)), idle }
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = BoundedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (BoundedStream, std::net::SocketAddr) {
        // Never closed, so acquiring only waits.
        let slot = self.slots.clone().acquire_owned().await.expect("the connection semaphore is never closed");
        loop {
            match self.listener.accept().await {
                Ok((stream, address)) => {
                    let idle = Box::pin(tokio::time::sleep(self.idle));
                    return (BoundedStream { stream, _slot: slot, idle, idle_for: self.idle }, address);
                }
                // A client that reset before it was taken: the next one.
                Err(error) if matches!(error.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted) => {}
                // Out of file handles or memory: wait, then go on.
                Err(error) => {
                    tracing::warn!(%error, "view: cannot accept a connection; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }
}

/// A connection holding one of the listener's slots until it is dropped.
pub struct BoundedStream {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    /// Fires `idle_for` after the last byte either way.
    idle: Pin<Box<Sleep>>,
    idle_for: Duration,
}

impl BoundedStream {
    fn active(&mut self) {
        let next = Instant::now() + self.idle_for;
        self.idle.as_mut().reset(next);
    }

    /// A write that went through keeps the connection alive; one that has
    /// waited on a client that stopped reading for too long ends it.
    fn written(&mut self, cx: &mut Context<'_>, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) if n > 0 => {
                self.active();
                Poll::Ready(Ok(n))
            }
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "view: client stopped reading"))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl AsyncRead for BoundedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.active();
                }
                Poll::Ready(result)
            }
            // Waiting for the client: give up once it has been silent too long.
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "view: connection idle"))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for BoundedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(cx, data);
        this.written(cx, written)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, data);
        this.written(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
