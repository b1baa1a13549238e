//! HTTP/1.1 GET over TCP or TLS with hyper and rustls. Trust roots come from
//! configured PEM files (a private CA is the common case); a client
//! certificate identifies the device. Plain http only when allowed.
//! Every request has a connect and an idle timeout; bodies stream.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer, ServerName};

use super::url::Url;

#[derive(Debug)]
pub(crate) enum HttpError {
    Config(String),
    Connect(String),
    Tls(String),
    Timeout(&'static str),
    Protocol(String),
    Status(u16),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(w) => write!(f, "http client configuration: {w}"),
            Self::Connect(w) => write!(f, "connect: {w}"),
            Self::Tls(w) => write!(f, "TLS: {w}"),
            Self::Timeout(w) => write!(f, "timed out {w}"),
            Self::Protocol(w) => write!(f, "HTTP: {w}"),
            Self::Status(s) => write!(f, "HTTP status {s}"),
        }
    }
}

impl std::error::Error for HttpError {}

#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM files with trusted CA certificates.
    pub ca: Vec<std::path::PathBuf>,
    /// PEM text of trusted CA certificates (e.g. from a kubeconfig).
    pub ca_pem: Vec<Vec<u8>>,
    /// PEM text of a client certificate chain and key (e.g. from a kubeconfig).
    pub client_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// Client certificate chain and key (PEM) for device identity.
    pub client_cert: Option<std::path::PathBuf>,
    pub client_key: Option<std::path::PathBuf>,
    pub allow_http: bool,
}

#[derive(Clone)]
pub(crate) struct Client {
    tls: Option<Arc<rustls::ClientConfig>>,
    allow_http: bool,
    pub connect_timeout: Duration,
    /// Longest wait for response headers or for the next body bytes.
    pub idle_timeout: Duration,
    /// Slow-retrieval defence (Uptane): once `idle_timeout` has passed since
    /// a body started, it must have arrived at this average rate (bytes/s) or
    /// faster, or the transfer is abandoned. 0 switches the check off.
    pub min_rate_bps: u64,
    /// From `https_proxy`, `http_proxy`, `no_proxy` when the client was made.
    proxies: super::proxy::Proxies,
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, HttpError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| HttpError::Config(format!("{}: {e}", path.display())))?
        .collect();
    let certs = certs.map_err(|e| HttpError::Config(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(HttpError::Config(format!(
            "{}: no certificates",
            path.display()
        )));
    }
    Ok(certs)
}

impl Client {
    pub(crate) fn new(o: &TlsOptions) -> Result<Client, HttpError> {
        let proxies = super::proxy::Proxies::from_env(|k| std::env::var(k).ok())
            .map_err(HttpError::Config)?;
        let tls = if o.ca.is_empty() && o.ca_pem.is_empty() {
            None
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for p in &o.ca {
                for c in read_certs(p)? {
                    roots
                        .add(c)
                        .map_err(|e| HttpError::Config(format!("{}: {e}", p.display())))?;
                }
            }
            for pem in &o.ca_pem {
                for c in CertificateDer::pem_slice_iter(pem) {
                    let c = c.map_err(|e| HttpError::Config(format!("CA certificate: {e}")))?;
                    roots
                        .add(c)
                        .map_err(|e| HttpError::Config(format!("CA certificate: {e}")))?;
                }
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| HttpError::Config(e.to_string()))?
                .with_root_certificates(roots);
            let cfg = match (&o.client_cert, &o.client_key) {
                _ if o.client_pem.is_some() => {
                    let (c, k) = o
                        .client_pem
                        .as_ref()
                        .ok_or_else(|| HttpError::Config("client pem".into()))?;
                    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(c).collect();
                    let certs =
                        certs.map_err(|e| HttpError::Config(format!("client certificate: {e}")))?;
                    let key = PrivateKeyDer::from_pem_slice(k)
                        .map_err(|e| HttpError::Config(format!("client key: {e}")))?;
                    builder
                        .with_client_auth_cert(certs, key)
                        .map_err(|e| HttpError::Config(e.to_string()))?
                }
                (Some(c), Some(k)) => {
                    let key = PrivateKeyDer::from_pem_file(k)
                        .map_err(|e| HttpError::Config(format!("{}: {e}", k.display())))?;
                    builder
                        .with_client_auth_cert(read_certs(c)?, key)
                        .map_err(|e| HttpError::Config(e.to_string()))?
                }
                (None, None) => builder.with_no_client_auth(),
                _ => {
                    return Err(HttpError::Config(
                        "client_cert and client_key go together".into(),
                    ))
                }
            };
            Some(Arc::new(cfg))
        };
        Ok(Client {
            tls,
            allow_http: o.allow_http,
            connect_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(30),
            min_rate_bps: 1024,
            proxies,
        })
    }

