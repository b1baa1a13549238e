#![warn(unreachable_pub)]
//! ferry: an A/B update engine for low-RAM ARM boards running k3s.
//!
//! # Architecture
//! - A sans-IO core: the bundle format and manifest rules ([`bundle::format`],
//!   [`bundle::manifest`]), signature checks ([`bundle::keys`]), the update
//!   state machine ([`update::machine`]), boot-slot logic over bootloader
//!   variables ([`board::bootenv`]). These take bytes and values and do no I/O.
//! - I/O at the edges: the streaming pipeline ([`bundle::reader`]) reads from
//!   any `Read`, slot sinks write partitions ([`io`]), bootloader backends
//!   read and write their environments ([`board`]), the CLI ([`cli`]).
//!
//! # Invariants
//! - No payload byte is decompressed or written before its chunk's SHA-256,
//!   signed through the manifest, has been checked.
//! - The active slot and its boot entry are never written by an install.
//! - The inactive slot is marked invalid in the bootloader *before* it is
//!   written, and becomes bootable only after the read-back digest matches.
//! - Memory does not grow with bundle size: a fixed pool of chunk buffers.

// The public API is `cli::run` and `Error`. The modules stay reachable for
// the integration tests, fuzz targets and benchmarks (hidden from the docs);
// inside them, items are `pub(crate)` unless one of those uses them, so the
// compiler reports dead code (`unreachable_pub` keeps it that way).
#[doc(hidden)]
pub mod backoff;
#[doc(hidden)]
pub mod board;
#[doc(hidden)]
pub mod bundle;
pub mod cli;
#[doc(hidden)]
pub mod daemon;
pub mod error;
#[doc(hidden)]
pub mod feed;
#[doc(hidden)]
pub mod health;
#[doc(hidden)]
pub mod io;
#[doc(hidden)]
pub mod kube;
#[doc(hidden)]
pub mod net;
#[doc(hidden)]
pub mod settings;
#[doc(hidden)]
pub mod update;
#[doc(hidden)]
pub mod yaml;

pub use error::{Error, Result};
