//! Streaming OTA: a bundle straight from HTTP(S) into the inactive slot, no
//! staging copy. The header, manifest and signatures come first (and are
//! pinned by the feed's manifest digest); payload bytes follow in the same
//! response. A dropped or stalled connection resumes with an HTTP Range
//! request at the first chunk not yet written (in this process), or at the
//! last durable chunk after a restart; a server that answers a range with
//! other bytes fails the chunk digests and is retried, then refused.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Bytes;
use tracing::info_span;

use crate::bundle::{Keyring, Sha256Digest};
use crate::error::Error;
use crate::io::install::{install, BundleSource};
use crate::io::node::Node;
use crate::net::http::{Client, Response};
use crate::net::url::Url;
use crate::update::engine::Installed;

pub(crate) struct Fetcher {
    pub rt: tokio::runtime::Handle,
    pub client: Client,
    /// Attempts per install before giving up (network faults).
    pub attempts: u32,
    pub backoff: Duration,
    /// Payload bytes received from the network, for progress and tests.
    pub received: Arc<AtomicU64>,
}

fn net_err(what: &str, url: &Url, e: impl std::fmt::Display) -> Error {
    Error::Net {
        what: format!("{what} {}", url.redacted()),
        detail: e.to_string(),
    }
}

/// A blocking `Read` over a streaming response, for the pipeline's read thread.
struct HttpReader {
    rt: tokio::runtime::Handle,
    resp: Response,
    buf: Bytes,
    received: Arc<AtomicU64>,
    /// Bytes still to drop from the front of the body (a 200 to a range request).
    skip: u64,
}

impl Read for HttpReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.rt.block_on(self.resp.chunk()) {
                Ok(Some(b)) => {
                    self.received.fetch_add(b.len() as u64, Ordering::Relaxed);
                    let drop = (self.skip.min(b.len() as u64)) as usize;
                    self.skip -= drop as u64;
                    self.buf = b.slice(drop..);
                }
                Ok(None) => return Ok(0),
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf = self.buf.slice(n..);
        Ok(n)
    }
}

impl Fetcher {
    fn get(&self, url: &Url, from: u64) -> Result<HttpReader, Error> {
        let resp = self
            .rt
            .block_on(self.client.get(url, Some(from), &[]))
            .map_err(|e| net_err("GET", url, e))?;
        match (resp.status, from) {
            (200, 0) => {}
            (206, f) if resp.content_range_start == Some(f) => {}
            (206, f) => {
                return Err(net_err(
                    "GET",
                    url,
                    format!(
                        "asked for bytes from {f}, got a range from {:?}",
                        resp.content_range_start
                    ),
                ))
            }
            (200, f) => {
                // the server ignores Range: take the whole body again and
                // skip what is already written (a clean restart on the wire)
                tracing::warn!(url = %url.redacted(), from = f, "server ignored the range request; skipping to the offset");
                return Ok(HttpReader {
                    rt: self.rt.clone(),
                    resp,
                    buf: Bytes::new(),
                    received: self.received.clone(),
                    skip: f,
                });
            }
            (429 | 503, _) if resp.retry_after.is_some() => {
                return Err(Error::Throttled {
                    what: format!("GET {}", url.redacted()),
                    after_s: resp.retry_after.unwrap_or(0),
                })
            }
            (s, _) => return Err(net_err("GET", url, format!("HTTP status {s}"))),
        }
        Ok(HttpReader {
            rt: self.rt.clone(),
            resp,
            buf: Bytes::new(),
            received: self.received.clone(),
            skip: 0,
        })
    }
}

/// A bundle at a URL: Range requests from any offset.
pub(crate) struct HttpSource<'a> {
    f: &'a Fetcher,
    url: Url,
}

impl BundleSource for HttpSource<'_> {
    fn name(&self) -> String {
        self.url.redacted()
    }
    fn open_at(&mut self, offset: u64) -> Result<Box<dyn Read + Send>, Error> {
        Ok(Box::new(self.f.get(&self.url, offset)?))
    }
    fn expect_eof(&self) -> bool {
        false
    }
    fn transient(&self, e: &Error) -> bool {
        e.is_transient()
    }
    fn retry(&self) -> (u32, Duration) {
        (self.f.attempts.max(1), self.f.backoff)
    }
}

/// Install the bundle at `url` into the inactive slot (the one install
/// path, with an HTTP source).
pub(crate) fn install_url(
    node: &mut Node,
    f: &Fetcher,
    url: &str,
    pin: Option<Sha256Digest>,
    keyring: &Keyring,
) -> Result<Installed, Error> {
    let url = Url::parse(url).map_err(|d| Error::Usage(format!("bundle URL: {d}")))?;
    let span = info_span!("ota", url = %url.redacted());
    let _g = span.enter();
    let what = format!("GET {}", url.redacted());
    let mut src = HttpSource { f, url };
    install(node, &mut src, keyring, pin, None).map_err(|e| match e {
        // the body of a response broke off: a network fault (exit 61), not storage
        Error::Io {
            op: "read bundle",
            source,
            ..
        } => Error::Net {
            what,
            detail: source.to_string(),
        },
        e => e,
    })
}
