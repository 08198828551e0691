//! Outbound HTTP (`wasi:http/outgoing-handler`) through a service's allow-list: denied unless
//! an entry of `doppel deploy --allow-outbound` names the scheme, host and port; the name is then
//! resolved here and the connection made to the address that was checked (so a DNS answer that
//! changes between the check and the connection cannot point it elsewhere); a non-public address
//! (loopback, private, link-local with the cloud metadata service…) is refused unless the entry
//! names that address itself, and so is the host's own listening ports on any of its own
//! addresses (a name pointed at the host itself would let a guest call its own host's admin API
//! or loop requests back into it). Redirects are answers to the guest, whose next request is checked
//! like the first. TLS to the outside trusts the system's roots. Connecting, the first byte and
//! each later byte have deadlines, and an answer's body is cut off past `MAX_RESPONSE`.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use doppel_api::outbound::{HostPattern, OutboundRule, is_public};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, WasiBody, WasiHttpHooks};

/// The largest answer body a guest receives, in bytes.
pub const MAX_RESPONSE: usize = 16 << 20;
/// How long connecting (and the TLS handshake) may take.
const CONNECT: Duration = Duration::from_secs(10);
/// How long the first byte of the answer may take, at most.
const FIRST_BYTE: Duration = Duration::from_secs(30);
/// The longest one outbound connection lives (its request's guest is long gone by then).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

/// The hooks of one request of a service: its allow-list.
pub struct Outbound {
    allow: Arc<Vec<OutboundRule>>,
    own: OwnListeners,
}

impl Outbound {
    /// Requests allowed by `allow` (none, when it is empty), never to `own` listeners unless an
    /// entry names the address.
    pub fn new(allow: Arc<Vec<OutboundRule>>, own: OwnListeners) -> Outbound {
        Outbound { allow, own }
    }
}

/// The addresses this host listens on (service, admin and peer ports).
pub type OwnListeners = Arc<Vec<SocketAddr>>;

/// Whether connecting to `addr` would reach one of this host's own listeners: the same port,
/// and the listener's address or, for a listener on every address, any address of this machine.
fn reaches_own(addr: SocketAddr, own: &[SocketAddr]) -> bool {
    own.iter().any(|listener| {
        listener.port() == addr.port()
            && (listener.ip() == addr.ip() || (listener.ip().is_unspecified() && is_local(addr)))
    })
}

/// Whether `addr`'s address is one of this machine's: only then can a socket be bound to it.
fn is_local(addr: SocketAddr) -> bool {
    addr.ip().is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).is_ok()
}

type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = wasmtime_wasi_http::Result<Sent>> + Send> {
        let allow = self.allow.clone();
        let own = self.own.clone();
        Box::new(async move { send(&allow, &own, request, options).await })
    }
}

/// The system's roots, read once (`rustls-native-certs`: `/etc/ssl/certs` on Debian).
static TLS: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        tracing::warn!("no system root certificates found: outbound HTTPS will fail");
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
});

/// The address to connect to for `host:port` under `rule`, or why not.
async fn address(
    rule: &OutboundRule,
    own: &[SocketAddr],
    host: &str,
    port: u16,
) -> Result<SocketAddr, Error> {
    if let HostPattern::Address(ip) = rule.host {
        return Ok(SocketAddr::new(ip, port));
    }
    let resolved: Vec<SocketAddr> =
        tokio::time::timeout(CONNECT, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| Error::DnsTimeout)?
            .map_err(|_| Error::DestinationNotFound)?
            .collect();
    if resolved.is_empty() {
        return Err(Error::DestinationNotFound);
    }
    resolved
        .into_iter()
        .find(|a| is_public(a.ip()) && !reaches_own(*a, own))
        .ok_or(Error::DestinationIpProhibited)
}

async fn send(
    allow: &[OutboundRule],
    own: &[SocketAddr],
    mut request: http::Request<WasiBody>,
    options: Option<wasmtime_wasi_http::RequestOptions>,
) -> Result<Sent, Error> {
    let uri = request.uri().clone();
    let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let scheme = if https { "https" } else { "http" };
    let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let rule = allow
        .iter()
        .find(|r| r.matches(scheme, host, port))
        .ok_or(Error::HttpRequestDenied)?;
    let addr = address(rule, own, host, port).await?;
    let limit = |asked: Option<Duration>, cap: Duration| asked.map_or(cap, |a| a.min(cap));
    let connect = limit(options.and_then(|o| o.connect_timeout), CONNECT);
    let first_byte = limit(options.and_then(|o| o.first_byte_timeout), FIRST_BYTE);

    let tcp = tokio::time::timeout(connect, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
            _ => Error::Connect(e),
        })?;
    // Only the path and query go on the wire (the Host header carries the name).
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(uri.path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let response = if https {
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        let tls = tokio::time::timeout(
            connect,
            tokio_rustls::TlsConnector::from(TLS.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Tls)?;
        exchange(hyper_util::rt::TokioIo::new(tls), request, first_byte).await?
    } else {
        exchange(hyper_util::rt::TokioIo::new(tcp), request, first_byte).await?
    };
    let (parts, body) = response.into_parts();
    let body = http_body_util::Limited::new(body, MAX_RESPONSE)
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Error::HttpResponseBodySize(Some(MAX_RESPONSE as u64))
            } else {
                Error::HttpResponseIncomplete
            }
        })
        .boxed_unsync();
    Ok((
        http::Response::from_parts(parts, body),
        Box::new(async { Ok(()) }),
    ))
}

/// One HTTP/1.1 exchange on `io`; the connection is driven on its own task until it closes.
async fn exchange<I>(
    io: I,
    request: http::Request<WasiBody>,
    first_byte: Duration,
) -> Result<http::Response<hyper::body::Incoming>, Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(Error::Hyper)?;
    // Ends when the exchange is over and its body dropped; a server that never closes is let go
    // after CONNECTION_LIFETIME.
    tokio::spawn(async move {
        let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
    });
    tokio::time::timeout(first_byte, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)?
        .map_err(Error::Hyper)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener on every address is reached through any address of this machine at its port,
    /// and only at its port; one on a single address only through that address.
    #[test]
    fn the_hosts_own_listeners_are_recognised() {
        let every: SocketAddr = "0.0.0.0:18443".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:18444".parse().unwrap();
        let own = [every, loopback];
        assert!(reaches_own("127.0.0.1:18443".parse().unwrap(), &own));
        assert!(reaches_own("127.0.0.1:18444".parse().unwrap(), &own));
        assert!(!reaches_own("127.0.0.1:443".parse().unwrap(), &own));
        // An address this machine does not have (TEST-NET-1) is someone else's server.
        assert!(!reaches_own("192.0.2.1:18443".parse().unwrap(), &own));
        assert!(!reaches_own("127.0.0.2:18444".parse().unwrap(), &own));
        // Every address of this machine counts, not only loopback.
        let outward = std::net::UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| s.connect("192.0.2.1:9").map(|()| s))
            .and_then(|s| s.local_addr());
        if let Ok(mine) = outward {
            assert!(
                reaches_own(SocketAddr::new(mine.ip(), 18443), &own),
                "{mine}"
            );
        }
    }
}
