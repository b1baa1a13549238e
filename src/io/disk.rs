//! A disk (block device or image file) with a GPT, and windows onto its
//! partitions. All writes are positional (pwrite) inside a partition's range,
//! so nothing outside the named partition can be touched by mistake.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::board::gpt;
use crate::error::Error;

#[derive(Debug, Clone)]
pub struct Disk {
    pub path: PathBuf,
    file: Arc<File>,
    /// The same disk opened with O_DIRECT for aligned writes that bypass the
    /// page cache; `None` where the file system does not support it.
    direct: Option<Arc<File>>,
    parts: Vec<gpt::Entry>,
}

/// Alignment (and size granularity) of O_DIRECT writes.
pub(crate) const DIRECT_ALIGN: usize = 4096;

/// A buffer whose start is `DIRECT_ALIGN`-aligned, for O_DIRECT I/O.
pub(crate) struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub(crate) fn new(capacity: usize) -> AlignedBuf {
        let raw = vec![0u8; capacity + DIRECT_ALIGN];
        let start = raw.as_ptr().align_offset(DIRECT_ALIGN);
        AlignedBuf {
            raw,
            start,
            len: capacity,
        }
    }
    pub(crate) fn capacity(&self) -> usize {
        self.raw.len() - DIRECT_ALIGN
    }
    /// Set the length (at most the capacity).
    pub(crate) fn set_len(&mut self, n: usize) {
        self.len = n.min(self.capacity());
    }
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// Whether an O_DIRECT transfer of `len` bytes at `off` is aligned.
pub(crate) fn direct_aligned(off: u64, len: usize) -> bool {
    off % DIRECT_ALIGN as u64 == 0 && len % DIRECT_ALIGN == 0
}

/// `path` opened again with O_DIRECT (for writing or reading), where the
/// file system supports it.
pub(crate) fn open_direct(path: &Path, write: bool) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    File::options()
        .read(!write)
        .write(write)
        .custom_flags(nix::libc::O_DIRECT)
        .open(path)
        .ok()
}

/// Read `buf.len()` bytes at `off` as the device holds them, not the page
/// cache: with O_DIRECT when `direct` is given and the range is aligned,
/// else after dropping the range from the cache.
pub(crate) fn read_device(
    file: &File,
    direct: Option<&File>,
    buf: &mut [u8],
    off: u64,
) -> std::io::Result<()> {
    if let Some(e) = super::fault::read_eio() {
        return Err(e);
    }
    if let Some(d) = direct
        .filter(|_| direct_aligned(off, buf.len()) && (buf.as_ptr() as usize) % DIRECT_ALIGN == 0)
    {
        match d.read_exact_at(buf, off) {
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {}
            r => return r,
        }
    }
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    use std::os::fd::AsRawFd as _;
    let _ = posix_fadvise(
        file.as_raw_fd(),
        off as i64,
        buf.len() as i64,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
    file.read_exact_at(buf, off)
}

impl Disk {
    pub fn open(path: &Path, writable: bool) -> Result<Disk, Error> {
        let file = File::options()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| Error::io("open disk", path, e))?;
        let mut primary = vec![0u8; (gpt::first_usable() * gpt::SECTOR) as usize];
        file.read_exact_at(&mut primary, 0)
            .map_err(|e| Error::io("read partition table", path, e))?;
        // a damaged primary (a cut while the data partition was grown):
        // the backup at the disk's end, as firmware and the kernel read it
        let parts = gpt::parse(&primary)
            .or_else(|d| read_backup(&file).map_err(|b| format!("{d}; backup: {b}")))
            .map_err(|d| Error::Config {
                path: path.into(),
                detail: d,
            })?;
        let direct = if writable {
            use std::os::unix::fs::OpenOptionsExt as _;
            File::options()
                .write(true)
                .custom_flags(nix::libc::O_DIRECT)
                .open(path)
                .ok()
                .map(Arc::new)
        } else {
            None
        };
        Ok(Disk {
            path: path.into(),
            file: Arc::new(file),
            direct,
            parts,
        })
    }

    /// The partition table as read (primary, or the backup if the primary is damaged).
    pub(crate) fn entries(&self) -> &[gpt::Entry] {
        &self.parts
    }

    pub fn partition(&self, name: &str) -> Result<&gpt::Entry, Error> {
        self.parts
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::Config {
                path: self.path.clone(),
                detail: format!("disk has no partition named {name:?}"),
            })
    }

    pub(crate) fn window(&self, name: &str) -> Result<PartIo, Error> {
        let p = self.partition(name)?;
        Ok(PartIo {
            file: self.file.clone(),
            start: p.offset(),
            len: p.len(),
            pos: 0,
            block: Vec::new(),
            block_at: 0,
        })
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    pub(crate) fn read_at(&self, buf: &mut [u8], off: u64) -> Result<(), Error> {
        self.file
            .read_exact_at(buf, off)
            .map_err(|e| Error::io("read", &self.path, e))
    }

    pub(crate) fn write_at(&self, buf: &[u8], off: u64) -> Result<(), Error> {
        super::fault::point("disk write");
        if let Some(e) = super::fault::eio() {
            return Err(Error::io("write", &self.path, e));
        }
        let bad = super::fault::corrupt(buf);
        self.file
            .write_all_at(bad.as_deref().unwrap_or(buf), off)
            .map_err(|e| Error::io("write", &self.path, e))
    }

    /// Write `buf` with O_DIRECT when it can (aligned offset, length and
    /// address, supported file system), else through the page cache.
    pub(crate) fn write_direct_at(&self, buf: &[u8], off: u64) -> Result<(), Error> {
        let aligned = off % DIRECT_ALIGN as u64 == 0
            && buf.len() % DIRECT_ALIGN == 0
            && (buf.as_ptr() as usize) % DIRECT_ALIGN == 0;
        let Some(d) = self.direct.as_ref().filter(|_| aligned) else {
            return self.write_at(buf, off);
        };
        super::fault::point("disk write");
        if let Some(e) = super::fault::eio() {
            return Err(Error::io("write", &self.path, e));
        }
        if let Some(bad) = super::fault::corrupt(buf) {
            return self
                .file
                .write_all_at(&bad, off)
                .map_err(|e| Error::io("write", &self.path, e));
        }
        match d.write_all_at(buf, off) {
            Ok(()) => Ok(()),
            // a device with larger sectors than we align to: the page cache it is
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => self
                .file
                .write_all_at(buf, off)
                .map_err(|e| Error::io("write", &self.path, e)),
            Err(e) => Err(Error::io("write", &self.path, e)),
        }
    }

    pub(crate) fn sync(&self) -> Result<(), Error> {
        super::fault::point("disk sync");
        self.file
            .sync_data()
            .map_err(|e| Error::io("sync", &self.path, e))
    }
}

