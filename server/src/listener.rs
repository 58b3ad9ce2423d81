//! The accept loop: which TCP connections the gRPC server gets to serve.
//!
//! No client may take what the log needs. Connections are bounded (below
//! the process's descriptor limit, with descriptors kept for the log and
//! state files); past the bound a new connection is closed at once. A
//! connection that sends nothing is closed: within the handshake timeout
//! before its first byte, and after that once nothing arrived for the idle
//! timeout (the server's HTTP/2 keepalive pings every live client, whose
//! answers count, so only dead or silent peers reach it). An accept error
//! (out of descriptors, say) is waited out, never spun on.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// Descriptors kept for the log's segments, the state files, snapshots
/// and connections to the other servers.
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// How long an accept error (out of descriptors, out of memory) is waited
/// out before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the accept loop lets in.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max: usize,
    /// How long a new connection may stay silent before its first byte.
    pub handshake: Duration,
    /// How long an established connection may go without sending anything.
    pub idle: Duration,
}

/// Raises this process's soft limit on open descriptors to its hard limit
/// and returns how many connections fit below it with
/// [`RESERVED_DESCRIPTORS`] kept for everything else.
pub fn connection_budget() -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    };
    let budget = soft.saturating_sub(RESERVED_DESCRIPTORS).max(16);
    usize::try_from(budget).unwrap_or(usize::MAX)
}

/// Accepts connections on `listener` until `stop`, within `limits`.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<Connection>> {
    let (tx, rx) = mpsc::channel(16);
    let permits = Arc::new(Semaphore::new(limits.max.max(1)));
    tokio::spawn(async move {
        let mut warned = Warned::default();
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                () = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_transient(&e) => {
                    warned.once(|| tracing::warn!("cannot accept connections for now: {e}"));
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
                // The peer gave up before we accepted it.
                Err(e) => {
                    tracing::debug!("a connection failed while it was accepted: {e}");
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                warned.once(|| {
                    tracing::warn!(
                        max = limits.max,
                        "refusing connections: the most allowed are open (--max-connections)"
                    )
                });
                drop(stream);
                continue;
            };
            // Replies are small: without TCP_NODELAY, Nagle's algorithm
            // holds them back up to 40 ms behind a delayed ACK.
            let _ = stream.set_nodelay(true);
            let connection = Connection::new(stream, permit, limits);
            if tx.send(Ok(connection)).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Errors that pass: the process or system is out of descriptors or
/// memory for a moment.
fn is_transient(e: &io::Error) -> bool {
    use nix::errno::Errno;
    let errno = e.raw_os_error().map(Errno::from_raw);
    matches!(
        errno,
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)
    )
}

/// Logs a repeated condition at most once every ten seconds.
#[derive(Debug, Default)]
struct Warned(Option<Instant>);

impl Warned {
    fn once(&mut self, log: impl FnOnce()) {
        let now = Instant::now();
        if self
            .0
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(10))
        {
            self.0 = Some(now);
            log();
        }
    }
}

/// An accepted connection: holds its place among the bounded connections
/// and ends itself when its peer goes silent.
#[derive(Debug)]
pub struct Connection {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
    /// Fires when nothing has been read for too long.
    silence: Pin<Box<Sleep>>,
    idle: Duration,
}

impl Connection {
    fn new(io: TcpStream, permit: OwnedSemaphorePermit, limits: ConnectionLimits) -> Self {
        Connection {
            io,
            _permit: permit,
            silence: Box::pin(tokio::time::sleep(limits.handshake)),
            idle: limits.idle,
        }
    }
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let until = Instant::now() + self.idle;
                    self.silence.as_mut().reset(until);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.silence.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing for too long",
                )))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
