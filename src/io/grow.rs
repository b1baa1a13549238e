//! `ferry grow-data`: on first boot, grow the data partition to the end of
//! the card and its ext4 file system with it, online. Every step is
//! idempotent and a power cut between any two writes leaves a bootable disk:
//! the new backup table goes to the disk's end first (nobody reads it while
//! the primary is valid), then the primary in one write; a torn primary is
//! invalid, so firmware, the kernel and ferry read the backup, which is
//! already the new table. Only the data partition's end moves; the slots and
//! the boot partition are never rewritten. The file system grows last,
//! through the kernel's online resize (journalled), only once the table
//! says the partition is bigger.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{FileExt as _, FileTypeExt as _};
use std::path::Path;

use tracing::info;

use super::disk::sectors;
use crate::board::{gpt, PartKind};
use crate::error::Error;

/// What `grow` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grown {
    pub partition: String,
    /// The partition's size now, and whether the table was rewritten.
    pub bytes: u64,
    pub table: bool,
    /// The file system's size before and after, when it was resized.
    pub fs: Option<(u64, u64)>,
}

/// ext4's superblock: block count and block size (from the device, at
/// byte 1024 of the partition).
fn ext4_size(dev: &File, offset: u64) -> Result<(u64, u64), String> {
    let mut sb = [0u8; 1024];
    dev.read_exact_at(&mut sb, offset + 1024)
        .map_err(|e| e.to_string())?;
    if sb[56..58] != [0x53, 0xEF] {
        return Err("no ext4 file system (bad superblock magic)".into());
    }
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]) as u64;
    let block = 1024u64 << u32_at(24).min(6);
    let incompat = u32_at(0x60);
    let hi = if incompat & 0x80 != 0 {
        u32_at(0x150)
    } else {
        0
    };
    Ok(((hi << 32) | u32_at(4), block))
}

nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);
nix::ioctl_write_ptr_bad!(blkpg, 0x1269, BlkpgIoctlArg);

#[repr(C)]
struct BlkpgIoctlArg {
    op: nix::libc::c_int,
    flags: nix::libc::c_int,
    datalen: nix::libc::c_int,
    data: *mut BlkpgPartition,
}

#[repr(C)]
struct BlkpgPartition {
    start: i64,
    length: i64,
    pno: nix::libc::c_int,
    devname: [u8; 64],
    volname: [u8; 64],
}

const BLKPG_RESIZE_PARTITION: nix::libc::c_int = 3;

/// Tell the kernel partition `pno` (1-based) of the open disk now spans
/// `start..start+len` bytes (the disk is in use: no whole re-read).
fn kernel_resize(disk: &File, pno: usize, start: u64, len: u64) -> std::io::Result<()> {
    let mut part = BlkpgPartition {
        start: start as i64,
        length: len as i64,
        pno: pno as nix::libc::c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as nix::libc::c_int,
        data: &mut part,
    };
    // SAFETY: `arg` points at a live, correctly laid out blkpg_partition.
    unsafe { blkpg(disk.as_raw_fd(), &arg) }
        .map(|_| ())
        .map_err(std::io::Error::from)
}

/// Grow the board's data partition on `disk` to the disk's end and the ext4
/// file system mounted at `mount` (if any) to the partition.
pub(crate) fn grow(
    disk: &Path,
    board: &crate::board::Board,
    mount: Option<&Path>,
) -> Result<Grown, Error> {
    let name = board
        .partitions
        .iter()
        .find(|p| p.kind == PartKind::Data)
        .map(|p| p.name.clone())
        .ok_or_else(|| Error::Usage(format!("board {} has no data partition", board.name)))?;
    let f = File::options()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(|e| Error::io("open disk", disk, e))?;
    let is_dev = f
        .metadata()
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false);
    let n = sectors(&f).map_err(|e| Error::io("size of disk", disk, e))?;
    let d = super::disk::Disk::open(disk, false)?;
    let entries = d.entries().to_vec();
    let cfg_err = |detail: String| Error::Config {
        path: disk.into(),
        detail,
    };
    let mut primary = vec![0u8; (gpt::first_usable() * gpt::SECTOR) as usize];
    f.read_exact_at(&mut primary, 0)
        .map_err(|e| Error::io("read partition table", disk, e))?;
    let primary_ok = gpt::parse(&primary).is_ok();
    let guid = if primary_ok {
        gpt::disk_guid(&primary[512..1024])
    } else {
        let mut h = vec![0u8; gpt::SECTOR as usize];
        f.read_exact_at(&mut h, (n - 1) * gpt::SECTOR)
            .map_err(|e| Error::io("read backup table", disk, e))?;
        gpt::disk_guid(&h)
    };
    let grown = gpt::grown(&entries, &name, n).map_err(cfg_err)?;
    let table = grown.is_some() || !primary_ok;
    let target = grown.unwrap_or(entries);
    if table {
        // the backup first (unread while the primary is valid), then the
        // primary; a primary torn by a cut last time is written again here
        let (p, b) = gpt::build(&target, n, guid);
        super::fault::point("grow backup table");
        f.write_all_at(&b, (n - gpt::reserved_tail()) * gpt::SECTOR)
            .and_then(|()| f.sync_data())
            .map_err(|e| Error::io("write backup table", disk, e))?;
        super::fault::point("grow primary table");
        f.write_all_at(&p, 0)
            .and_then(|()| f.sync_data())
            .map_err(|e| Error::io("write partition table", disk, e))?;
    }
    let (pno, part) = target
        .iter()
        .enumerate()
        .find(|(_, e)| e.name == name)
        .map(|(i, e)| (i + 1, e.clone()))
        .ok_or_else(|| cfg_err(format!("no partition named {name:?}")))?;
    if is_dev {
        // every boot: the kernel may still have the size it read at boot
        kernel_resize(&f, pno, part.offset(), part.len())
            .map_err(|e| Error::io("resize partition (BLKPG)", disk, e))?;
    }
    info!(partition = %name, bytes = part.len(), table, "data partition fills the disk");
    let mut fs = None;
    if let Some(m) = mount {
        let (blocks, bs) = ext4_size(&f, part.offset()).map_err(cfg_err)?;
        let want = part.len() / bs;
        if want > blocks {
            let dir = File::open(m).map_err(|e| Error::io("open mount point", m, e))?;
            // SAFETY: the ioctl reads one u64 (the new block count).
            unsafe { ext4_resize_fs(dir.as_raw_fd(), &want) }
                .map_err(|e| Error::io("grow file system (EXT4_IOC_RESIZE_FS)", m, e.into()))?;
            info!(mount = %m.display(), from = blocks * bs, to = want * bs, "file system grown");
            fs = Some((blocks * bs, want * bs));
        }
    }
    Ok(Grown {
        partition: name,
        bytes: part.len(),
        table,
        fs,
    })
}