    /// GET `url`, optionally from byte `from` on (HTTP Range). Returns the
    /// status and the streaming body. Redirects (CDNs, object stores) are
    /// followed, at most 5; each target passes the same checks as the first
    /// URL (plain http only with `allow_http`), and whatever is fetched is
    /// still checked against its signature or pinned digest by the caller.
    pub(crate) async fn get(
        &self,
        url: &Url,
        from: Option<u64>,
        headers: &[(&str, String)],
    ) -> Result<Response, HttpError> {
        let mut h: Vec<(&str, String)> = headers.to_vec();
        if let Some(f) = from.filter(|&f| f > 0) {
            h.push(("range", format!("bytes={f}-")));
        }
        let mut cur = url.clone();
        for _ in 0..=5 {
            let resp = self.request("GET", &cur, &h, Vec::new()).await?;
            match (resp.status, &resp.location) {
                (301 | 302 | 303 | 307 | 308, Some(loc)) => {
                    cur = cur
                        .join(loc)
                        .map_err(|e| HttpError::Protocol(format!("redirect to {loc:?}: {e}")))?;
                }
                _ => return Ok(resp),
            }
        }
        Err(HttpError::Protocol("more than 5 redirects".into()))
    }

    /// Any method with an optional body (for the Kubernetes API).
    pub(crate) async fn request(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<Response, HttpError> {
        let proxy = self.proxies.for_url(url);
        let peer = proxy.map_or_else(|| url.authority(), |p| p.authority());
        let mut tcp =
            tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(&peer))
                .await
                .map_err(|_| HttpError::Timeout("connecting"))?
                .map_err(|e| match proxy {
                    Some(p) => HttpError::Connect(format!("proxy {}: {e}", p.redacted())),
                    None => HttpError::Connect(format!("{peer}: {e}")),
                })?;
        let _ = tcp.set_nodelay(true);
        let mut uri = url.path.clone();
        let mut req = hyper::Request::builder().method(method);
        match proxy {
            Some(p) if url.https => self.tunnel(&mut tcp, p, url).await?,
            Some(p) => {
                // plain http through a proxy: the absolute URI, and the
                // proxy's credentials (it sees the request in any case)
                uri = format!("http://{}{}", url.authority(), url.path);
                if let Some(a) = &p.authorization {
                    req = req.header("proxy-authorization", a);
                }
            }
            None => {}
        }
        let mut req = req
            .uri(&uri)
            .header("host", url.authority())
            .header("user-agent", concat!("ferry/", env!("CARGO_PKG_VERSION")));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| HttpError::Protocol(e.to_string()))?;
        let resp = if url.https {
            let Some(cfg) = &self.tls else {
                return Err(HttpError::Config(
                    "https URL but no trust roots configured (ca)".into(),
                ));
            };
            let name = ServerName::try_from(url.host.clone())
                .map_err(|e| HttpError::Config(e.to_string()))?;
            let tls = tokio::time::timeout(
                self.connect_timeout,
                tokio_rustls::TlsConnector::from(cfg.clone()).connect(name, tcp),
            )
            .await
            .map_err(|_| HttpError::Timeout("in the TLS handshake"))?
            .map_err(|e| HttpError::Tls(e.to_string()))?;
            self.send(TokioIo::new(tls), req).await?
        } else {
            if !self.allow_http {
                return Err(HttpError::Config(format!(
                    "plain http to {} refused (set allow_http = true to permit)",
                    url.redacted()
                )));
            }
            self.send(TokioIo::new(tcp), req).await?
        };
        Ok(resp)
    }

    /// Open a `CONNECT` tunnel to `url`'s host through proxy `p`: TLS then
    /// runs end to end with the server through it.
    async fn tunnel(
        &self,
        tcp: &mut tokio::net::TcpStream,
        p: &super::proxy::Proxy,
        url: &Url,
    ) -> Result<(), HttpError> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let target = url.authority();
        let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(a) = &p.authorization {
            head.push_str(&format!("Proxy-Authorization: {a}\r\n"));
        }
        head.push_str("\r\n");
        let exchange = async {
            tcp.write_all(head.as_bytes()).await?;
            // the reply's head, byte by byte: nothing of the tunnel is read
            let mut reply = Vec::new();
            while !reply.ends_with(b"\r\n\r\n") {
                if reply.len() > 16 << 10 {
                    return Err(std::io::Error::other("reply head larger than 16 KiB"));
                }
                reply.push(tcp.read_u8().await?);
            }
            Ok(reply)
        };
        let reply = tokio::time::timeout(self.idle_timeout, exchange)
            .await
            .map_err(|_| HttpError::Timeout("waiting for the proxy's CONNECT reply"))?
            .map_err(|e| HttpError::Connect(format!("proxy {}: {e}", p.redacted())))?;
        let line = String::from_utf8_lossy(&reply);
        let status: Option<u16> = line
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok());
        match status {
            Some(200..=299) => Ok(()),
            Some(407) => Err(HttpError::Connect(format!(
                "proxy {} wants credentials (407); give them in the proxy URL",
                p.redacted()
            ))),
            Some(s) => Err(HttpError::Connect(format!(
                "proxy {} refused the tunnel to {target}: status {s}",
                p.redacted()
            ))),
            None => Err(HttpError::Connect(format!(
                "proxy {} answered CONNECT with no HTTP status",
                p.redacted()
            ))),
        }
    }

    async fn send<T>(&self, io: T, req: hyper::Request<Full<Bytes>>) -> Result<Response, HttpError>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| HttpError::Protocol(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let resp = tokio::time::timeout(self.idle_timeout, sender.send_request(req))
            .await
            .map_err(|_| HttpError::Timeout("waiting for response headers"))?
            .map_err(|e| HttpError::Protocol(e.to_string()))?;
        let status = resp.status().as_u16();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let content_length = header("content-length").and_then(|v| v.parse().ok());
        let location = header("location");
        // seconds only; an HTTP-date is ignored (the caller's back-off applies)
        let retry_after = header("retry-after").and_then(|v| v.trim().parse().ok());
        let content_range_start = header("content-range").and_then(|v| {
            v.strip_prefix("bytes ")
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.parse().ok())
        });
        Ok(Response {
            status,
            content_length,
            content_range_start,
            location,
            retry_after,
            body: resp.into_body(),
            idle: self.idle_timeout,
            min_rate: self.min_rate_bps,
            started: tokio::time::Instant::now(),
            received: 0,
        })
    }
}

