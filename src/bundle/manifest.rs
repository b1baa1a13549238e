//! The bundle manifest: what a bundle contains and for whom, in JSON.
//! Parsing validates every rule a reader relies on later (sizes add up, chunk
//! counts match, names are safe), so the streaming code can trust its shape.
//! Pure: bytes in, values out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::format::{hex, unhex};
use crate::error::BundleError;

pub(crate) const MANIFEST_FORMAT: u32 = 1;
pub(crate) const MIN_CHUNK: u32 = 64 << 10;
pub(crate) const MAX_CHUNK: u32 = 16 << 20;
/// Largest zstd window a bundle may ask a device to allocate (16 MiB).
pub(crate) const MAX_WINDOW_LOG: u32 = 24;
/// Features this reader implements; a manifest `requires` anything else is refused.
pub(crate) const SUPPORTED_REQUIREMENTS: &[&str] = &[];

/// A SHA-256 digest, serialised as lower-case hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(pub [u8; 32]);

impl std::fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl std::fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl Sha256Digest {
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }
    pub(crate) fn parse(s: &str) -> Option<Self> {
        unhex::<32>(s).map(Self)
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex(&self.0))
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Zstd,
}

/// One chunk: an independent zstd frame that decompresses to `chunk_size` bytes
/// (the last one of a payload to the remainder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunk {
    /// Compressed length in bytes.
    pub size: u32,
    /// SHA-256 of the compressed bytes.
    pub sha256: Sha256Digest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// Unique name within the bundle (`kernel`, `rootfs`, `k3s`, ...).
    pub name: String,
    /// Which slot partition receives it; the board maps targets to partitions.
    pub target: String,
    pub compression: Compression,
    /// zstd window log limit; a frame asking for more is refused before allocation.
    pub window_log_max: u32,
    /// Compressed size: the sum of the chunk sizes.
    pub size: u64,
    /// SHA-256 over the concatenated binary chunk digests: a root over the
    /// compressed payload, cheap to check, and the anchor for a future
    /// out-of-manifest hash list.
    pub sha256: Sha256Digest,
    pub installed_size: u64,
    pub installed_sha256: Sha256Digest,
    pub chunks: Vec<Chunk>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub version: semver::Version,
    pub compatible: String,
    /// A device running an older version must not take this bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_installed_version: Option<semver::Version>,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// Uncompressed bytes per chunk (a power of two).
    pub chunk_size: u32,
    pub payloads: Vec<Payload>,
    /// Features a reader must implement to install this bundle (e.g. a future
    /// `delta-v1`); unknown ones are refused, unlike `extensions`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// Optional sections a reader may ignore (rollout hints, delta indexes, notes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extensions: BTreeMap<String, serde_json::Value>,
}

/// Root digest over a chunk list (see [`Payload::sha256`]).
pub(crate) fn chunk_root(chunks: &[Chunk]) -> Sha256Digest {
    let mut h = Sha256::new();
    for c in chunks {
        h.update(c.sha256.0);
    }
    Sha256Digest(h.finalize().into())
}

/// Largest compressed size a chunk of `n` bytes may have (zstd's compress bound).
pub(crate) fn max_compressed(n: u32) -> u64 {
    let n = u64::from(n);
    n + (n >> 8) + 512
}

/// A name used in paths, partition look-ups and logs: short, no separators.
pub(crate) fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn bad(msg: impl Into<String>) -> BundleError {
    BundleError::BadManifest(msg.into())
}

impl Manifest {
    /// Parse and validate the exact signed bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    #[cfg(any(feature = "host", test))]
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain data structs with string keys cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    pub(crate) fn validate(&self) -> Result<(), BundleError> {
        if self.format != MANIFEST_FORMAT {
            return Err(BundleError::UnsupportedFormat(self.format));
        }
        if let Some(r) = self
            .requires
            .iter()
            .find(|r| !SUPPORTED_REQUIREMENTS.contains(&r.as_str()))
        {
            return Err(BundleError::UnknownRequirement(r.clone()));
        }
        if !safe_name(&self.compatible) {
            return Err(bad(format!(
                "compatible {:?} is not a safe board name",
                self.compatible
            )));
        }
        if !self.chunk_size.is_power_of_two() || !(MIN_CHUNK..=MAX_CHUNK).contains(&self.chunk_size)
        {
            return Err(bad(format!(
                "chunk_size {} is not a power of two in 64 KiB..16 MiB",
                self.chunk_size
            )));
        }
        if self.payloads.is_empty() {
            return Err(bad("no payloads"));
        }
        if self.payloads.len() > 64 {
            return Err(bad("more than 64 payloads"));
        }
        let mut names = std::collections::BTreeSet::new();
        let mut targets = std::collections::BTreeSet::new();
        for p in &self.payloads {
            if !safe_name(&p.name) {
                return Err(bad(format!("payload name {:?} is not safe", p.name)));
            }
            if !safe_name(&p.target) {
                return Err(bad(format!("payload target {:?} is not safe", p.target)));
            }
            if !names.insert(p.name.as_str()) {
                return Err(bad(format!("duplicate payload name {:?}", p.name)));
            }
            if !targets.insert(p.target.as_str()) {
                return Err(bad(format!("duplicate payload target {:?}", p.target)));
            }
            if p.window_log_max < 10 || p.window_log_max > MAX_WINDOW_LOG {
                return Err(bad(format!(
                    "payload {}: window_log_max {} outside 10..={MAX_WINDOW_LOG}",
                    p.name, p.window_log_max
                )));
            }
            let want = p.installed_size.div_ceil(u64::from(self.chunk_size));
            if p.chunks.len() as u64 != want {
                return Err(bad(format!(
                    "payload {}: {} chunks for {} installed bytes, expected {want}",
                    p.name,
                    p.chunks.len(),
                    p.installed_size
                )));
            }
            let bound = max_compressed(self.chunk_size);
            let mut total = 0u64;
            for (i, c) in p.chunks.iter().enumerate() {
                if c.size == 0 || u64::from(c.size) > bound {
                    return Err(bad(format!(
                        "payload {}: chunk {i} size {} out of range",
                        p.name, c.size
                    )));
                }
                total += u64::from(c.size);
            }
            if total != p.size {
                return Err(bad(format!(
                    "payload {}: declared size {} but chunks add up to {total}",
                    p.name, p.size
                )));
            }
            if chunk_root(&p.chunks) != p.sha256 {
                return Err(bad(format!(
                    "payload {}: sha256 does not match its chunk list",
                    p.name
                )));
            }
        }
        Ok(())
    }

