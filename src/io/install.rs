//! `install`: stream an authenticated bundle into the inactive slot's
//! partitions and read every byte back from the device (not the page
//! cache) against the signed installed digest, and only then arm the
//! bootloader. The read-back runs on its own thread one synced window behind
//! the writes, so an install costs about max(write, read), not their sum. The
//! active slot is never opened for writing: every write goes through the
//! target slot's partition window.

use std::io::{Read, Seek, SeekFrom};

use sha2::{Digest as _, Sha256};
use tracing::{info, info_span};

use super::disk::{AlignedBuf, Disk};
use super::node::Node;
use crate::board::{Board, Slot};
use crate::bundle::reader::{self, chunk_offset, PayloadSink, Position, VerifiedBundle};
use crate::bundle::{Keyring, Payload, Sha256Digest};
use crate::error::Error;
use crate::update::engine::{Installed, SlotWriter};
use crate::update::machine::{Action, Progress};
use crate::update::policy::SlotLayout;

/// Sync, hand to the read-back, and persist the resume point once this many
/// bytes were written since the last time (at chunk boundaries, so at least
/// every chunk when chunks are larger). A link that drops every 20 MiB still
/// advances; 8 MiB keeps the record writes to ~128 per GiB.
pub(crate) const RESUME_BYTES: u64 = 8 << 20;

/// The smallest window near a payload's end.
const TAIL_BYTES: u64 = 1 << 20;

/// Whether to sync and hand a window to the read-back now, with `since`
/// bytes written since the last sync and `left` still to write in this
/// payload. Windows are `RESUME_BYTES`, and shrink (halving, down to
/// `TAIL_BYTES`) once the rest of the payload is no larger than the window
/// so far: what is read back after the payload's last write, when nothing
/// overlaps it any more, is one small window, not a whole one.
pub(crate) fn window_due(since: u64, left: u64) -> bool {
    since >= RESUME_BYTES || (left > 0 && since >= TAIL_BYTES && since >= left)
}

/// Reads synced ranges of one payload back from the device, in order, hashing.
/// Two threads: one reads (O_DIRECT has no readahead, so a lone thread would
/// leave the device idle while it hashes), one hashes; `READ_BUFS` buffers of
/// `READ_BUF` bytes pass between them, so the device read and SHA-256 overlap
/// and the read-back costs about max(read, hash), not their sum.
struct ReadBack {
    tx: std::sync::mpsc::SyncSender<(u64, u64)>,
    handle: std::thread::JoinHandle<Result<Sha256Digest, Error>>,
}

/// Read-back buffers in flight between the reader and the hasher, and their size.
const READ_BUFS: usize = 2;
const READ_BUF: usize = 512 << 10;

impl ReadBack {
    fn start(disk: &Disk, base: u64) -> ReadBack {
        use std::sync::mpsc::{channel, sync_channel};
        let (tx, rx) = sync_channel::<(u64, u64)>(64);
        let (full_tx, full_rx) = sync_channel::<Result<AlignedBuf, Error>>(READ_BUFS);
        let (free_tx, free_rx) = channel::<AlignedBuf>();
        for _ in 0..READ_BUFS {
            let _ = free_tx.send(AlignedBuf::new(READ_BUF));
        }
        let disk = disk.clone();
        // the reader stops when the writer is done (rx closed) or the hasher
        // is gone (it stopped at an error): its channels close
        let reader = std::thread::spawn(move || {
            let direct = super::disk::open_direct(&disk.path, false);
            for (off, len) in rx.iter() {
                let mut pos = 0u64;
                while pos < len {
                    let Ok(mut buf) = free_rx.recv() else {
                        return;
                    };
                    let n = ((len - pos) as usize).min(buf.capacity());
                    buf.set_len(n);
                    let at = base + off + pos;
                    let read = super::disk::read_device(
                        disk.file(),
                        direct.as_ref(),
                        buf.as_mut_slice(),
                        at,
                    )
                    .map(|()| buf)
                    .map_err(|e| Error::io("read back", &disk.path, e));
                    let failed = read.is_err();
                    if full_tx.send(read).is_err() || failed {
                        return;
                    }
                    pos += n as u64;
                }
            }
        });
        let handle = std::thread::spawn(move || {
            let mut h = Sha256::new();
            for read in full_rx.iter() {
                let buf = read?;
                h.update(buf.as_slice());
                let _ = free_tx.send(buf);
            }
            reader
                .join()
                .map_err(|_| Error::Usage("read-back reader thread failed".into()))?;
            Ok(Sha256Digest(h.finalize().into()))
        });
        ReadBack { tx, handle }
    }

