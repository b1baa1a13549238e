//! I/O at the edges: disks and partitions, the device record, the install
//! pipeline into slots, the device configuration, reboot.

pub mod boardfile;
pub mod bootctl;
pub mod config;
pub mod disk;
pub mod fault;
#[cfg(feature = "host")]
pub mod flash;
#[cfg(feature = "host")]
pub mod image;
pub mod install;
pub mod keyfiles;
pub mod node;
#[cfg(feature = "host")]
pub mod provision;
pub mod store;
