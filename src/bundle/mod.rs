//! Signed bundles: the on-disk format, keys, the streaming reader, and (host
//! only) the builder. See README "Bundle format" for the byte layout.

pub mod format;
pub mod keys;
pub(crate) mod manifest;
pub mod pem;
pub mod reader;
#[cfg(feature = "host")]
pub mod writer;
pub mod zframe;

pub use keys::{Keyring, PublicKey, SecretKey};
pub use manifest::{Manifest, Payload, Sha256Digest};
pub use reader::{open, stream, OpenedBundle, PayloadSink, Position};
