//! Error types, split by who is at fault: the bundle, its signatures, the board
//! description, the device's storage, the update policy, or an illegal state
//! transition. Every variant carries what a person needs to act on it; the
//! binary maps each to a distinct exit code. No I/O or formatting side effects here.

use std::fmt;
use std::path::PathBuf;

/// A fault in a bundle's bytes: its framing, manifest, signatures or payloads.
#[derive(Debug)]
#[non_exhaustive]
pub enum BundleError {
    /// The first bytes are not a ferry bundle.
    BadMagic,
    /// The header names a format version this build does not read.
    UnsupportedFormat(u32),
    /// The reserved header field is not zero.
    BadHeader(&'static str),
    /// The declared manifest is larger than the hard limit.
    ManifestTooLarge { len: u64, max: u64 },
    /// The declared signature block is larger than the limit or malformed.
    BadSignatureBlock(String),
    /// The input ended before `what` was complete.
    Truncated { what: String },
    /// The manifest is not valid JSON of the expected shape, or fails a rule.
    BadManifest(String),
    /// The manifest requires a feature this build does not implement.
    UnknownRequirement(String),
    /// Fewer valid signatures from distinct trusted keys than required.
    NotEnoughSignatures { valid: usize, required: usize },
    /// A trusted key's signature does not verify over the manifest bytes.
    BadSignature { key_id: String },
    /// A compressed chunk's SHA-256 is not the one the manifest signs.
    ChunkDigest { payload: String, chunk: usize },
    /// A chunk does not decompress to exactly its declared size.
    ChunkSize {
        payload: String,
        chunk: usize,
        detail: String,
    },
    /// zstd refused a chunk (corrupt data or a window over the limit).
    Decompress {
        payload: String,
        chunk: usize,
        detail: String,
    },
    /// The digest of the installed (decompressed) bytes is wrong.
    InstalledDigest { payload: String },
    /// Bytes follow the last payload.
    TrailingData,
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic => write!(f, "not a ferry bundle (bad magic)"),
            Self::UnsupportedFormat(v) => write!(f, "unsupported bundle format version {v}"),
            Self::BadHeader(w) => write!(f, "bad bundle header: {w}"),
            Self::ManifestTooLarge { len, max } => {
                write!(
                    f,
                    "manifest of {len} bytes exceeds the limit of {max} bytes"
                )
            }
            Self::BadSignatureBlock(w) => write!(f, "bad signature block: {w}"),
            Self::Truncated { what } => write!(f, "bundle truncated in {what}"),
            Self::BadManifest(w) => write!(f, "bad manifest: {w}"),
            Self::UnknownRequirement(r) => {
                write!(
                    f,
                    "bundle requires feature {r:?}, which this ferry does not support"
                )
            }
            Self::NotEnoughSignatures { valid, required } => write!(
                f,
                "not enough trusted signatures: {valid} valid, {required} required"
            ),
            Self::BadSignature { key_id } => {
                write!(
                    f,
                    "signature by trusted key {key_id} does not verify (manifest tampered)"
                )
            }
            Self::ChunkDigest { payload, chunk } => {
                write!(
                    f,
                    "payload {payload}: chunk {chunk} digest mismatch (corrupt or tampered)"
                )
            }
            Self::ChunkSize {
                payload,
                chunk,
                detail,
            } => {
                write!(
                    f,
                    "payload {payload}: chunk {chunk} has the wrong size: {detail}"
                )
            }
            Self::Decompress {
                payload,
                chunk,
                detail,
            } => {
                write!(
                    f,
                    "payload {payload}: chunk {chunk} does not decompress: {detail}"
                )
            }
            Self::InstalledDigest { payload } => {
                write!(f, "payload {payload}: installed digest mismatch")
            }
            Self::TrailingData => write!(f, "trailing data after the last payload"),
        }
    }
}

impl std::error::Error for BundleError {}