/// The size in 512-byte sectors of a disk (block device or image file).
pub(crate) fn sectors(file: &File) -> std::io::Result<u64> {
    use std::io::Seek as _;
    let mut f = file;
    Ok(f.seek(SeekFrom::End(0))? / gpt::SECTOR)
}

/// The backup GPT's partitions.
fn read_backup(file: &File) -> Result<Vec<gpt::Entry>, String> {
    let n = sectors(file).map_err(|e| e.to_string())?;
    let tail = gpt::reserved_tail();
    if n <= tail {
        return Err("disk too small".into());
    }
    let mut buf = vec![0u8; (tail * gpt::SECTOR) as usize];
    file.read_exact_at(&mut buf, (n - tail) * gpt::SECTOR)
        .map_err(|e| e.to_string())?;
    gpt::parse_backup(&buf, n)
}

/// Read/Write/Seek confined to one partition (used by the FAT code). The
/// FAT code reads a sector or a cluster at a time, and a FAT entry a few
/// bytes at a time: reads are served from one cached 64 KiB block, so the
/// boot env (256 KiB, two copies) costs a few reads, not thousands. Writes go
/// straight to the file (nothing is held back from a sync) and update the
/// cached bytes they overlap.
#[derive(Debug)]
pub(crate) struct PartIo {
    file: Arc<File>,
    start: u64,
    len: u64,
    pos: u64,
    /// Cached bytes at partition offset `block_at` (empty: none).
    block: Vec<u8>,
    block_at: u64,
}

/// The read cache's block size.
const PART_BLOCK: u64 = 64 << 10;

impl Read for PartIo {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        if n == 0 {
            return Ok(0);
        }
        let cached =
            self.pos >= self.block_at && self.pos < self.block_at + self.block.len() as u64;
        if !cached {
            let at = self.pos - self.pos % PART_BLOCK;
            let want = PART_BLOCK.min(self.len - at) as usize;
            self.block.resize(want, 0);
            let mut got = 0;
            while got < want {
                match self
                    .file
                    .read_at(&mut self.block[got..], self.start + at + got as u64)
                {
                    Ok(0) => break,
                    Ok(k) => got += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.block.clear();
                        return Err(e);
                    }
                }
            }
            self.block.truncate(got);
            self.block_at = at;
            if self.pos >= at + got as u64 {
                return Ok(0); // the file ends early (a short image)
            }
        }
        let from = (self.pos - self.block_at) as usize;
        let k = n.min(self.block.len() - from);
        buf[..k].copy_from_slice(&self.block[from..from + k]);
        self.pos += k as u64;
        Ok(k)
    }
}

