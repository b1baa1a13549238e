//! `install`: stream an authenticated bundle into the inactive slot's
//! partitions, sync, drop the written range from the page cache, read it
//! back from the device hashing it, and only then arm the bootloader. The
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
use crate::error::{BundleError, Error};
use crate::update::machine::{Action, Event, Release};
use crate::update::policy;

/// Persist the resume point every this many chunks.
const RESUME_EVERY: usize = 16;

/// Writes payloads into one slot's partitions.
pub struct SlotSink<'a> {
    pub disk: &'a Disk,
    pub board: &'a Board,
    pub slot: Slot,
    /// Called after chunks are durably written: (payload, next chunk).
    pub on_durable: Option<&'a mut dyn FnMut(usize, usize) -> Result<(), Error>>,
    pub progress: Option<Box<dyn FnMut(u64) + 'a>>,
    range: (u64, u64),
    part: String,
    since_sync: usize,
    /// The position after the last chunk written (not necessarily synced).
    pub next: Position,
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
        self.disk.write_at(data, self.range.0 + offset)?;
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
            if let Some(cb) = self.on_durable.as_mut() {
                self.disk.sync()?;
                cb(index, chunk + 1)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self, index: usize, p: &Payload) -> Result<(), Error> {
        self.disk.sync()?;
        let got = read_back(self.disk, self.range.0, p.installed_size)?;
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
pub fn read_back(disk: &Disk, off: u64, len: u64) -> Result<Sha256Digest, Error> {
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    use std::os::fd::AsRawFd as _;
    let fd = disk.file().as_raw_fd();
    let _ = posix_fadvise(
        fd,
        off as i64,
        len as i64,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
    let mut f = disk
        .file()
        .try_clone()
        .map_err(|e| Error::io("read back", &disk.path, e))?;
    f.seek(SeekFrom::Start(off))
        .map_err(|e| Error::io("read back", &disk.path, e))?;
    let _ = posix_fadvise(
        fd,
        off as i64,
        len as i64,
        PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
    );
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    let mut r = f.take(len);
    while left > 0 {
        let n = r
            .read(&mut buf)
            .map_err(|e| Error::io("read back", &disk.path, e))?;
        if n == 0 {
            return Err(Error::io(
                "read back",
                &disk.path,
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        h.update(&buf[..n]);
        left -= n as u64;
    }
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

/// Map a chunk-level bundle error for callers that retry from the network.
pub fn is_corruption(e: &Error) -> bool {
    matches!(
        e,
        Error::Bundle(BundleError::ChunkDigest { .. } | BundleError::Truncated { .. })
    )
}
