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

use super::disk::Disk;
use super::node::Node;
use crate::board::{Board, Slot};
use crate::bundle::reader::{self, chunk_offset, OpenedBundle, PayloadSink, Position};
use crate::bundle::{Keyring, Payload, Sha256Digest};
use crate::error::Error;
use crate::update::machine::{Action, Event, Release};
use crate::update::policy;

/// Sync, hand to the read-back, and persist the resume point every this many chunks.
const RESUME_EVERY: usize = 32;

/// Reads synced ranges of one payload back from the device, in order, hashing.
struct ReadBack {
    tx: std::sync::mpsc::SyncSender<(u64, u64)>,
    handle: std::thread::JoinHandle<Result<Sha256Digest, Error>>,
}

impl ReadBack {
    fn start(disk: &Disk, base: u64) -> ReadBack {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, u64)>(64);
        let disk = disk.clone();
        let handle = std::thread::spawn(move || {
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            for (off, len) in rx.iter() {
                hash_range(&disk, base + off, len, &mut h, &mut buf)?;
            }
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

/// Writes payloads into one slot's partitions.
pub struct SlotSink<'a> {
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
    since_sync: usize,
    /// The position after the last chunk written (not necessarily synced).
    pub next: Position,
    readback: Option<ReadBack>,
    /// Aligned staging for O_DIRECT writes (one chunk plus alignment slack).
    staging: Vec<u8>,
    /// Payload bytes handed to the read-back so far, and written so far.
    verified_to: u64,
    written_to: u64,
}

impl<'a> SlotSink<'a> {
    pub fn new(disk: &'a Disk, board: &'a Board, slot: Slot) -> Self {
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
        }
    }
}

impl PayloadSink for SlotSink<'_> {
    fn begin(&mut self, _index: usize, p: &Payload, resumed_at: usize) -> Result<(), Error> {
        let part = self
            .board
            .slot_partition(self.slot, &p.target)
            .ok_or_else(|| {
                Error::Policy(crate::error::PolicyError::MissingTarget {
                    target: p.target.clone(),
                })
            })?;
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
            if n % super::disk::DIRECT_ALIGN == 0 && n <= (1 << 24) {
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
        self.since_sync += 1;
        if self.since_sync >= RESUME_EVERY {
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

/// Hash `len` bytes at `off` as the device returns them, not the page cache:
/// the range was synced; drop it from the cache first.
fn hash_range(
    disk: &Disk,
    off: u64,
    len: u64,
    h: &mut Sha256,
    buf: &mut [u8],
) -> Result<(), Error> {
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::FileExt as _;
    let fd = disk.file().as_raw_fd();
    let _ = posix_fadvise(
        fd,
        off as i64,
        len as i64,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
    let mut pos = 0u64;
    while pos < len {
        let n = ((len - pos) as usize).min(buf.len());
        disk.file()
            .read_exact_at(&mut buf[..n], off + pos)
            .map_err(|e| Error::io("read back", &disk.path, e))?;
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(())
}

/// SHA-256 of `len` bytes at `off`, read from the device.
pub fn read_back(disk: &Disk, off: u64, len: u64) -> Result<Sha256Digest, Error> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    hash_range(disk, off, len, &mut h, &mut buf)?;
    Ok(Sha256Digest(h.finalize().into()))
}

/// Outcome of `install_file` for the caller: whether a reboot should follow.
#[derive(Debug)]
pub struct Installed {
    pub slot: Slot,
    pub version: semver::Version,
    pub resumed_from: Option<Position>,
}

/// Install a local bundle file into the inactive slot.
pub fn install_file(
    node: &mut Node,
    path: &std::path::Path,
    keyring: &Keyring,
    progress: Option<Box<dyn FnMut(u64)>>,
) -> Result<Installed, Error> {
    let target = node.booted.other();
    let span = info_span!("install", bundle = %path.display(), slot = %target);
    let _g = span.enter();
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("open bundle", path, e))?;
    let mut head = std::io::BufReader::new(&mut f);
    let b = reader::open(&mut head, Some(keyring))?;
    drop(head);
    check_policy(node, &b, target)?;
    let release = Release {
        version: b.manifest.version.clone(),
        digest: b.manifest_digest,
    };
    let start = resume_point(node, &b, target);
    node.apply(Event::InstallStarted {
        slot: target,
        booted: node.booted,
        release: release.clone(),
    })?;
    info!(version = %release.version, manifest = %release.digest, resume = ?start, "installing");
    f.seek(SeekFrom::Start(chunk_offset(&b, start.unwrap_or_default())))
        .map_err(|e| Error::io("seek bundle", path, e))?;
    // A regular file must end with the bundle; a block device (a pushed
    // bundle on a spare partition or disk) is longer than it.
    let is_file = f.metadata().map(|m| m.is_file()).unwrap_or(true);
    let src = std::io::BufReader::with_capacity(1 << 20, f);
    match write_slot(node, &b, src, start.unwrap_or_default(), is_file, progress).0 {
        Ok(()) => {}
        Err(e) => {
            // Record the failure; the slot stays out of the boot order.
            let _ = node.apply(Event::InstallFailed {
                reason: e.to_string(),
            });
            return Err(e);
        }
    }
    node.apply(Event::InstallFinished)?;
    Ok(Installed {
        slot: target,
        version: release.version,
        resumed_from: start,
    })
}

/// Refuse a bundle that is authentic but not for this device now.
pub fn check_policy(node: &Node, b: &OpenedBundle, target: Slot) -> Result<(), Error> {
    let installed = node.dev.slots[node.booted.index()]
        .release
        .as_ref()
        .map(|r| &r.version);
    policy::check(
        &b.manifest,
        &node.board,
        target,
        node.dev.floor.as_ref(),
        installed,
    )?;
    Ok(())
}

/// Where an interrupted install of the same bundle into the same slot left off.
pub fn resume_point(node: &Node, b: &OpenedBundle, target: Slot) -> Option<Position> {
    match (&node.dev.state, node.dev.resume) {
        (crate::update::machine::State::Installing { slot, release }, Some((payload, chunk)))
            if *slot == target
                && release.digest == b.manifest_digest
                && payload <= b.manifest.payloads.len() =>
        {
            Some(Position { payload, chunk })
        }
        _ => None,
    }
}

/// Stream `src` (positioned at `start`) into the target slot, persisting
/// resume points as chunks become durable. Also returns where writing got
/// to, so a caller can resume a dropped download in the same process.
pub fn write_slot<R: Read + Send>(
    node: &mut Node,
    b: &OpenedBundle,
    src: R,
    start: Position,
    expect_eof: bool,
    progress: Option<Box<dyn FnMut(u64)>>,
) -> (Result<(), Error>, Position) {
    let target = node.booted.other();
    let disk = node.disk.clone();
    let board = node.board.clone();
    let store = &node.store;
    let dev = &mut node.dev;
    let mut on_durable = |p: usize, c: usize| {
        dev.resume = Some((p, c));
        store.save(dev)
    };
    let mut sink = SlotSink::new(&disk, &board, target);
    sink.next = start;
    sink.on_durable = Some(&mut on_durable);
    sink.progress = progress;
    let r = reader::stream(src, b, start, expect_eof, &mut sink);
    (r, sink.next)
}

/// Whether the actions ask for a reboot.
pub fn wants_reboot(actions: &[Action]) -> bool {
    actions.contains(&Action::Reboot)
}
