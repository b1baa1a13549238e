//! ed25519 keys and the keyring: text key files, key ids, and the threshold
//! signature check over exact manifest bytes. Parsing and checking are pure;
//! reading a keyring directory is the one I/O helper, kept at the bottom.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use super::format::{hex, unhex, SignatureEntry};
use crate::error::BundleError;

const PUB_TAG: &str = "ferry-ed25519-public";
#[cfg(any(feature = "host", test))]
const SECRET_TAG: &str = "ferry-ed25519-secret";

/// First 8 bytes of SHA-256 over the public key.
pub(crate) fn key_id(k: &VerifyingKey) -> [u8; 8] {
    let d = Sha256::digest(k.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&d[..8]);
    id
}

/// A public key with its name (for messages only; trust is by key bytes).
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub name: String,
    pub key: VerifyingKey,
}

impl PublicKey {
    pub(crate) fn id(&self) -> [u8; 8] {
        key_id(&self.key)
    }

    /// One line: `ferry-ed25519-public <64 hex> <name>`.
    #[cfg(any(feature = "host", test))]
    pub(crate) fn encode(&self) -> String {
        format!("{PUB_TAG} {} {}\n", hex(self.key.as_bytes()), self.name)
    }

    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if let Some(der) = super::pem::pem_block(text, "PUBLIC KEY") {
            let bytes = super::pem::key_from_spki(&der?)?;
            let key = VerifyingKey::from_bytes(&bytes).map_err(|_| "not a valid ed25519 point")?;
            if key.is_weak() {
                return Err("weak ed25519 key refused".into());
            }
            return Ok(Self {
                name: "pem".into(),
                key,
            });
        }
        let mut it = text.split_whitespace();
        if it.next() != Some(PUB_TAG) {
            return Err(format!("not a ferry public key (expected {PUB_TAG})"));
        }
        let bytes = it
            .next()
            .and_then(unhex::<32>)
            .ok_or("key is not 64 hex digits")?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| "not a valid ed25519 point")?;
        if key.is_weak() {
            return Err("weak ed25519 key refused".into());
        }
        Ok(Self {
            name: it.next().unwrap_or("unnamed").to_string(),
            key,
        })
    }
}

/// A private signing key. Host-side only in practice; never logged.
pub struct SecretKey {
    pub name: String,
    pub key: SigningKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.name)
    }
}

impl SecretKey {
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Self {
        Self {
            name: name.to_string(),
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    #[cfg(any(feature = "host", test))]
    pub(crate) fn encode(&self) -> String {
        format!("{SECRET_TAG} {} {}\n", hex(self.key.as_bytes()), self.name)
    }

    #[cfg(any(feature = "host", test))]
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if let Some(der) = super::pem::pem_block(text, "PRIVATE KEY") {
            return Ok(Self::from_seed("pem", super::pem::seed_from_pkcs8(&der?)?));
        }
        let mut it = text.split_whitespace();
        if it.next() != Some(SECRET_TAG) {
            return Err(format!("not a ferry secret key (expected {SECRET_TAG})"));
        }
        let seed = it
            .next()
            .and_then(unhex::<32>)
            .ok_or("seed is not 64 hex digits")?;
        Ok(Self::from_seed(it.next().unwrap_or("unnamed"), seed))
    }

    /// Sign `msg` for one use: the signed message is the context's prefix
    /// and `msg`, so a signature made for one kind of document can never
    /// pass as another's.
    pub fn sign(&self, ctx: Context, msg: &[u8]) -> SignatureEntry {
        SignatureEntry {
            key_id: key_id(&self.key.verifying_key()),
            signature: self.key.sign(&ctx.message(msg)).to_bytes(),
        }
    }
}

/// Something that signs a document for a context: a key in this process, or
/// an external signer (HSM, KMS) behind a command.
#[cfg(feature = "host")]
pub(crate) type SignFn<'a> =
    dyn FnMut(Context, &[u8]) -> Result<SignatureEntry, crate::error::Error> + 'a;

/// What a signature is for (domain separation): the bytes signed are
/// `prefix || document`, with a prefix per kind of document and format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// A bundle manifest (bundle format 2).
    Bundle,
    /// A release feed index (feed format 2).
    Feed,
}

impl Context {
    pub(crate) fn prefix(self) -> &'static [u8] {
        match self {
            Context::Bundle => b"ferry-bundle-v2\0",
            Context::Feed => b"ferry-feed-v2\0",
        }
    }

    /// The exact bytes a signature covers.
    pub(crate) fn message(self, doc: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(self.prefix().len() + doc.len());
        m.extend_from_slice(self.prefix());
        m.extend_from_slice(doc);
        m
    }
}

/// The set of trusted public keys and how many distinct ones must sign.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<PublicKey>,
    pub threshold: usize,
}