impl Write for PartIo {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        if n == 0 && !buf.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        let k = self.file.write_at(&buf[..n], self.start + self.pos)?;
        // keep the cached block what the file now holds
        let (w0, w1) = (self.pos, self.pos + k as u64);
        let (b0, b1) = (self.block_at, self.block_at + self.block.len() as u64);
        if w0 < b1 && b0 < w1 {
            let (lo, hi) = (w0.max(b0), w1.min(b1));
            self.block[(lo - b0) as usize..(hi - b0) as usize]
                .copy_from_slice(&buf[(lo - w0) as usize..(hi - w0) as usize]);
        }
        self.pos += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for PartIo {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let new = match to {
            SeekFrom::Start(o) => Some(o),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) if p <= self.len => {
                self.pos = p;
                Ok(p)
            }
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
        }
    }
}

/// Read a whole file from a FAT partition (`dir/name` paths allowed).
pub(crate) fn fat_read(part: PartIo, path: &str) -> std::io::Result<Option<Vec<u8>>> {
    let fs = fatfs::FileSystem::new(part, fatfs::FsOptions::new())?;
    let res = match fs.root_dir().open_file(path) {
        Ok(mut f) => {
            let mut v = Vec::new();
            f.read_to_end(&mut v)?;
            Some(v)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    fs.unmount()?;
    Ok(res)
}

/// Write a whole file on a FAT partition, creating parent directories. An
/// existing file of the same length is rewritten in place (same clusters).
pub(crate) fn fat_write(part: PartIo, path: &str, data: &[u8]) -> std::io::Result<()> {
    super::fault::point("boot file write");
    let fs = fatfs::FileSystem::new(part, fatfs::FsOptions::new())?;
    {
        let root = fs.root_dir();
        let mut dir = root.clone();
        let mut comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let name = comps.pop().unwrap_or(path);
        for c in comps {
            dir = match dir.open_dir(c) {
                Ok(d) => d,
                Err(_) => dir.create_dir(c)?,
            };
        }
        let mut f = dir.create_file(name)?;
        f.write_all(data)?;
        f.truncate()?;
        f.flush()?;
    }
    fs.unmount()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cached reads always return what the partition holds: random
    /// reads, writes and seeks against a model of its bytes, with the
    /// partition's edges and the cache block's edges crossed often.
    #[test]
    fn partition_io_reads_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let (start, len) = (4096u64, 3 * PART_BLOCK + 1000);
        let mut model = vec![0u8; len as usize];
        std::fs::write(&path, vec![0u8; (start + len + 4096) as usize]).unwrap();
        let file = Arc::new(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap(),
        );
        let mut io = PartIo {
            file: file.clone(),
            start,
            len,
            pos: 0,
            block: Vec::new(),
            block_at: 0,
        };
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for step in 0..3000 {
            let at = rnd(len + 10);
            let n = [1, 4, 512, 2048, 70_000][rnd(5) as usize] as usize;
            if io.seek(SeekFrom::Start(at)).is_err() {
                assert!(at > len);
                continue;
            }
            if rnd(3) == 0 {
                let data: Vec<u8> = (0..n).map(|i| (step + i) as u8 | 1).collect();
                let k = match io.write(&data) {
                    Ok(k) => k,
                    Err(_) => {
                        assert_eq!(at, len, "only a write at the end fails");
                        continue;
                    }
                };
                assert_eq!(k as u64, (n as u64).min(len - at));
                model[at as usize..at as usize + k].copy_from_slice(&data[..k]);
            } else {
                let mut buf = vec![0u8; n];
                let mut got = 0;
                while got < n {
                    let k = io.read(&mut buf[got..]).unwrap();
                    if k == 0 {
                        break;
                    }
                    got += k;
                }
                assert_eq!(got as u64, (n as u64).min(len - at), "step {step}");
                assert_eq!(
                    &buf[..got],
                    &model[at as usize..at as usize + got],
                    "step {step}"
                );
            }
        }
        // and the file outside the partition was never touched
        let all = std::fs::read(&path).unwrap();
        assert!(all[..start as usize].iter().all(|&b| b == 0));
        assert!(all[(start + len) as usize..].iter().all(|&b| b == 0));
        assert_eq!(&all[start as usize..(start + len) as usize], &model[..]);
    }
}
