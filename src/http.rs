//! The loopback HTTP server of the processes' metrics and pages (the
//! sequencer's `/metrics` and explorer, a keyper's `/metrics` and
//! `/evidence`): an [`axum::Router`] served by [`serve`], which accepts at
//! most [`HttpLimits::connections_max`] connections at a time and ends each
//! one [`HttpLimits::connection_lifetime`] after it was accepted, so that
//! neither many clients nor slow ones grow its tasks.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Sleep;

/// Connections the metrics server serves at once by default; further ones
/// wait in the listen backlog, unaccepted, until one ends.
pub const CONNECTIONS_MAX: usize = 16;

/// How long one metrics connection may last by default, from its
/// acceptance, reading, writing and idling together.
pub const CONNECTION_LIFETIME_MAX: Duration = Duration::from_secs(10);

const _: () = assert!(CONNECTIONS_MAX > 0 && CONNECTIONS_MAX <= Semaphore::MAX_PERMITS);

/// The bounds of the HTTP server ([`serve`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once; the next is accepted when one ends.
    /// Default [`CONNECTIONS_MAX`]; at least 1, at most
    /// [`Semaphore::MAX_PERMITS`] (clamped).
    pub connections_max: usize,
    /// How long a connection may last from its acceptance: then every read
    /// and write fails and it closes, so a client slower than this (or one
    /// that sends nothing) holds its place no longer. Default
    /// [`CONNECTION_LIFETIME_MAX`].
    pub connection_lifetime: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            connections_max: CONNECTIONS_MAX,
            connection_lifetime: CONNECTION_LIFETIME_MAX,
        }
    }
}

/// Serves `router` (the metrics' and the explorer's, say) on `addr` until
/// `shutdown` turns true, within `limits`; see [`serve`].
///
/// # Errors
///
/// The bind error.
pub async fn serve_router(
    addr: SocketAddr,
    router: Router,
    limits: HttpLimits,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let listener = crate::net::inherit::tcp_listener(addr).await?;
    serve(listener, router, limits, shutdown).await
}

/// Serves `router` over HTTP/1 on `listener` until `shutdown` turns true (or
/// its sender is dropped), then stops accepting and lets the connections
/// open finish (each within its lifetime).
///
/// At most `limits.connections_max` connections are served at once: the
/// next one is accepted only when one ends, so the server's tasks never
/// outnumber it. A failed accept is retried, after a second's pause unless
/// it concerned only that connection (axum's listener), so it never spins.
///
/// # Errors
///
/// None so far: the result leaves room for the server's own failures.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let listener = BoundedListener {
        listener,
        permits: Arc::new(Semaphore::new(
            limits.connections_max.clamp(1, Semaphore::MAX_PERMITS),
        )),
        lifetime: limits.connection_lifetime,
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            // An error is a dropped sender: nobody can stop us any more, so stop.
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}

/// A TCP listener that accepts a connection only with one of its permits
/// free.
struct BoundedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    lifetime: Duration,
}

impl axum::serve::Listener for BoundedListener {
    type Io = BoundedConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (BoundedConnection, SocketAddr) {
        let Ok(permit) = Arc::clone(&self.permits).acquire_owned().await else {
            // The semaphore is never closed: accept nothing more rather than
            // spin.
            return std::future::pending().await;
        };
        let (stream, addr) = axum::serve::Listener::accept(&mut self.listener).await;
        let connection = BoundedConnection {
            stream,
            _permit: permit,
            deadline: Box::pin(tokio::time::sleep(self.lifetime)),
        };
        (connection, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// An accepted connection: its stream, its permit (given back when it is
/// dropped), and the end of its life, after which every read and write
/// fails, which ends the connection.
struct BoundedConnection {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    deadline: Pin<Box<Sleep>>,
}

impl BoundedConnection {
    /// `Some` error once the lifetime is over; before, arranges for the task
    /// to be woken when it ends.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.deadline.as_mut().poll(cx).is_ready().then(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "metrics connection open longer than its lifetime",
            )
        })
    }
}

impl AsyncRead for BoundedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(error) = self.expired(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for BoundedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(error) = self.expired(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(error) = self.expired(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
