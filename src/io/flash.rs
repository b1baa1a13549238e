//! `ferry flash` (host only): write a disk image (raw or `.img.zst`) to a
//! block device or file, skipping holes and all-zero blocks as bmaptool
//! does, on two threads (read + zero detection, write + hashing), then read
//! the written ranges back from the device (not the page cache) and compare.
//! Refuses a mounted target, the disk the host boots from, and a target
//! smaller than the image.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::mpsc::{channel, sync_channel};

use sha2::{Digest as _, Sha256};

use super::bmap;
use super::disk::AlignedBuf;
use crate::error::Error;

const BLOCK: usize = 1 << 20;

#[derive(Debug, Default, Clone)]
pub(crate) struct Report {
    pub image_size: u64,
    pub written: u64,
    pub skipped: u64,
    pub verified: bool,
}

mod target;
pub(crate) use target::check_target;
use target::open_exclusive;
pub use target::{inspect_target, mounts_on, Target};

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

/// Read-back windows: sync, then hand this many written bytes to the
/// read-back thread, which runs one window behind the writes.
const WINDOW: u64 = 16 << 20;

/// Buffers in flight between the reader and the writer.
const POOL: usize = 6;

/// One block for the writer: where it goes and its bytes.
type Block = (u64, AlignedBuf);

/// Reads the image and sends the blocks to write: a bmap's mapped ranges
/// (each checked against its checksum), or the data ranges of a raw image
/// (holes skipped; all-zero blocks too when the target is a fresh file),
/// or every block of a compressed one. Returns the image's length.
struct Reader<'a> {
    image: &'a Path,
    tx: std::sync::mpsc::SyncSender<Block>,
    free: std::sync::mpsc::Receiver<AlignedBuf>,
    free_back: std::sync::mpsc::Sender<AlignedBuf>,
    skip_zeros: bool,
}

/// The reader stops early (Ok) when the writer has gone away.
enum Sent {
    Go,
    Stop,
}