    fn send(&self, off: u64, len: u64) {
        if len > 0 {
            // a closed channel means the reader failed; `finish` reports it
            let _ = self.tx.send((off, len));
        }
    }

    fn finish(self) -> Result<Sha256Digest, Error> {
        drop(self.tx);
        self.handle
            .join()
            .map_err(|_| Error::Usage("read-back thread failed".into()))?
    }
}

/// The partition of `slot` that receives payload target `target`.
fn target_partition<'b>(
    board: &'b Board,
    slot: Slot,
    target: &str,
) -> Result<&'b crate::board::Partition, Error> {
    board.slot_partition(slot, target).ok_or_else(|| {
        Error::Policy(crate::error::PolicyError::MissingTarget {
            target: target.to_string(),
        })
    })
}

/// Writes payloads into one slot's partitions.
pub(crate) struct SlotSink<'a> {
    pub disk: &'a Disk,
    pub board: &'a Board,
    pub slot: Slot,
    /// Called after chunks are durably written: (payload, next chunk).
    pub on_durable: Option<&'a mut dyn FnMut(usize, usize) -> Result<(), Error>>,
    pub progress: Option<Box<dyn FnMut(u64) + 'a>>,
    /// Don't write all-zero chunks (the target is known to be zeroes: a
    /// fresh sparse image). Read-back still checks them.
    pub skip_zeros: bool,
    range: (u64, u64),
    part: String,
    since_sync: u64,
    /// The position after the last chunk written (not necessarily synced).
    pub next: Position,
    readback: Option<ReadBack>,
    /// Aligned staging for O_DIRECT writes (one chunk plus alignment slack).
    staging: Vec<u8>,
    /// Payload bytes handed to the read-back so far, and written so far.
    verified_to: u64,
    written_to: u64,
    /// The current payload's installed size.
    size: u64,
}

impl<'a> SlotSink<'a> {
    pub(crate) fn new(disk: &'a Disk, board: &'a Board, slot: Slot) -> Self {
        SlotSink {
            disk,
            board,
            slot,
            on_durable: None,
            progress: None,
            range: (0, 0),
            part: String::new(),
            since_sync: 0,
            next: Position::default(),
            skip_zeros: false,
            readback: None,
            staging: Vec::new(),
            verified_to: 0,
            written_to: 0,
            size: 0,
        }
    }
}