    /// Total compressed payload bytes.
    pub(crate) fn payload_bytes(&self) -> u64 {
        self.payloads.iter().map(|p| p.size).sum()
    }

    /// Decompressed length of chunk `i` of payload `p`.
    pub(crate) fn chunk_len(&self, p: &Payload, i: usize) -> usize {
        let start = i as u64 * u64::from(self.chunk_size);
        (p.installed_size - start).min(u64::from(self.chunk_size)) as usize
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        let chunks = vec![
            Chunk {
                size: 10,
                sha256: Sha256Digest::of(b"a"),
            },
            Chunk {
                size: 20,
                sha256: Sha256Digest::of(b"b"),
            },
        ];
        Manifest {
            format: 1,
            version: semver::Version::new(1, 2, 3),
            compatible: "qemu-aarch64-virt".into(),
            min_installed_version: None,
            created: 1_700_000_000,
            chunk_size: 1 << 20,
            payloads: vec![Payload {
                name: "rootfs".into(),
                target: "rootfs".into(),
                compression: Compression::Zstd,
                window_log_max: 20,
                size: 30,
                sha256: chunk_root(&chunks),
                installed_size: (1 << 20) + 5,
                installed_sha256: Sha256Digest::of(b"x"),
                chunks,
            }],
            requires: vec![],
            extensions: BTreeMap::new(),
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Manifest::parse(&m.to_bytes()).unwrap(), m);
    }

    #[test]
    fn unknown_optional_fields_are_tolerated_but_requirements_are_not() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_bytes()).unwrap();
        v["rollout"] = serde_json::json!({"percent": 10});
        assert!(Manifest::parse(&serde_json::to_vec(&v).unwrap()).is_ok());
        v["requires"] = serde_json::json!(["delta-v1"]);
        assert!(matches!(
            Manifest::parse(&serde_json::to_vec(&v).unwrap()),
            Err(BundleError::UnknownRequirement(r)) if r == "delta-v1"
        ));
    }

    #[test]
    fn rules_are_enforced() {
        type Mutation = Box<dyn Fn(&mut Manifest)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("size lie", Box::new(|m| m.payloads[0].size += 1)),
            (
                "chunk count",
                Box::new(|m| m.payloads[0].installed_size = 5),
            ),
            (
                "traversal name",
                Box::new(|m| m.payloads[0].name = "../etc".into()),
            ),
            (
                "traversal target",
                Box::new(|m| m.payloads[0].target = "a/b".into()),
            ),
            ("board", Box::new(|m| m.compatible = String::new())),
            ("chunk size", Box::new(|m| m.chunk_size = 3000)),
            ("window", Box::new(|m| m.payloads[0].window_log_max = 31)),
            (
                "root",
                Box::new(|m| m.payloads[0].sha256 = Sha256Digest::of(b"z")),
            ),
            (
                "huge chunk",
                Box::new(|m| {
                    m.payloads[0].chunks[0].size = u32::MAX;
                    m.payloads[0].size = u64::from(u32::MAX) + 20;
                }),
            ),
            (
                "dup",
                Box::new(|m| {
                    let p = m.payloads[0].clone();
                    m.payloads.push(p);
                }),
            ),
            ("no payloads", Box::new(|m| m.payloads.clear())),
        ];
        for (what, f) in cases {
            let mut m = sample();
            f(&mut m);
            assert!(
                matches!(
                    Manifest::parse(&m.to_bytes()),
                    Err(BundleError::BadManifest(_))
                ),
                "{what} accepted"
            );
        }
    }
}