/// A refusal by update policy: the bundle is genuine but not for this device now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyError {
    WrongBoard {
        bundle: String,
        device: String,
    },
    Downgrade {
        bundle: String,
        floor: String,
    },
    TooOld {
        installed: String,
        required: String,
    },
    MissingTarget {
        target: String,
    },
    TooLarge {
        payload: String,
        size: u64,
        partition: String,
        capacity: u64,
    },
    /// The bundle leaves some of the slot's partitions to another release.
    Incomplete {
        missing: Vec<String>,
    },
    /// This release already failed on this device (health or boot).
    FailedBefore {
        version: String,
    },
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongBoard { bundle, device } => {
                write!(f, "bundle is for board {bundle:?}, this device is {device:?}")
            }
            Self::Downgrade { bundle, floor } => {
                write!(f, "downgrade refused: bundle version {bundle} is below the rollback floor {floor}")
            }
            Self::TooOld { installed, required } => write!(
                f,
                "installed version {installed} is below the bundle's minimum installed version {required}"
            ),
            Self::MissingTarget { target } => {
                write!(f, "board has no partition for payload target {target:?}")
            }
            Self::Incomplete { missing } => write!(
                f,
                "bundle does not carry every target of the slot (missing: {}): a slot must hold one release",
                missing.join(", ")
            ),
            Self::FailedBefore { version } => write!(
                f,
                "release {version} already failed on this device (rolled back or never booted); publish a fixed release"
            ),
            Self::TooLarge { payload, size, partition, capacity } => write!(
                f,
                "payload {payload} ({size} bytes) does not fit partition {partition} ({capacity} bytes)"
            ),
        }
    }
}

/// The top-level error of every ferry operation.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    Bundle(BundleError),
    Policy(PolicyError),
    /// An I/O operation failed; `op` says which, `path` on what.
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A key file is malformed, or a key operation was refused.
    Key {
        path: PathBuf,
        detail: String,
    },
    /// A board or device configuration file is invalid.
    Config {
        path: PathBuf,
        detail: String,
    },
    /// The bootloader's state could not be read or written.
    Boot(String),
    /// The persisted update state is corrupt or of an unknown version.
    State(String),
    /// The requested operation is not legal in the current update state.
    InvalidTransition {
        state: String,
        event: String,
    },
    /// Read-back after writing does not match the payload's signed installed
    /// digest. Every chunk was authenticated, so either the device returned
    /// other bytes than were written, or the bundle was built wrong.
    ReadBack {
        partition: String,
        payload: String,
    },
    /// The release feed was refused (unsigned, untrusted, expired, replayed).
    Feed(crate::feed::FeedError),
    /// A network operation failed; `what` says which.
    Net {
        what: String,
        detail: String,
    },
    /// The server is busy and said when to come back (429/503 with
    /// `Retry-After`): a network fault whose back-off the server chose.
    Throttled {
        what: String,
        after_s: u64,
    },
    /// The cluster (Kubernetes API) refused or failed an operation.
    Cluster(String),
    /// A required external item is missing or a usage rule was broken.
    Usage(String),
    /// Another ferry process holds the device lock.
    Busy(String),
    /// The running daemon carried out a request and it failed: its exit code.
    Remote {
        code: u8,
        message: String,
    },
    /// A bug in ferry: an internal invariant did not hold.
    Internal(String),
}