impl PayloadSink for SlotSink<'_> {
    fn begin(&mut self, _index: usize, p: &Payload, resumed_at: usize) -> Result<(), Error> {
        let part = target_partition(self.board, self.slot, &p.target)?;
        let e = self.disk.partition(&part.name)?;
        if p.installed_size > e.len() {
            return Err(crate::error::PolicyError::TooLarge {
                payload: p.name.clone(),
                size: p.installed_size,
                partition: part.name.clone(),
                capacity: e.len(),
            }
            .into());
        }
        self.range = (e.offset(), e.len());
        self.part = part.name.clone();
        self.since_sync = 0;
        self.readback = Some(ReadBack::start(self.disk, e.offset()));
        self.verified_to = 0;
        self.written_to = 0;
        self.size = p.installed_size;
        info!(payload = %p.name, partition = %part.name, resumed_at, "writing payload");
        Ok(())
    }

    fn write(&mut self, index: usize, chunk: usize, offset: u64, data: &[u8]) -> Result<(), Error> {
        if offset + data.len() as u64 > self.range.1 {
            return Err(Error::Usage(format!(
                "write past the end of partition {}",
                self.part
            )));
        }
        if self.written_to == 0 && offset > 0 {
            // resumed: what came before was synced before the resume point was saved
            if let Some(r) = &self.readback {
                r.send(0, offset);
            }
            self.verified_to = offset;
        }
        if !(self.skip_zeros && data.iter().all(|&b| b == 0)) {
            // O_DIRECT from an aligned staging copy: the page cache would
            // halve the write speed, and the read-back must see the device
            let n = data.len();
            if (data.as_ptr() as usize) % super::disk::DIRECT_ALIGN == 0 {
                // the pipeline decodes into aligned buffers: no copy
                // (write_direct_at falls back to a plain write when the
                // length or offset is not aligned)
                self.disk.write_direct_at(data, self.range.0 + offset)?;
            } else if n % super::disk::DIRECT_ALIGN == 0 && n <= (1 << 24) {
                if self.staging.len() < n + super::disk::DIRECT_ALIGN {
                    self.staging = vec![0u8; n + super::disk::DIRECT_ALIGN];
                }
                let a = self
                    .staging
                    .as_ptr()
                    .align_offset(super::disk::DIRECT_ALIGN);
                let buf = &mut self.staging[a..a + n];
                buf.copy_from_slice(data);
                self.disk.write_direct_at(buf, self.range.0 + offset)?;
            } else {
                self.disk.write_at(data, self.range.0 + offset)?;
            }
        }
        self.written_to = offset + data.len() as u64;
        self.next = Position {
            payload: index,
            chunk: chunk + 1,
        };
        if let Some(p) = self.progress.as_mut() {
            p(data.len() as u64);
        }
        self.since_sync += data.len() as u64;
        if window_due(self.since_sync, self.size.saturating_sub(self.written_to)) {
            self.since_sync = 0;
            self.disk.sync()?;
            if let Some(r) = &self.readback {
                r.send(self.verified_to, self.written_to - self.verified_to);
            }
            self.verified_to = self.written_to;
            if let Some(cb) = self.on_durable.as_mut() {
                cb(index, chunk + 1)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self, index: usize, p: &Payload) -> Result<(), Error> {
        self.disk.sync()?;
        let r = self
            .readback
            .take()
            .ok_or_else(|| Error::Usage("payload finished before it began".into()))?;
        r.send(
            self.verified_to,
            p.installed_size.saturating_sub(self.verified_to),
        );
        let got = r.finish()?;
        if got != p.installed_sha256 {
            return Err(Error::ReadBack {
                partition: self.part.clone(),
                payload: p.name.clone(),
            });
        }
        info!(payload = %p.name, partition = %self.part, "payload written and read back");
        self.next = Position {
            payload: index + 1,
            chunk: 0,
        };
        if let Some(cb) = self.on_durable.as_mut() {
            cb(index + 1, 0)?;
        }
        Ok(())
    }
}

// decoded chunks arrive aligned for O_DIRECT
const _: () = assert!(crate::bundle::reader::OUT_ALIGN % super::disk::DIRECT_ALIGN == 0);

/// SHA-256 of `len` bytes at `off`, read from the device (not the page
/// cache: O_DIRECT where the range and the file system allow it), by the
/// same reader and hasher as an install's read-back.
pub fn read_back(disk: &Disk, off: u64, len: u64) -> Result<Sha256Digest, Error> {
    let r = ReadBack::start(disk, off);
    r.send(0, len);
    r.finish()
}

/// A bundle's bytes from any offset: a file, a block device, a URL. The
/// one install path (`install`) opens it once for the header and again at
/// the first chunk not yet written after a transient fault.
pub(crate) trait BundleSource {
    /// For logs and errors (credentials redacted).
    fn name(&self) -> String;
    /// A reader positioned at `offset`.
    fn open_at(&mut self, offset: u64) -> Result<Box<dyn Read + Send>, Error>;
    /// Whether the bundle must end with its last payload (a regular file)
    /// or may be followed by other bytes (a block device).
    fn expect_eof(&self) -> bool;
    /// Whether a fault while reading it may heal on a later attempt (a
    /// network); a file's faults are final.
    fn transient(&self, e: &Error) -> bool {
        let _ = e;
        false
    }
    /// How many attempts a transient fault gets, and the first back-off.
    fn retry(&self) -> (u32, std::time::Duration) {
        (1, std::time::Duration::ZERO)
    }
}

/// The pause before the next attempt (`crate::backoff`, capped at a
/// minute), with the server's `Retry-After` when it gave one.
fn pause_before_retry(e: &Error, b: &mut crate::backoff::Backoff) -> std::time::Duration {
    b.pause(match e {
        Error::Throttled { after_s, .. } => Some(std::time::Duration::from_secs(*after_s)),
        _ => None,
    })
}

/// A local bundle file or block device.
pub(crate) struct FileSource {
    path: std::path::PathBuf,
    is_file: bool,
}

impl FileSource {
    pub(crate) fn new(path: &std::path::Path) -> Result<FileSource, Error> {
        let m = std::fs::metadata(path).map_err(|e| Error::io("open bundle", path, e))?;
        Ok(FileSource {
            path: path.into(),
            is_file: m.is_file(),
        })
    }
}

impl BundleSource for FileSource {
    fn name(&self) -> String {
        self.path.display().to_string()
    }
    fn open_at(&mut self, offset: u64) -> Result<Box<dyn Read + Send>, Error> {
        let mut f =
            std::fs::File::open(&self.path).map_err(|e| Error::io("open bundle", &self.path, e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io("seek bundle", &self.path, e))?;
        // small: chunk reads are larger and bypass it; only the header and
        // manifest are read in pieces
        Ok(Box::new(std::io::BufReader::with_capacity(64 << 10, f)))
    }
    fn expect_eof(&self) -> bool {
        self.is_file
    }
}

/// Streams an opened bundle from its source into the target slot: the
/// engine's [`SlotWriter`] on a real disk.
pub(crate) struct StreamWriter<'a> {
    disk: &'a Disk,
    board: &'a Board,
    slot: Slot,
    bundle: &'a VerifiedBundle,
    src: &'a mut dyn BundleSource,
    /// The reader left just after the header by `open`, if still unused.
    first: Option<Box<dyn Read + Send>>,
    progress: Option<Box<dyn FnMut(u64) + 'a>>,
}

impl StreamWriter<'_> {
    /// One pass from `pos` until the source ends or fails; `pos` follows
    /// the chunks written.
    fn attempt(
        &mut self,
        pos: &mut Position,
        attempt: u32,
        durable: &mut dyn FnMut(Progress) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let rd = match self.first.take() {
            Some(r) if *pos == Position::default() => r,
            _ => self.src.open_at(chunk_offset(self.bundle, *pos))?,
        };
        info!(
            attempt,
            payload = pos.payload,
            chunk = pos.chunk,
            "streaming payloads"
        );
        let mut on_durable = |payload: usize, chunk: usize| durable(Progress { payload, chunk });
        let progress = &mut self.progress;
        let mut sink = SlotSink::new(self.disk, self.board, self.slot);
        sink.next = *pos;
        sink.on_durable = Some(&mut on_durable);
        sink.progress = Some(Box::new(move |n| {
            if let Some(p) = progress.as_mut() {
                p(n)
            }
        }));
        let r = reader::stream(rd, self.bundle, *pos, self.src.expect_eof(), &mut sink);
        *pos = sink.next;
        r
    }
}

