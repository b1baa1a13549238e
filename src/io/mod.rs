//! I/O at the edges: disks and partitions, the device record, the install
//! pipeline into slots, the device configuration, reboot.

#[cfg(feature = "host")]
pub(crate) mod bmap;
pub mod boardfile;
pub mod bootctl;
pub mod config;
pub mod disk;
pub(crate) mod fault;
pub mod firstboot;
#[cfg(feature = "host")]
pub mod flash;
pub(crate) mod grow;
#[cfg(feature = "host")]
pub(crate) mod image;
pub mod install;
pub(crate) mod keyfiles;
pub(crate) mod node;
#[cfg(feature = "host")]
pub mod provision;
pub(crate) mod store;

/// A new private scratch directory under the temp dir: a random name,
/// created with mode 0700 by this call (never one that already existed, so
/// nobody else can have planted files in it).
#[cfg(feature = "host")]
pub(crate) fn private_dir(prefix: &str) -> Result<std::path::PathBuf, crate::error::Error> {
    use std::os::unix::fs::DirBuilderExt as _;
    for _ in 0..16 {
        let mut r = [0u8; 12];
        getrandom::getrandom(&mut r)
            .map_err(|e| crate::error::Error::Internal(format!("no randomness: {e}")))?;
        let d = std::env::temp_dir().join(format!("{prefix}-{}", crate::bundle::format::hex(&r)));
        match std::fs::DirBuilder::new().mode(0o700).create(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(crate::error::Error::io("create scratch dir", &d, e)),
        }
    }
    Err(crate::error::Error::Internal(
        "no fresh scratch directory name".into(),
    ))
}