impl Error {
    /// Faults worth another attempt later with the same inputs: the network,
    /// a bundle source that ended or delivered damaged bytes mid-stream. An
    /// install that stops on one stays resumable; any other error is final.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Net { .. }
                | Error::Throttled { .. }
                | Error::Io {
                    op: "read bundle",
                    ..
                }
                | Error::Bundle(BundleError::Truncated { .. } | BundleError::ChunkDigest { .. })
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bundle(e) => e.fmt(f),
            Self::Policy(e) => e.fmt(f),
            Self::Io { op, path, source } => {
                write!(f, "{op} {}: {}", path.display(), describe_io(source))
            }
            Self::Key { path, detail } => write!(f, "key {}: {detail}", path.display()),
            Self::Config { path, detail } => write!(f, "config {}: {detail}", path.display()),
            Self::Boot(d) => write!(f, "bootloader: {d}"),
            Self::State(d) => write!(f, "update state: {d}"),
            Self::InvalidTransition { state, event } => {
                write!(f, "{event} is not allowed in state {state}")
            }
            Self::ReadBack { partition, payload } => write!(
                f,
                "read-back of partition {partition} does not match payload {payload}'s installed digest (storage fault, or a bundle built wrong)"
            ),
            Self::Feed(e) => e.fmt(f),
            Self::Net { what, detail } => write!(f, "{what}: {detail}"),
            Self::Throttled { what, after_s } => {
                write!(f, "{what}: the server is busy; it asks to retry after {after_s} s")
            }
            Self::Cluster(d) => write!(f, "cluster: {d}"),
            Self::Usage(d) => write!(f, "{d}"),
            Self::Busy(d) => write!(f, "{d}"),
            Self::Remote { message, .. } => write!(f, "{message}"),
            Self::Internal(d) => write!(f, "internal error (a bug in ferry): {d}"),
        }
    }
}

fn describe_io(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(28) => format!("no space left on device ({e})"),
        Some(5) => format!("I/O error from the device ({e})"),
        _ => e.to_string(),
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Bundle(e) => Some(e),
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<BundleError> for Error {
    fn from(e: BundleError) -> Self {
        Self::Bundle(e)
    }
}

impl From<crate::feed::FeedError> for Error {
    fn from(e: crate::feed::FeedError) -> Self {
        Self::Feed(e)
    }
}

impl From<PolicyError> for Error {
    fn from(e: PolicyError) -> Self {
        Self::Policy(e)
    }
}

impl Error {
    /// Wrap an I/O error with the operation and path it concerned.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// A distinct process exit code per failure class (documented in README).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Bundle(b) => match b {
                BundleError::BadMagic => 10,
                BundleError::UnsupportedFormat(_) => 11,
                BundleError::BadHeader(_) => 12,
                BundleError::ManifestTooLarge { .. } => 13,
                BundleError::BadSignatureBlock(_) => 14,
                BundleError::Truncated { .. } => 15,
                BundleError::BadManifest(_) => 16,
                BundleError::UnknownRequirement(_) => 17,
                BundleError::NotEnoughSignatures { .. } => 18,
                BundleError::BadSignature { .. } => 19,
                BundleError::ChunkDigest { .. } => 20,
                BundleError::ChunkSize { .. } => 21,
                BundleError::Decompress { .. } => 22,
                BundleError::InstalledDigest { .. } => 23,
                BundleError::TrailingData => 24,
            },
            Self::Policy(p) => match p {
                PolicyError::WrongBoard { .. } => 30,
                PolicyError::Downgrade { .. } => 31,
                PolicyError::TooOld { .. } => 32,
                PolicyError::MissingTarget { .. } => 33,
                PolicyError::TooLarge { .. } => 34,
                PolicyError::Incomplete { .. } => 35,
                PolicyError::FailedBefore { .. } => 36,
            },
            Self::Io { source, .. } => match source.raw_os_error() {
                Some(28) => 41,
                Some(5) => 42,
                _ => 40,
            },
            Self::ReadBack { .. } => 43,
            Self::Key { .. } => 50,
            Self::Config { .. } => 51,
            Self::Boot(_) => 52,
            Self::State(_) => 53,
            Self::InvalidTransition { .. } => 54,
            Self::Feed(_) => 60,
            Self::Net { .. } | Self::Throttled { .. } => 61,
            Self::Cluster(_) => 62,
            Self::Usage(_) => 2,
            Self::Busy(_) => 4,
            Self::Remote { code, .. } => *code,
            Self::Internal(_) => 70,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
