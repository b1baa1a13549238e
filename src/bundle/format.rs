//! The fixed binary framing of a bundle: header and signature block.
//! Pure parsing and encoding of byte slices under hard size limits; no I/O.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "FERRYBDL"
//! 8       4     format version (u32 LE), currently 1
//! 12      4     manifest length in bytes (u32 LE), at most MAX_MANIFEST
//! 16      4     signature block length (u32 LE), a multiple of 72, at most MAX_SIGNATURES * 72
//! 20      4     reserved, must be 0
//! 24      ...   manifest (JSON, the exact signed bytes)
//! ...     ...   signature block: entries of key id (8 bytes) + ed25519 signature (64 bytes)
//! ...     ...   payloads in manifest order, each a sequence of chunks (independent zstd frames)
//! ```

use crate::error::BundleError;

pub(crate) const MAGIC: &[u8; 8] = b"FERRYBDL";
/// 2: manifest signatures are domain-separated (`keys::Context::Bundle`).
pub(crate) const FORMAT_VERSION: u32 = 2;
pub(crate) const HEADER_LEN: usize = 24;
/// Hard limit on the manifest size, checked before any allocation.
pub(crate) const MAX_MANIFEST: u32 = 8 << 20;
pub(crate) const MAX_SIGNATURES: usize = 32;
pub(crate) const SIG_ENTRY_LEN: usize = 8 + 64;

/// The parsed fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub format: u32,
    pub manifest_len: u32,
    pub sigs_len: u32,
}

impl Header {
    pub(crate) fn parse(b: &[u8; HEADER_LEN]) -> Result<Self, BundleError> {
        if &b[..8] != MAGIC {
            return Err(BundleError::BadMagic);
        }
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let format = word(8);
        if format != FORMAT_VERSION {
            return Err(BundleError::UnsupportedFormat(format));
        }
        let manifest_len = word(12);
        if manifest_len > MAX_MANIFEST {
            return Err(BundleError::ManifestTooLarge {
                len: manifest_len.into(),
                max: MAX_MANIFEST.into(),
            });
        }
        if manifest_len == 0 {
            return Err(BundleError::BadManifest("empty manifest".into()));
        }
        let sigs_len = word(16);
        if sigs_len as usize % SIG_ENTRY_LEN != 0
            || sigs_len as usize > MAX_SIGNATURES * SIG_ENTRY_LEN
        {
            return Err(BundleError::BadSignatureBlock(format!(
                "length {sigs_len} is not a multiple of {SIG_ENTRY_LEN} up to {} entries",
                MAX_SIGNATURES
            )));
        }
        if word(20) != 0 {
            return Err(BundleError::BadHeader("reserved field is not zero"));
        }
        Ok(Self {
            format,
            manifest_len,
            sigs_len,
        })
    }

    #[cfg(any(feature = "host", test))]
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&self.format.to_le_bytes());
        b[12..16].copy_from_slice(&self.manifest_len.to_le_bytes());
        b[16..20].copy_from_slice(&self.sigs_len.to_le_bytes());
        b
    }

    /// Offset of the first payload byte.
    pub(crate) fn payload_offset(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.manifest_len) + u64::from(self.sigs_len)
    }
}

/// One signature entry: which key signed, and the signature over the manifest bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureEntry {
    pub key_id: [u8; 8],
    pub signature: [u8; 64],
}

pub(crate) fn parse_signatures(b: &[u8]) -> Result<Vec<SignatureEntry>, BundleError> {
    if b.len() % SIG_ENTRY_LEN != 0 {
        return Err(BundleError::BadSignatureBlock("partial entry".into()));
    }
    if b.is_empty() {
        return Err(BundleError::NotEnoughSignatures {
            valid: 0,
            required: 1,
        });
    }
    Ok(b.chunks_exact(SIG_ENTRY_LEN)
        .map(|e| {
            let mut key_id = [0u8; 8];
            key_id.copy_from_slice(&e[..8]);
            let mut signature = [0u8; 64];
            signature.copy_from_slice(&e[8..]);
            SignatureEntry { key_id, signature }
        })
        .collect())
}

#[cfg(feature = "host")]
pub(crate) fn encode_signatures(entries: &[SignatureEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * SIG_ENTRY_LEN);
    for e in entries {
        out.extend_from_slice(&e.key_id);
        out.extend_from_slice(&e.signature);
    }
    out
}

/// Lower-case hex of bytes.
pub(crate) fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

/// Parse exactly `N` bytes of hex (either case).
pub(crate) fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != N * 2 {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nib(s[2 * i])? << 4) | nib(s[2 * i + 1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_limits() {
        let h = Header {
            format: FORMAT_VERSION,
            manifest_len: 100,
            sigs_len: 72,
        };
        assert_eq!(Header::parse(&h.encode()).unwrap(), h);
        assert_eq!(h.payload_offset(), 24 + 100 + 72);

        let mut b = h.encode();
        b[0] = b'X';
        assert!(matches!(Header::parse(&b), Err(BundleError::BadMagic)));

        let big = Header {
            manifest_len: MAX_MANIFEST + 1,
            ..h
        }
        .encode();
        assert!(matches!(
            Header::parse(&big),
            Err(BundleError::ManifestTooLarge { .. })
        ));

        // format 1 (signatures without a domain prefix) and a future 3 are refused
        for other in [1, 3] {
            let v = Header { format: other, ..h }.encode();
            assert!(matches!(
                Header::parse(&v),
                Err(BundleError::UnsupportedFormat(n)) if n == other
            ));
        }

        let odd = Header { sigs_len: 71, ..h }.encode();
        assert!(matches!(
            Header::parse(&odd),
            Err(BundleError::BadSignatureBlock(_))
        ));

        let mut reserved = h.encode();
        reserved[23] = 1;
        assert!(matches!(
            Header::parse(&reserved),
            Err(BundleError::BadHeader(_))
        ));
    }

    #[test]
    fn hex_round_trip() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&b), "0001abff");
        assert_eq!(unhex::<4>("0001ABff"), Some(b));
        assert_eq!(unhex::<4>("0001abf"), None);
        assert_eq!(unhex::<4>("0001abfg"), None);
    }
}
