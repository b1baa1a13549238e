//! The release feed: a signed index per channel listing releases, with a
//! monotonically increasing serial and an expiry, served as static files
//! (`<channel>/index.json` + `<channel>/index.json.sig`) by any HTTP server or
//! object store. Verification is pure: bytes, keyring, `now` and the highest
//! serial already seen in; a trusted index or a reason out. Freeze and
//! rollback attacks are refused by expiry and serial (TUF's timestamp and
//! snapshot reasoning, in one document).

#[cfg(feature = "host")]
pub(crate) mod publish;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

#[cfg(any(feature = "host", test))]
use crate::bundle::format::hex;
use crate::bundle::format::{unhex, SignatureEntry};
use crate::bundle::{Keyring, Sha256Digest};
use crate::error::BundleError;

/// 2: signatures are domain-separated (`bundle::keys::Context::Feed`).
pub(crate) const FEED_FORMAT: u32 = 2;
/// Hard limit on an index document and its signature file.
pub(crate) const MAX_INDEX: usize = 4 << 20;
pub(crate) const MAX_SIG_FILE: usize = 16 << 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub format: u32,
    pub channel: String,
    /// Strictly increases with every publication.
    pub serial: u64,
    pub created: u64,
    /// Unix seconds after which a device refuses this index (freeze attacks).
    pub expires: u64,
    pub releases: Vec<FeedRelease>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extensions: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedRelease {
    pub version: semver::Version,
    /// The bundle's `compatible` board string.
    pub board: String,
    /// Relative to the index's URL, or absolute.
    pub url: String,
    pub size: u64,
    /// SHA-256 of the bundle's manifest bytes: pins the bundle.
    pub manifest_sha256: Sha256Digest,
    /// Optional per-release hints (e.g. a future phased `rollout`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extensions: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeedError {
    Malformed(String),
    Unsigned,
    Untrusted(String),
    Expired {
        expires: u64,
        now: u64,
    },
    /// An index with a lower serial than one already seen: a replay or rollback.
    Replayed {
        serial: u64,
        seen: u64,
    },
    WrongChannel {
        got: String,
        want: String,
    },
}

impl fmt::Display for FeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(w) => write!(f, "feed index is malformed: {w}"),
            Self::Unsigned => write!(f, "feed index is not signed"),
            Self::Untrusted(w) => write!(f, "feed index is not trusted: {w}"),
            Self::Expired { expires, now } => write!(
                f,
                "feed index expired at {expires} (now {now}): stale or frozen feed"
            ),
            Self::Replayed { serial, seen } => {
                write!(f, "feed index serial {serial} is older than serial {seen} already seen: replay or rollback refused")
            }
            Self::WrongChannel { got, want } => {
                write!(f, "feed index is for channel {got:?}, expected {want:?}")
            }
        }
    }
}

impl std::error::Error for FeedError {}

/// The signature file: one `<key id hex> <signature hex>` line per signer.
#[cfg(any(feature = "host", test))]
pub fn encode_sigs(sigs: &[SignatureEntry]) -> String {
    sigs.iter()
        .map(|s| format!("{} {}\n", hex(&s.key_id), hex(&s.signature)))
        .collect()
}

pub fn parse_sigs(text: &str) -> Result<Vec<SignatureEntry>, FeedError> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let mut it = line.split_whitespace();
        let (Some(k), Some(s), None) = (it.next(), it.next(), it.next()) else {
            return Err(FeedError::Malformed(
                "signature line is not `<key id> <signature>`".into(),
            ));
        };
        let key_id = unhex::<8>(k).ok_or_else(|| FeedError::Malformed("bad key id".into()))?;
        let signature =
            unhex::<64>(s).ok_or_else(|| FeedError::Malformed("bad signature".into()))?;
        out.push(SignatureEntry { key_id, signature });
    }
    if out.is_empty() {
        return Err(FeedError::Unsigned);
    }
    Ok(out)
}

