//! What `ferry flash` may write to: the target inspected (block device or
//! file, size, device number) and the refusals made before anything is
//! opened for writing (mounted by number or source, held, the boot disk,
//! too small), and the exclusive open that keeps it so for the whole write.

use std::fs::File;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// What the target is, as far as the refusals are concerned.
#[derive(Debug)]
pub struct Target {
    pub path: PathBuf,
    pub block: bool,
    pub size: Option<u64>,
    pub rdev: Option<(u64, u64)>,
}

nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);

/// Open a block device exclusively: the kernel answers EBUSY when anything
/// holds it (a mount of any filesystem, btrfs and zfs included, LVM,
/// device-mapper, RAID, another exclusive opener).
pub(super) fn open_exclusive(path: &Path, write: bool) -> Result<File, Error> {
    use std::os::unix::fs::OpenOptionsExt as _;
    File::options()
        .read(true)
        .write(write)
        .custom_flags(nix::libc::O_EXCL)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::EBUSY) => Error::Usage(format!(
                "refusing to flash {}: the kernel reports it busy (mounted, or held by LVM, \
                 device-mapper, RAID or another program); unmount or release it first",
                path.display()
            )),
            _ => Error::io("open target", path, e),
        })
}

pub fn inspect_target(path: &Path) -> Result<Target, Error> {
    let md = match std::fs::metadata(path) {
        Ok(md) => md,
        // a new image file, as bmaptool makes one
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Target {
                path: path.into(),
                block: false,
                size: None,
                rdev: None,
            })
        }
        Err(e) => return Err(Error::io("stat target", path, e)),
    };
    if md.file_type().is_block_device() {
        let f = File::open(path).map_err(|e| Error::io("open target", path, e))?;
        let mut size = 0u64;
        // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
        unsafe { blkgetsize64(std::os::fd::AsRawFd::as_raw_fd(&f), &mut size) }
            .map_err(|e| Error::io("read device size", path, e.into()))?;
        let rdev = md.rdev();
        Ok(Target {
            path: path.into(),
            block: true,
            size: Some(size),
            rdev: Some((nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev))),
        })
    } else if md.is_file() {
        Ok(Target {
            path: path.into(),
            block: false,
            size: None,
            rdev: None,
        })
    } else {
        Err(Error::Usage(format!(
            "{} is neither a block device nor a regular file",
            path.display()
        )))
    }
}

/// Canonical sysfs path of a block device number.
fn sys_path(maj: u64, min: u64) -> Option<PathBuf> {
    std::fs::canonicalize(format!("/sys/dev/block/{maj}:{min}")).ok()
}

/// Mounts on the device or any of its partitions: (mount point, is "/").
pub fn mounts_on(maj: u64, min: u64, mountinfo: &str) -> Vec<(String, bool)> {
    let Some(dev) = sys_path(maj, min) else {
        return vec![];
    };
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(mm), Some(point)) = (f.get(2), f.get(4)) else {
            continue;
        };
        let Some((a, b)) = mm.split_once(':') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (a.parse(), b.parse()) else {
            continue;
        };
        let by_number = sys_path(a, b).is_some_and(|p| p.starts_with(&dev));
        // btrfs, overlay and zfs show an anonymous device number: match the
        // mount source (after " - fstype ") too
        let source = line
            .split(" - ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().nth(1));
        let by_source = source
            .filter(|src| src.starts_with('/'))
            .and_then(|src| std::fs::metadata(src).ok())
            .filter(|m| m.file_type().is_block_device())
            .and_then(|m| {
                sys_path(
                    nix::sys::stat::major(m.rdev()),
                    nix::sys::stat::minor(m.rdev()),
                )
            })
            .is_some_and(|p| p.starts_with(&dev));
        if by_number || by_source {
            out.push((point.to_string(), *point == "/"));
        }
    }
    out
}

/// Devices stacked on the device or its partitions (`holders/` in sysfs):
/// device-mapper, LVM, RAID.
pub(crate) fn holders_of(maj: u64, min: u64) -> Vec<String> {
    let Some(dev) = sys_path(maj, min) else {
        return vec![];
    };
    let mut dirs = vec![dev.clone()];
    if let Ok(rd) = std::fs::read_dir(&dev) {
        for e in rd.flatten() {
            if e.path().join("partition").exists() {
                dirs.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    for d in dirs {
        if let Ok(rd) = std::fs::read_dir(d.join("holders")) {
            out.extend(
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
    }
    out
}

/// The refusals, before anything is opened for writing.
pub(crate) fn check_target(t: &Target, image_size: Option<u64>) -> Result<(), Error> {
    if let Some((maj, min)) = t.rdev {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let m = mounts_on(maj, min, &info);
        if m.iter().any(|(_, root)| *root) {
            return Err(Error::Usage(format!(
                "refusing to flash {}: it is the disk the host boots from",
                t.path.display()
            )));
        }
        if let Some((point, _)) = m.first() {
            return Err(Error::Usage(format!(
                "refusing to flash {}: it is mounted at {point} (unmount it first)",
                t.path.display()
            )));
        }
        let h = holders_of(maj, min);
        if !h.is_empty() {
            return Err(Error::Usage(format!(
                "refusing to flash {}: it is held by {} (device-mapper, LVM or RAID); release it first",
                t.path.display(),
                h.join(", ")
            )));
        }
    }
    if let (Some(have), Some(need)) = (t.size, image_size) {
        if have < need {
            return Err(Error::Usage(format!(
                "refusing to flash {}: it holds {have} bytes, the image needs {need}",
                t.path.display()
            )));
        }
    }
    Ok(())
}
