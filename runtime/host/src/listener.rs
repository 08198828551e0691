//! Serving a listener's HTTP/1 connections with the limits every listener of a host has, the
//! service port and the admin/peer port alike: at most `max_connections` at once (further ones
//! wait in the kernel's accept queue), `header_timeout` for a client to send a request's headers
//! (also while a kept connection waits for its next request, so idle connections do not pile up),
//! and on shutdown no new connection while the running requests finish, for at most `grace`.
//! Connections may be upgraded (the raft append stream is).
//!
//! The admin and peer listeners speak TLS ([`Tls`]): the handshake must finish within the header
//! timeout too, and on the peer listener every request carries who the client's certificate
//! names ([`doppel_replication::ConnectedPeer`]).

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// Limits that keep slow or hostile clients from tying a listener up.
#[derive(Clone, Debug)]
pub struct IngressLimits {
    /// Connections open at once; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Connections open at once from one client address; more are answered 503 and closed.
    pub max_per_client: usize,
    /// How much a connection reads ahead of its request's consumer (`None`: hyper's default,
    /// ~400 KiB). A body stalled on the other side holds at most this; headers must fit in it.
    pub read_ahead: Option<usize>,
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
}

impl Default for IngressLimits {
    fn default() -> Self {
        IngressLimits {
            max_connections: 10_000,
            max_per_client: 512,
            read_ahead: Some(64 << 10),
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// The connections open from each client address.
#[derive(Clone, Default)]
struct PerClient(Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

/// One open connection of a client, counted until it is dropped.
struct ClientConnection(PerClient, std::net::IpAddr);

impl PerClient {
    /// Counts a connection from `ip`, unless it has `max` open already.
    fn open(&self, ip: std::net::IpAddr, max: usize) -> Option<ClientConnection> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let open = all.entry(ip).or_default();
        if *open >= max {
            return None;
        }
        *open += 1;
        Some(ClientConnection(self.clone(), ip))
    }
}

impl Drop for ClientConnection {
    fn drop(&mut self) {
        let mut all = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = all.get_mut(&self.1) {
            *open -= 1;
            if *open == 0 {
                all.remove(&self.1);
            }
        }
    }
}

/// What a client over its connection cap hears before the connection is closed.
const TOO_MANY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\nconnection: close\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 55\r\n\r\n\
too many connections from this address; retry shortly\r\n";

/// What a listener speaks.
#[derive(Clone)]
pub enum Tls {
    /// Plain HTTP (the service listener).
    Plain,
    /// TLS; the client's certificate is not asked for, or not looked at (the admin listener).
    Server(Arc<rustls::ServerConfig>),
    /// Mutual TLS: requests carry the client's identity (the peer listener); refused handshakes
    /// are counted in the log.
    Peers(
        Arc<rustls::ServerConfig>,
        Arc<std::sync::Mutex<doppel_replication::RefusalLog>>,
    ),
}

/// Serves `service` on `listener` until `shutdown` resolves, then lets running requests finish
/// for at most `grace`. `what` names the listener in logs.
#[allow(clippy::too_many_arguments)]
pub async fn serve<S, B>(
    what: &'static str,
    listener: TcpListener,
    limits: &IngressLimits,
    tls: Tls,
    service: S,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let max = limits.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(max));
    let clients = PerClient::default();
    let (stop, stopping) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    if let Some(read_ahead) = limits.read_ahead {
        http.max_buf_size(read_ahead.max(8 << 10));
    }
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (mut stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(counted) = clients.open(client.ip(), limits.max_per_client) else {
            tracing::debug!(listener = what, client = %client.ip(), "refused a connection over the per-client cap");
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt as _;
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), stream.write_all(TOO_MANY)).await;
                drop((stream, permit));
            });
            continue;
        };
        // Requests and raft messages are small and answered at once: send each without waiting
        // to fill a segment.
        let _ = stream.set_nodelay(true);
        let (http, service, stopping, tls) =
            (http.clone(), service.clone(), stopping.clone(), tls.clone());
        let handshake = limits.header_timeout;
        tokio::spawn(async move {
            match tls {
                Tls::Plain => {
                    let connection = http.serve_connection(TokioIo::new(stream), service);
                    drive(connection.with_upgrades(), stopping).await;
                }
                Tls::Server(config) => {
                    let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
                    match tokio::time::timeout(handshake, accept).await {
                        Ok(Ok(stream)) => {
                            let connection = http.serve_connection(TokioIo::new(stream), service);
                            drive(connection.with_upgrades(), stopping).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(listener = what, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(listener = what, "TLS handshake timed out"),
                    }
                }
                Tls::Peers(config, refusals) => {
                    let accept = doppel_replication::accept(config, stream);
                    match tokio::time::timeout(handshake, accept).await {
                        Ok(Ok((stream, peer))) => {
                            let service =
                                hyper::service::service_fn(move |mut req: Request<Incoming>| {
                                    req.extensions_mut().insert(peer.clone());
                                    service.call(req)
                                });
                            let connection = http.serve_connection(TokioIo::new(stream), service);
                            drive(connection.with_upgrades(), stopping).await;
                        }
                        Ok(Err(e)) => refusals.lock().unwrap_or_else(|e| e.into_inner()).refused(
                            "(handshake)",
                            what,
                            &e.to_string(),
                        ),
                        Err(_) => tracing::debug!(listener = what, "TLS handshake timed out"),
                    }
                }
            }
            drop((permit, counted));
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a permit until it is done: all of them back means all are closed.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            listener = what,
            ?grace,
            "requests still running after the grace period; stopping anyway"
        );
    }
}

/// Runs one connection until it ends, or until the listener stops (then gracefully).
async fn drive<C>(connection: C, mut stopping: watch::Receiver<bool>)
where
    C: Future + GracefulConnection,
{
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = async {
            // The guard `wait_for` answers must not live across the next await.
            let _ = stopping.wait_for(|stop| *stop).await;
        } => {
            connection.as_mut().graceful();
            let _ = connection.await;
        }
    }
}

/// A connection that can be asked to finish its running request and close.
trait GracefulConnection {
    fn graceful(self: std::pin::Pin<&mut Self>);
}

impl<I, S, B> GracefulConnection for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}