/// Verify an index: signatures (threshold) over the exact bytes, then shape,
/// channel, expiry and serial.
pub fn verify(
    index: &[u8],
    sig_text: &str,
    keyring: &Keyring,
    channel: &str,
    now: u64,
    seen: Option<u64>,
) -> Result<Index, FeedError> {
    if index.len() > MAX_INDEX {
        return Err(FeedError::Malformed(format!(
            "index larger than {MAX_INDEX} bytes"
        )));
    }
    let sigs = parse_sigs(sig_text)?;
    keyring
        .verify(crate::bundle::keys::Context::Feed, index, &sigs)
        .map_err(|e| match e {
            BundleError::NotEnoughSignatures { .. } | BundleError::BadSignature { .. } => {
                FeedError::Untrusted(e.to_string())
            }
            other => FeedError::Malformed(other.to_string()),
        })?;
    let idx: Index =
        serde_json::from_slice(index).map_err(|e| FeedError::Malformed(e.to_string()))?;
    if idx.format != FEED_FORMAT {
        return Err(FeedError::Malformed(format!(
            "unsupported feed format {}",
            idx.format
        )));
    }
    if idx.channel != channel {
        return Err(FeedError::WrongChannel {
            got: idx.channel,
            want: channel.into(),
        });
    }
    if now >= idx.expires {
        return Err(FeedError::Expired {
            expires: idx.expires,
            now,
        });
    }
    if let Some(seen) = seen.filter(|&s| idx.serial < s) {
        return Err(FeedError::Replayed {
            serial: idx.serial,
            seen,
        });
    }
    for r in &idx.releases {
        if !crate::bundle::manifest::safe_name(&r.board) {
            return Err(FeedError::Malformed(format!(
                "release board {:?} is not a safe name",
                r.board
            )));
        }
    }
    Ok(idx)
}

/// The newest release for `board` newer than `current` and not below `floor`.
///
/// With a `target` (an operator pinned a version), only that version is
/// eligible, and only under the same rules: listed in this signed index,
/// newer than what runs, not below the rollback floor.
pub(crate) fn pick<'a>(
    idx: &'a Index,
    board: &str,
    current: Option<&semver::Version>,
    floor: Option<&semver::Version>,
    target: Option<&semver::Version>,
) -> Option<&'a FeedRelease> {
    idx.releases
        .iter()
        .filter(|r| r.board == board)
        .filter(|r| target.is_none_or(|t| &r.version == t))
        .filter(|r| current.is_none_or(|c| &r.version > c))
        .filter(|r| floor.is_none_or(|f| &r.version >= f))
        .max_by(|a, b| a.version.cmp(&b.version))
}