impl Keyring {
    pub fn new(keys: Vec<PublicKey>, threshold: usize) -> Self {
        let mut uniq: Vec<PublicKey> = Vec::new();
        for k in keys {
            if !uniq.iter().any(|u| u.key == k.key) {
                uniq.push(k);
            }
        }
        Self {
            keys: uniq,
            threshold: threshold.max(1),
        }
    }

    /// Check the signatures over `msg`. Returns the ids of the distinct trusted
    /// keys whose signatures verified. Signatures by unknown keys are ignored
    /// (a removed key is a revoked key); a bad signature by a trusted key is
    /// an error, since it means the bytes were altered.
    pub fn verify(
        &self,
        ctx: Context,
        doc: &[u8],
        sigs: &[SignatureEntry],
    ) -> Result<Vec<[u8; 8]>, BundleError> {
        let msg = ctx.message(doc);
        let msg = msg.as_slice();
        let mut ok: Vec<[u8; 8]> = Vec::new();
        for s in sigs {
            let Some(k) = self.keys.iter().find(|k| k.id() == s.key_id) else {
                continue;
            };
            let sig = Signature::from_bytes(&s.signature);
            k.key
                .verify_strict(msg, &sig)
                .map_err(|_| BundleError::BadSignature {
                    key_id: hex(&s.key_id),
                })?;
            if !ok.contains(&s.key_id) {
                ok.push(s.key_id);
            }
        }
        if ok.len() < self.threshold {
            return Err(BundleError::NotEnoughSignatures {
                valid: ok.len(),
                required: self.threshold,
            });
        }
        Ok(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed(&format!("k{n}"), [n; 32])
    }

    #[test]
    fn key_files_round_trip() {
        let k = key(1);
        let p = PublicKey::parse(&k.public().encode()).unwrap();
        assert_eq!(p.key, k.public().key);
        assert_eq!(p.name, "k1");
        let s = SecretKey::parse(&k.encode()).unwrap();
        assert_eq!(s.key.to_bytes(), k.key.to_bytes());
        assert!(PublicKey::parse(&k.encode()).is_err());
        assert!(PublicKey::parse("ferry-ed25519-public zz").is_err());
    }

    #[test]
    fn threshold_counts_distinct_trusted_keys() {
        let (a, b, c) = (key(1), key(2), key(3));
        let msg = b"manifest";
        let ring = Keyring::new(vec![a.public(), b.public()], 2);
        // two signatures by the same key count once
        let same = [a.sign(Context::Bundle, msg), a.sign(Context::Bundle, msg)];
        assert!(matches!(
            ring.verify(Context::Bundle, msg, &same),
            Err(BundleError::NotEnoughSignatures {
                valid: 1,
                required: 2
            })
        ));
        // an untrusted signer does not count
        let untrusted = [a.sign(Context::Bundle, msg), c.sign(Context::Bundle, msg)];
        assert!(matches!(
            ring.verify(Context::Bundle, msg, &untrusted),
            Err(BundleError::NotEnoughSignatures { valid: 1, .. })
        ));
        assert_eq!(
            ring.verify(
                Context::Bundle,
                msg,
                &[a.sign(Context::Bundle, msg), b.sign(Context::Bundle, msg)]
            )
            .unwrap()
            .len(),
            2
        );
        // a trusted signature over other bytes is tampering
        let wrong = [
            a.sign(Context::Bundle, b"other"),
            b.sign(Context::Bundle, msg),
        ];
        assert!(matches!(
            ring.verify(Context::Bundle, msg, &wrong),
            Err(BundleError::BadSignature { .. })
        ));
    }

    #[test]
    fn a_signature_is_bound_to_its_kind_of_document() {
        let k = key(7);
        let ring = Keyring::new(vec![PublicKey::parse(&k.public().encode()).unwrap()], 1);
        let doc = br#"{"format":2,"serial":18446744073709551615}"#;
        let as_feed = [k.sign(Context::Feed, doc)];
        assert!(ring.verify(Context::Feed, doc, &as_feed).is_ok());
        // a threshold co-signer asked to sign "a bundle manifest" that is really a
        // feed index: that signature never verifies as a feed's
        let as_bundle = [k.sign(Context::Bundle, doc)];
        assert!(ring.verify(Context::Feed, doc, &as_bundle).is_err());
        assert!(ring.verify(Context::Bundle, doc, &as_feed).is_err());
        // nor does a signature over the bare bytes (format 1)
        use ed25519_dalek::Signer as _;
        let bare = [SignatureEntry {
            key_id: as_feed[0].key_id,
            signature: k.key.sign(doc).to_bytes(),
        }];
        assert!(ring.verify(Context::Feed, doc, &bare).is_err());
    }
}