impl SlotWriter for StreamWriter<'_> {
    fn write(
        &mut self,
        from: Progress,
        durable: &mut dyn FnMut(Progress) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let (attempts, first) = self.src.retry();
        let mut delay = crate::backoff::Backoff::new(first, std::time::Duration::from_secs(60));
        let mut pos = Position {
            payload: from.payload,
            chunk: from.chunk,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = self.attempt(&mut pos, attempt, durable);
            match r {
                Ok(()) => return Ok(()),
                Err(e) if self.src.transient(&e) && attempt < attempts => {
                    let wait = pause_before_retry(&e, &mut delay);
                    tracing::warn!(attempt, error = %e, delay_ms = wait.as_millis() as u64, "bundle source interrupted; will resume");
                    std::thread::sleep(wait);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn verify(&mut self, index: usize) -> Result<(), Error> {
        let p = self
            .bundle
            .manifest
            .payloads
            .get(index)
            .ok_or_else(|| Error::Internal(format!("no payload {index} to verify")))?;
        let part = target_partition(self.board, self.slot, &p.target)?;
        let e = self.disk.partition(&part.name)?;
        if read_back(self.disk, e.offset(), p.installed_size)? != p.installed_sha256 {
            return Err(Error::ReadBack {
                partition: part.name.clone(),
                payload: p.name.clone(),
            });
        }
        info!(payload = %p.name, partition = %part.name, "payload from an earlier run read back");
        Ok(())
    }

    fn resumable(&self, e: &Error) -> bool {
        self.src.transient(e)
    }
}

/// Open a bundle's header from `src`, verifying its signatures (and its
/// manifest digest against `pin`, when a feed names it), retrying
/// transient faults as the source allows.
fn open_verified(
    src: &mut dyn BundleSource,
    keyring: &Keyring,
    pin: Option<Sha256Digest>,
) -> Result<(VerifiedBundle, Box<dyn Read + Send>), Error> {
    let (attempts, first) = src.retry();
    let mut delay = crate::backoff::Backoff::new(first, std::time::Duration::from_secs(60));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let r = src
            .open_at(0)
            .and_then(|mut rd| reader::open_verified(&mut rd, keyring).map(|b| (b, rd)));
        match r {
            Ok((b, rd)) => {
                if pin.is_some_and(|p| p != b.manifest_digest) {
                    return Err(crate::feed::FeedError::Malformed(format!(
                        "bundle at {} is not the one the feed lists (manifest digest differs)",
                        src.name()
                    ))
                    .into());
                }
                return Ok((b, rd));
            }
            Err(e) if src.transient(&e) && attempt < attempts => {
                let wait = pause_before_retry(&e, &mut delay);
                tracing::warn!(attempt, error = %e, delay_ms = wait.as_millis() as u64, "bundle header interrupted; will retry");
                std::thread::sleep(wait);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Install the bundle from `src` into the inactive slot: the one install
/// path for files, block devices and URLs (see `update::engine::install`).
pub(crate) fn install(
    node: &mut Node,
    src: &mut dyn BundleSource,
    keyring: &Keyring,
    pin: Option<Sha256Digest>,
    progress: Option<Box<dyn FnMut(u64)>>,
) -> Result<Installed, Error> {
    let target = node.eng.booted.other();
    let span = info_span!("install", bundle = %src.name(), slot = %target);
    let _g = span.enter();
    let (b, first) = open_verified(src, keyring, pin)?;
    let cand = b.candidate();
    let layout = SlotLayout::of(&node.board, target);
    let mut w = StreamWriter {
        disk: &node.disk,
        board: &node.board,
        slot: target,
        bundle: &b,
        src,
        first: Some(first),
        progress,
    };
    node.eng.install(&cand, &layout, &mut w)
}

/// Whether the actions ask for a reboot.
pub(crate) fn wants_reboot(actions: &[Action]) -> bool {
    actions.contains(&Action::Reboot)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The windows a payload of `size` written in `chunk`-byte chunks is
    /// synced and read back in; the last one is read after the last write.
    fn windows(size: u64, chunk: u64) -> Vec<u64> {
        let (mut out, mut since, mut written) = (Vec::new(), 0, 0);
        while written < size {
            let n = chunk.min(size - written);
            written += n;
            since += n;
            if window_due(since, size - written) {
                out.push(since);
                since = 0;
            }
        }
        if since > 0 {
            out.push(since);
        }
        out
    }

    #[test]
    fn windows_cover_the_payload_and_the_tail_is_small() {
        for chunk in [64 << 10, 256 << 10, 1 << 20, 4 << 20] {
            for size in (1..=160u64).map(|k| k * (256 << 10) + 4096) {
                let w = windows(size, chunk);
                assert_eq!(w.iter().sum::<u64>(), size, "{size} {chunk}");
                assert!(w.iter().all(|&x| x < RESUME_BYTES + chunk), "{w:?}");
                let last = *w.last().unwrap();
                assert!(
                    last <= TAIL_BYTES.max(chunk),
                    "size {size} chunk {chunk}: {w:?}"
                );
                // shrinking costs few extra syncs: at most a halving series
                let full = size.div_ceil(RESUME_BYTES);
                assert!(w.len() as u64 <= full + 4, "{size} {chunk}: {w:?}");
            }
        }
        // 20 MiB: halving once the rest is no larger than the window so far
        assert_eq!(
            windows(20 << 20, 1 << 20),
            [8 << 20, 6 << 20, 3 << 20, 2 << 20, 1 << 20]
        );
    }
}