/// Resolve a release URL against the index URL (absolute URLs pass through).
/// A channel name an operator may set on a node: `[a-z0-9-]`, 1..=63.
pub(crate) fn channel_ok(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= 63
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The index URL of channel `to`, from the configured index URL of channel
/// `from`, whose path names it as a segment (`.../stable/index.json`, as
/// `ferry feed publish` lays a feed out). `None` when the URL does not.
pub(crate) fn channel_url(url: &str, from: &str, to: &str) -> Option<String> {
    if !channel_ok(to) {
        return None;
    }
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let (dir, file) = base.rsplit_once('/')?;
    let (parent, seg) = dir.rsplit_once('/')?;
    if seg != from || parent.ends_with('/') || !parent.contains("://") {
        return None;
    }
    let mut out = format!("{parent}/{to}/{file}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Some(out)
}

pub(crate) fn resolve(index_url: &str, rel: &str) -> String {
    if rel.contains("://") {
        return rel.to_string();
    }
    match index_url.rfind('/') {
        Some(i) => format!("{}/{}", &index_url[..i], rel.trim_start_matches('/')),
        None => rel.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::SecretKey;

    fn index(serial: u64, expires: u64) -> Index {
        Index {
            format: FEED_FORMAT,
            channel: "stable".into(),
            serial,
            created: 100,
            expires,
            releases: ["1.0.0", "1.2.0", "1.1.0"]
                .iter()
                .map(|v| FeedRelease {
                    version: semver::Version::parse(v).unwrap(),
                    board: "qemu-aarch64-virt".into(),
                    url: format!("bundles/{v}.ferry"),
                    size: 10,
                    manifest_sha256: Sha256Digest::of(v.as_bytes()),
                    extensions: BTreeMap::new(),
                })
                .collect(),
            extensions: BTreeMap::new(),
        }
    }

    fn signed(i: &Index, k: &SecretKey) -> (Vec<u8>, String) {
        let b = serde_json::to_vec(i).unwrap();
        let s = encode_sigs(&[k.sign(crate::bundle::keys::Context::Feed, &b)]);
        (b, s)
    }

    #[test]
    fn verify_refuses_each_attack() {
        let k = SecretKey::from_seed("feed", [1; 32]);
        let evil = SecretKey::from_seed("evil", [2; 32]);
        let ring = Keyring::new(vec![k.public()], 1);
        let (b, s) = signed(&index(5, 1000), &k);
        assert_eq!(
            verify(&b, &s, &ring, "stable", 500, Some(5))
                .unwrap()
                .serial,
            5
        );
        assert_eq!(
            verify(&b, "", &ring, "stable", 500, None),
            Err(FeedError::Unsigned)
        );
        let (eb, es) = signed(&index(9, 1000), &evil);
        assert!(matches!(
            verify(&eb, &es, &ring, "stable", 500, None),
            Err(FeedError::Untrusted(_))
        ));
        let mut tampered = b.clone();
        let i = tampered.windows(3).position(|w| w == b"1.2").unwrap();
        tampered[i + 2] = b'9';
        assert!(matches!(
            verify(&tampered, &s, &ring, "stable", 500, None),
            Err(FeedError::Untrusted(_))
        ));
        assert_eq!(
            verify(&b, &s, &ring, "stable", 1000, None),
            Err(FeedError::Expired {
                expires: 1000,
                now: 1000
            })
        );
        assert_eq!(
            verify(&b, &s, &ring, "stable", 500, Some(6)),
            Err(FeedError::Replayed { serial: 5, seen: 6 })
        );
        assert!(matches!(
            verify(&b, &s, &ring, "beta", 500, None),
            Err(FeedError::WrongChannel { .. })
        ));
    }

    #[test]
    fn pick_newest_compatible_above_current() {
        let i = index(1, 10);
        let v = |s: &str| semver::Version::parse(s).unwrap();
        assert_eq!(
            pick(&i, "qemu-aarch64-virt", Some(&v("1.0.0")), None, None)
                .unwrap()
                .version,
            v("1.2.0")
        );
        assert!(pick(&i, "qemu-aarch64-virt", Some(&v("1.2.0")), None, None).is_none());
        assert!(pick(&i, "raspberry-pi-4", None, None, None).is_none());
        assert!(pick(&i, "qemu-aarch64-virt", None, Some(&v("2.0.0")), None).is_none());
        // a pinned version: exactly it, and still never a downgrade
        let on = |cur: &str, t: &str| {
            pick(&i, "qemu-aarch64-virt", Some(&v(cur)), None, Some(&v(t)))
                .map(|r| r.version.clone())
        };
        assert_eq!(on("1.0.0", "1.1.0"), Some(v("1.1.0")));
        assert_eq!(on("1.1.0", "1.1.0"), None, "already there");
        assert_eq!(on("1.2.0", "1.1.0"), None, "a pin is no downgrade");
        assert_eq!(on("1.0.0", "1.9.0"), None, "not in the feed");
        assert_eq!(
            resolve("https://h/feed/stable/index.json", "bundles/a.ferry"),
            "https://h/feed/stable/bundles/a.ferry"
        );
        assert_eq!(
            resolve("https://h/x/index.json", "https://cdn/b.ferry"),
            "https://cdn/b.ferry"
        );
    }

    #[test]
    fn an_operator_moves_a_node_to_another_channel() {
        let u = "https://feed.example/fleet/stable/index.json?token=x";
        assert_eq!(
            channel_url(u, "stable", "beta").as_deref(),
            Some("https://feed.example/fleet/beta/index.json?token=x")
        );
        assert_eq!(
            channel_url(u, "edge", "beta"),
            None,
            "the URL does not name the channel"
        );
        assert_eq!(channel_url(u, "stable", "../x"), None);
        assert_eq!(channel_url(u, "stable", "Beta"), None);
        assert_eq!(channel_url(u, "stable", ""), None);
        assert_eq!(channel_url("https://h/stable", "stable", "beta"), None);
    }
}