impl Reader<'_> {
    fn buffer(&self) -> Option<AlignedBuf> {
        self.free.recv().ok()
    }

    fn send(&self, off: u64, buf: AlignedBuf) -> Sent {
        if self.skip_zeros && is_zero(buf.as_slice()) {
            return match self.free_back.send(buf) {
                Ok(()) => Sent::Go,
                Err(_) => Sent::Stop,
            };
        }
        match self.tx.send((off, buf)) {
            Ok(()) => Sent::Go,
            Err(_) => Sent::Stop,
        }
    }

    fn run(self, src: Src, map: Option<&bmap::Bmap>) -> Result<u64, Error> {
        match (src, map) {
            (Src::Raw { f, len, .. }, Some(m)) => {
                self.mapped(m, |buf, off| {
                    f.read_exact_at(buf, off)
                        .map_err(|e| Error::io("read image", self.image, e))
                })?;
                Ok(len)
            }
            (Src::Zst { mut d, .. }, Some(m)) => {
                let mut pos = 0u64;
                let mut scratch = vec![0u8; 64 << 10];
                self.mapped(m, |buf, off| {
                    // skip to `off`, then read exactly this piece
                    while pos < off {
                        let n = ((off - pos) as usize).min(scratch.len());
                        d.read_exact(&mut scratch[..n])
                            .map_err(|e| Error::io("decompress image", self.image, e))?;
                        pos += n as u64;
                    }
                    d.read_exact(buf)
                        .map_err(|e| Error::io("decompress image", self.image, e))?;
                    pos += buf.len() as u64;
                    Ok(())
                })?;
                // the rest of the image only counts towards its length
                let rest = std::io::copy(&mut d, &mut std::io::sink())
                    .map_err(|e| Error::io("decompress image", self.image, e))?;
                Ok(pos + rest)
            }
            (Src::Raw { f, ranges, len }, None) => {
                // canonical, non-overlapping BLOCK-aligned blocks touching data
                let mut next = 0u64;
                for (start, end) in ranges {
                    let mut off = (start - start % BLOCK as u64).max(next);
                    while off < end.min(len) {
                        let Some(mut buf) = self.buffer() else {
                            return Ok(len);
                        };
                        let n = ((len - off) as usize).min(BLOCK);
                        buf.set_len(n);
                        f.read_exact_at(buf.as_mut_slice(), off)
                            .map_err(|e| Error::io("read image", self.image, e))?;
                        if let Sent::Stop = self.send(off, buf) {
                            return Ok(len);
                        }
                        off += n as u64;
                        next = off;
                    }
                }
                Ok(len)
            }
            (Src::Zst { mut d, .. }, None) => {
                let mut off = 0u64;
                loop {
                    let Some(mut buf) = self.buffer() else {
                        return Ok(off);
                    };
                    buf.set_len(BLOCK);
                    let n = crate::bundle::writer::read_full(&mut d, buf.as_mut_slice())
                        .map_err(|e| Error::io("decompress image", self.image, e))?;
                    if n == 0 {
                        return Ok(off);
                    }
                    buf.set_len(n);
                    if let Sent::Stop = self.send(off, buf) {
                        return Ok(off);
                    }
                    off += n as u64;
                }
            }
        }
    }

    /// Send every mapped range in pieces of at most BLOCK, checking each
    /// range against its checksum once it is read.
    fn mapped(
        &self,
        m: &bmap::Bmap,
        mut read: impl FnMut(&mut [u8], u64) -> Result<(), Error>,
    ) -> Result<(), Error> {
        for r in &m.ranges {
            let mut h = Sha256::new();
            let mut off = r.start;
            while off < r.end {
                let Some(mut buf) = self.buffer() else {
                    return Ok(());
                };
                buf.set_len(((r.end - off) as usize).min(BLOCK));
                read(buf.as_mut_slice(), off)?;
                h.update(buf.as_slice());
                let n = buf.as_slice().len() as u64;
                // a mapped range is written whatever it holds (never skipped)
                if self.tx.send((off, buf)).is_err() {
                    return Ok(());
                }
                off += n;
            }
            if let Some(want) = r.sha256 {
                let got = crate::bundle::Sha256Digest(h.finalize().into());
                if got != want {
                    return Err(Error::Usage(format!(
                        "{} does not match its bmap: bytes {}..{} have checksum {got}, the bmap says {want}",
                        self.image.display(),
                        r.start,
                        r.end
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Hashes synced windows of written blocks as the device returns them,
/// one window behind the writes.
struct ReadBack {
    tx: std::sync::mpsc::SyncSender<Vec<(u64, u64)>>,
    handle: std::thread::JoinHandle<Result<[u8; 32], Error>>,
}

impl ReadBack {
    fn start(out: &File, target: &Path) -> Result<ReadBack, Error> {
        let file = out
            .try_clone()
            .map_err(|e| Error::io("open target", target, e))?;
        let direct = super::disk::open_direct(target, false);
        let target = target.to_path_buf();
        let (tx, rx) = sync_channel::<Vec<(u64, u64)>>(2);
        let handle = std::thread::spawn(move || {
            let mut h = Sha256::new();
            let mut buf = AlignedBuf::new(BLOCK);
            for window in rx.iter() {
                for (off, len) in window {
                    buf.set_len(len as usize);
                    super::disk::read_device(&file, direct.as_ref(), buf.as_mut_slice(), off)
                        .map_err(|e| Error::io("read back", &target, e))?;
                    h.update(off.to_le_bytes());
                    h.update(buf.as_slice());
                }
            }
            Ok(h.finalize().into())
        });
        Ok(ReadBack { tx, handle })
    }

    fn send(&self, window: Vec<(u64, u64)>) {
        // a closed channel means the read-back failed; `finish` says why
        let _ = self.tx.send(window);
    }

    fn finish(self) -> Result<[u8; 32], Error> {
        drop(self.tx);
        self.handle
            .join()
            .map_err(|_| Error::Internal("read-back thread failed".into()))?
    }
}

/// Flash `image` to `target`: the reader thread reads (and checks against
/// the bmap, if one is given), this thread writes with O_DIRECT where it
/// can and syncs every `WINDOW`, and the read-back thread reads each synced
/// window back from the device while the next is written.
pub(crate) fn flash(
    image: &Path,
    target: &Path,
    map: Option<&Path>,
    verify: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<Report, Error> {
    let t = inspect_target(target)?;
    let map = match map {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io("read bmap", p, e))?;
            Some(bmap::parse(&text).map_err(|d| Error::Config {
                path: p.into(),
                detail: d,
            })?)
        }
        None => None,
    };
    let src = open_source(image)?;
    let image_len = match &src {
        Src::Raw { len, .. } => Some(*len),
        // a frame header's content size covers one frame only (and may be
        // absent): measure the whole image before the first write
        Src::Zst { .. } if t.block || map.is_some() => Some(zst_len(image)?),
        Src::Zst { len, .. } => *len,
    };
    if let (Some(m), Some(len)) = (&map, image_len) {
        if m.image_size != len {
            return Err(Error::Usage(format!(
                "the bmap describes an image of {} bytes, {} holds {len}",
                m.image_size,
                image.display()
            )));
        }
    }
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
    if !t.block {
        // a file target ends up exactly the image: skipped blocks become holes
        out.set_len(0)
            .map_err(|e| Error::io("truncate target", target, e))?;
    }
    // a second descriptor that bypasses the page cache (our exclusive
    // open keeps everything else off the device meanwhile)
    let direct = super::disk::open_direct(target, true);
    let (tx, rx) = sync_channel::<Block>(POOL - 2);
    let (free_tx, free_rx) = channel::<AlignedBuf>();
    for _ in 0..POOL {
        let _ = free_tx.send(AlignedBuf::new(BLOCK));
    }
    let reader = Reader {
        image,
        tx,
        free: free_rx,
        free_back: free_tx.clone(),
        // only a file target starts out as zeros: on a device every block
        // the image defines is written, zeros included
        skip_zeros: !t.block && map.is_none(),
    };
    let readback = if verify {
        Some(ReadBack::start(&out, target)?)
    } else {
        None
    };
    let mut report = Report::default();
    let (total, digest, written) = std::thread::scope(|s| -> Result<_, Error> {
        let map = map.as_ref();
        let reading = s.spawn(move || reader.run(src, map));
        let mut h = Sha256::new();
        let mut window: Vec<(u64, u64)> = Vec::new();
        let (mut in_window, mut written) = (0u64, 0u64);
        let mut werr = None;
        for (off, buf) in rx.iter() {
            let data = buf.as_slice();
            if let Some(size) = t.size {
                if off + data.len() as u64 > size {
                    werr = Some(Error::Usage(format!(
                        "image is larger than {} ({size} bytes)",
                        target.display()
                    )));
                    break;
                }
            }
            if let Err(e) = write_block(&out, direct.as_ref(), data, off) {
                werr = Some(Error::io("write", target, e));
                break;
            }
            h.update(off.to_le_bytes());
            h.update(data);
            window.push((off, data.len() as u64));
            in_window += data.len() as u64;
            written += data.len() as u64;
            progress(data.len() as u64);
            let _ = free_tx.send(buf);
            if let Some(rb) = &readback {
                if in_window >= WINDOW {
                    if let Err(e) = out.sync_data() {
                        werr = Some(Error::io("sync", target, e));
                        break;
                    }
                    rb.send(std::mem::take(&mut window));
                    in_window = 0;
                }
            }
        }
        drop(rx);
        drop(free_tx);
        let total = reading
            .join()
            .map_err(|_| Error::Internal("image reader thread failed".into()))??;
        if let Some(e) = werr {
            return Err(e);
        }
        if let Some(rb) = &readback {
            rb.send(window);
        }
        Ok((total, h.finalize(), written))
    })?;
    report.image_size = total;
    report.written = written;
    report.skipped = total.saturating_sub(written);
    if !t.block {
        let cur = out.metadata().map(|m| m.len()).unwrap_or(0);
        if cur < total {
            out.set_len(total)
                .map_err(|e| Error::io("extend target", target, e))?;
        }
    }
    out.sync_all().map_err(|e| Error::io("sync", target, e))?;
    if let Some(rb) = readback {
        let got = rb.finish()?;
        if got[..] != digest[..] {
            return Err(Error::ReadBack {
                partition: target.display().to_string(),
                payload: image.display().to_string(),
            });
        }
        report.verified = true;
    }
    Ok(report)
}

/// One block: O_DIRECT when aligned and supported, else through the cache
/// (the test hook that corrupts writes always goes through the cache).
fn write_block(out: &File, direct: Option<&File>, data: &[u8], off: u64) -> std::io::Result<()> {
    if let Some(bad) = super::fault::corrupt(data) {
        return out.write_all_at(&bad, off);
    }
    if let Some(d) = direct.filter(|_| super::disk::direct_aligned(off, data.len())) {
        match d.write_all_at(data, off) {
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {}
            r => return r,
        }
    }
    out.write_all_at(data, off)
}
