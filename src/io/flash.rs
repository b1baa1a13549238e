//! `ferry flash` (host only): write a disk image (raw or `.img.zst`) to a
//! block device or file, skipping holes and all-zero blocks as bmaptool
//! does, on two threads (read + zero detection, write + hashing), then read
//! the written ranges back from the device (not the page cache) and compare.
//! Refuses a mounted target, the disk the host boots from, and a target
//! smaller than the image.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt as _, FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, sync_channel};

use sha2::{Digest as _, Sha256};

use crate::error::Error;

const BLOCK: usize = 1 << 20;

/// Image length, the (offset, length) of every block written, and their digest.
type Copied = (u64, Vec<(u64, u64)>, [u8; 32]);

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub image_size: u64,
    pub written: u64,
    pub skipped: u64,
    pub verified: bool,
}

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
fn open_exclusive(path: &Path, write: bool) -> Result<File, Error> {
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
pub fn holders_of(maj: u64, min: u64) -> Vec<String> {
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
pub fn check_target(t: &Target, image_size: Option<u64>) -> Result<(), Error> {
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

/// The image's data ranges (SEEK_DATA/SEEK_HOLE); all of it if unsupported.
fn data_ranges(f: &File, len: u64) -> Vec<(u64, u64)> {
    use nix::unistd::{lseek, Whence};
    use std::os::fd::AsRawFd as _;
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = 0i64;
    while (pos as u64) < len {
        let Ok(start) = lseek(fd, pos, Whence::SeekData) else {
            break;
        };
        let end = lseek(fd, start, Whence::SeekHole).unwrap_or(len as i64);
        out.push((start as u64, end as u64));
        pos = end;
    }
    if out.is_empty() && len > 0 && lseek(fd, 0, Whence::SeekData).is_err() {
        // an all-hole file has no data; an error other than ENXIO means no support
        if nix::errno::Errno::last() != nix::errno::Errno::ENXIO {
            out.push((0, len));
        }
    }
    out
}

fn is_zero(b: &[u8]) -> bool {
    let (pre, mid, post) = unsafe { b.align_to::<u128>() };
    pre.iter().all(|&x| x == 0) && mid.iter().all(|&x| x == 0) && post.iter().all(|&x| x == 0)
}

enum Src {
    Raw {
        f: File,
        ranges: Vec<(u64, u64)>,
        len: u64,
    },
    Zst {
        d: Box<dyn Read + Send>,
        len: Option<u64>,
    },
}

/// The decompressed size of a `.zst` image, all frames, by decoding it once.
fn zst_len(path: &Path) -> Result<u64, Error> {
    let f = File::open(path).map_err(|e| Error::io("open image", path, e))?;
    let mut d =
        zstd::stream::read::Decoder::new(f).map_err(|e| Error::io("open zstd image", path, e))?;
    std::io::copy(&mut d, &mut std::io::sink()).map_err(|e| Error::io("decompress image", path, e))
}

fn open_source(path: &Path) -> Result<Src, Error> {
    let f = File::open(path).map_err(|e| Error::io("open image", path, e))?;
    if path.extension().is_some_and(|e| e == "zst") {
        let mut head = [0u8; 18];
        let n = f.read_at(&mut head, 0).unwrap_or(0);
        let len = crate::bundle::zframe::parse(&head[..n])
            .ok()
            .and_then(|h| h.content_size);
        let d = zstd::stream::read::Decoder::new(f)
            .map_err(|e| Error::io("open zstd image", path, e))?;
        return Ok(Src::Zst {
            d: Box::new(d),
            len,
        });
    }
    let len = f
        .metadata()
        .map_err(|e| Error::io("stat image", path, e))?
        .len();
    let ranges = data_ranges(&f, len);
    Ok(Src::Raw { f, ranges, len })
}

/// Flash `image` to `target`.
pub fn flash(
    image: &Path,
    target: &Path,
    verify: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<Report, Error> {
    let t = inspect_target(target)?;
    let src = open_source(image)?;
    let image_len = match &src {
        Src::Raw { len, .. } => Some(*len),
        // a frame header's content size covers one frame only (and may be
        // absent): measure the whole image before the first write
        Src::Zst { .. } if t.block => Some(zst_len(image)?),
        Src::Zst { len, .. } => *len,
    };
    check_target(&t, image_len)?;
    if !t.block && std::fs::canonicalize(image).ok() == std::fs::canonicalize(target).ok() {
        return Err(Error::Usage("image and target are the same file".into()));
    }
    let out = if t.block {
        // held exclusively for the whole write: nothing can mount it meanwhile
        open_exclusive(target, true)?
    } else {
        File::options()
            .write(true)
            .read(true)
            .create(true)
            .truncate(false)
            .open(target)
            .map_err(|e| Error::io("open target", target, e))?
    };
    // only a file target starts out as zeros (it is truncated below): on a
    // device, every block the image defines is written, zeros included
    let skip_zeros = !t.block;
    if !t.block {
        // a file target ends up exactly the image: skipped blocks become holes
        out.set_len(0)
            .map_err(|e| Error::io("truncate target", target, e))?;
    }
    let (tx, rx) = sync_channel::<(u64, Vec<u8>)>(4);
    let (free_tx, free_rx) = channel::<Vec<u8>>();
    for _ in 0..6 {
        let _ = free_tx.send(vec![0u8; BLOCK]);
    }
    let free_back = free_tx.clone();
    let mut report = Report::default();
    let (total, blocks, digest) = std::thread::scope(|s| -> Result<Copied, Error> {
        let reader = s.spawn(move || -> Result<u64, Error> {
            // zero blocks go straight back to the pool; data blocks to the writer
            let send = |off: u64, mut buf: Vec<u8>, n: usize| -> bool {
                buf.truncate(n);
                if skip_zeros && is_zero(&buf) {
                    return free_tx.send(buf).is_ok();
                }
                tx.send((off, buf)).is_ok()
            };
            match src {
                Src::Raw { f, ranges, len } => {
                    // canonical, non-overlapping BLOCK-aligned blocks touching data
                    let mut next = 0u64;
                    for (start, end) in ranges {
                        let mut off = (start - start % BLOCK as u64).max(next);
                        while off < end.min(len) {
                            let Ok(mut buf) = free_rx.recv() else {
                                return Ok(len);
                            };
                            let n = ((len - off) as usize).min(BLOCK);
                            buf.resize(n, 0);
                            f.read_exact_at(&mut buf, off)
                                .map_err(|e| Error::io("read image", image, e))?;
                            if !send(off, buf, n) {
                                return Ok(len);
                            }
                            off += n as u64;
                            next = off;
                        }
                    }
                    Ok(len)
                }
                Src::Zst { mut d, .. } => {
                    let mut off = 0u64;
                    loop {
                        let Ok(mut buf) = free_rx.recv() else {
                            return Ok(off);
                        };
                        buf.resize(BLOCK, 0);
                        let n = crate::bundle::writer::read_full(&mut d, &mut buf)
                            .map_err(|e| Error::io("decompress image", image, e))?;
                        if n == 0 {
                            return Ok(off);
                        }
                        if !send(off, buf, n) {
                            return Ok(off);
                        }
                        off += n as u64;
                    }
                }
            }
        });
        // the writer is this thread
        let mut h = Sha256::new();
        let mut blocks: Vec<(u64, u64)> = Vec::new();
        let mut werr = None;
        for (off, buf) in rx.iter() {
            if let Some(size) = t.size {
                if off + buf.len() as u64 > size {
                    werr = Some(Error::Usage(format!(
                        "image is larger than {} ({size} bytes)",
                        target.display()
                    )));
                    break;
                }
            }
            let bad = super::fault::corrupt(&buf);
            if let Err(e) = out.write_all_at(bad.as_deref().unwrap_or(&buf), off) {
                werr = Some(Error::io("write", target, e));
                break;
            }
            h.update(off.to_le_bytes());
            h.update(&buf);
            blocks.push((off, buf.len() as u64));
            progress(buf.len() as u64);
            let _ = free_back.send(buf);
        }
        drop(rx);
        drop(free_back);
        let total = reader
            .join()
            .map_err(|_| Error::Usage("image reader thread failed".into()))??;
        if let Some(e) = werr {
            return Err(e);
        }
        Ok((total, blocks, h.finalize().into()))
    })?;
    report.image_size = total;
    report.written = blocks.iter().map(|e| e.1).sum();
    report.skipped = total.saturating_sub(report.written);
    if !t.block {
        let cur = out.metadata().map(|m| m.len()).unwrap_or(0);
        if cur < total {
            out.set_len(total)
                .map_err(|e| Error::io("extend target", target, e))?;
        }
    }
    out.sync_all().map_err(|e| Error::io("sync", target, e))?;
    if verify {
        let got = read_back(&out, target, &blocks)?;
        if got != digest {
            return Err(Error::ReadBack {
                partition: target.display().to_string(),
                payload: image.display().to_string(),
            });
        }
        report.verified = true;
    }
    Ok(report)
}

/// Hash the written blocks as read from the device, bypassing the cache.
fn read_back(out: &File, target: &Path, blocks: &[(u64, u64)]) -> Result<[u8; 32], Error> {
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    use std::os::fd::AsRawFd as _;
    let _ = posix_fadvise(
        out.as_raw_fd(),
        0,
        0,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BLOCK];
    for &(off, len) in blocks {
        let n = len as usize;
        out.read_exact_at(&mut buf[..n], off)
            .map_err(|e| Error::io("read back", target, e))?;
        h.update(off.to_le_bytes());
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}