pub(crate) struct Response {
    pub status: u16,
    pub content_length: Option<u64>,
    pub content_range_start: Option<u64>,
    /// A redirect's target, as sent.
    pub location: Option<String>,
    /// `Retry-After` in seconds (429, 503).
    pub retry_after: Option<u64>,
    body: Incoming,
    idle: Duration,
    min_rate: u64,
    started: tokio::time::Instant,
    received: u64,
}

impl Response {
    /// The next piece of the body; `None` at the end.
    pub(crate) async fn chunk(&mut self) -> Result<Option<Bytes>, HttpError> {
        loop {
            let f = tokio::time::timeout(self.idle, self.body.frame())
                .await
                .map_err(|_| HttpError::Timeout("waiting for body bytes (stalled)"))?;
            match f {
                None => return Ok(None),
                Some(Err(e)) => return Err(HttpError::Protocol(e.to_string())),
                Some(Ok(fr)) => {
                    if let Ok(d) = fr.into_data() {
                        if !d.is_empty() {
                            self.received += d.len() as u64;
                            let t = self.started.elapsed();
                            // a trickle (one byte every few seconds) never trips
                            // the idle timeout: the average rate catches it
                            if self.min_rate > 0
                                && t > self.idle
                                && (self.received as f64) < self.min_rate as f64 * t.as_secs_f64()
                            {
                                return Err(HttpError::Timeout(
                                    "the transfer is slower than the minimum rate (min_rate_bps)",
                                ));
                            }
                            return Ok(Some(d));
                        }
                    }
                }
            }
        }
    }

    /// The whole body, refusing more than `max` bytes.
    pub(crate) async fn bytes(mut self, max: usize) -> Result<Vec<u8>, HttpError> {
        if self.content_length.is_some_and(|l| l > max as u64) {
            return Err(HttpError::Protocol(format!("body larger than {max} bytes")));
        }
        let mut v = Vec::new();
        while let Some(c) = self.chunk().await? {
            if v.len() + c.len() > max {
                return Err(HttpError::Protocol(format!("body larger than {max} bytes")));
            }
            v.extend_from_slice(&c);
        }
        Ok(v)
    }
}
