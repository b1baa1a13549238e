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
use tracing::{info, info_span, warn};

use crate::bundle::reader::{self, chunk_offset, OpenedBundle, Position};
use crate::bundle::{Keyring, Sha256Digest};
use crate::error::{BundleError, Error};
use crate::feed::FeedError;
use crate::io::install::{check_policy, resume_point, write_slot, Installed};
use crate::io::node::Node;
use crate::net::http::{Client, Response};
use crate::net::url::Url;
use crate::update::machine::{Event, Release, State};

pub struct Fetcher {
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
}

impl Read for HttpReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.rt.block_on(self.resp.chunk()) {
                Ok(Some(b)) => {
                    self.received.fetch_add(b.len() as u64, Ordering::Relaxed);
                    self.buf = b;
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
                return Err(net_err(
                    "GET",
                    url,
                    format!("server ignored the range request from byte {f}"),
                ))
            }
            (s, _) => return Err(net_err("GET", url, format!("HTTP status {s}"))),
        }
        Ok(HttpReader {
            rt: self.rt.clone(),
            resp,
            buf: Bytes::new(),
            received: self.received.clone(),
        })
    }
}

/// Faults worth another attempt: the network, a short body, a chunk that
/// arrived damaged or from another file. Anything else is final.
fn retryable(e: &Error) -> bool {
    matches!(
        e,
        Error::Net { .. }
            | Error::Io {
                op: "read bundle",
                ..
            }
            | Error::Bundle(BundleError::Truncated { .. } | BundleError::ChunkDigest { .. })
    )
}

/// Install the bundle at `url` into the inactive slot.
pub fn install_url(
    node: &mut Node,
    f: &Fetcher,
    url: &str,
    pin: Option<Sha256Digest>,
    keyring: &Keyring,
) -> Result<Installed, Error> {
    let u = Url::parse(url).map_err(|d| Error::Usage(format!("bundle URL: {d}")))?;
    let target = node.booted.other();
    let span = info_span!("ota", url = %u.redacted(), slot = %target);
    let _g = span.enter();
    let mut opened: Option<OpenedBundle> = None;
    let mut pos: Option<Position> = None;
    let mut resumed_from = None;
    let mut delay = f.backoff;
    for attempt in 1..=f.attempts.max(1) {
        let r = (|| -> Result<(), Error> {
            let (b, start, src) = match &opened {
                None => {
                    let mut rd = f.get(&u, 0)?;
                    let b = reader::open(&mut rd, Some(keyring))?;
                    if pin.is_some_and(|p| p != b.manifest_digest) {
                        return Err(FeedError::Malformed(format!(
                            "bundle at {} is not the one the feed lists (manifest digest differs)",
                            u.redacted()
                        ))
                        .into());
                    }
                    check_policy(node, &b, target)?;
                    let durable = resume_point(node, &b, target);
                    let release = Release {
                        version: b.manifest.version.clone(),
                        digest: b.manifest_digest,
                    };
                    node.apply(Event::InstallStarted {
                        slot: target,
                        booted: node.booted,
                        release,
                    })?;
                    let start = durable.unwrap_or_default();
                    resumed_from = durable;
                    opened = Some(b.clone());
                    let src = if start == Position::default() {
                        rd
                    } else {
                        f.get(&u, chunk_offset(&b, start))?
                    };
                    (b, start, src)
                }
                Some(b) => {
                    let start = pos.unwrap_or_default();
                    resumed_from = Some(start);
                    (b.clone(), start, f.get(&u, chunk_offset(b, start))?)
                }
            };
            info!(
                attempt,
                payload = start.payload,
                chunk = start.chunk,
                "streaming payloads"
            );
            let (res, next) = write_slot(node, &b, src, start, false, None);
            pos = Some(next);
            res
        })();
        match r {
            Ok(()) => {
                node.apply(Event::InstallFinished)?;
                let version = opened
                    .map(|b| b.manifest.version)
                    .unwrap_or_else(|| semver::Version::new(0, 0, 0));
                return Ok(Installed {
                    slot: target,
                    version,
                    resumed_from,
                });
            }
            Err(e) if retryable(&e) && attempt < f.attempts => {
                warn!(attempt, error = %e, delay_ms = delay.as_millis() as u64, "download interrupted; will resume");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(60));
            }
            Err(e) => {
                if matches!(node.dev.state, State::Installing { .. }) && !retryable(&e) {
                    let _ = node.apply(Event::InstallFailed {
                        reason: e.to_string(),
                    });
                }
                // a network failure leaves the install resumable (state installing)
                return Err(e);
            }
        }
    }
    Err(Error::Usage("no download attempt was made".into()))
}
