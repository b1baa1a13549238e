//! `ferry image build` (host only): a whole, bootable disk image for a board:
//! GPT, FAT boot partition with the compiled boot script and the initial
//! boot state, slot A installed from a verified bundle through the same sink
//! the device uses, slot B empty, and an ext4 data partition holding the
//! initial device record (made with e2fsprogs' `mke2fs -d`).

use std::path::Path;

use tracing::{info, warn};

use super::disk::Disk;
use super::install::SlotSink;
use super::store::write_durable;
use crate::board::bootenv::BootState;
use crate::board::{gpt, script, Board, Fs, PartKind, Slot};
use crate::bundle::reader::{self, Position};
use crate::bundle::Keyring;
use crate::error::{Error, PolicyError};
use crate::io::bootctl::for_board;
use crate::update::machine::{Release, SlotStatus};
use crate::update::persist::Device;

pub(crate) struct Options<'a> {
    pub board: &'a Board,
    pub files: &'a [(String, String)],
    pub bundle: &'a Path,
    pub keyring: &'a Keyring,
    pub output: &'a Path,
    /// Also write the initial device record here (for host-side runs).
    pub state_dir: Option<&'a Path>,
    /// Binary files for the boot partition: (name on it, contents).
    pub boot_files: &'a [(String, Vec<u8>)],
    pub progress: Option<Box<dyn FnMut(u64)>>,
}

pub(crate) fn build(o: Options) -> Result<Device, Error> {
    let board = o.board;
    let mut src = std::io::BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(o.bundle).map_err(|e| Error::io("open bundle", o.bundle, e))?,
    );
    let b = reader::open(&mut src, Some(o.keyring))?;
    if b.manifest.compatible != board.compatible {
        return Err(PolicyError::WrongBoard {
            bundle: b.manifest.compatible.clone(),
            device: board.compatible.clone(),
        }
        .into());
    }
    let tmp = o.output.with_extension("img.tmp");
    let result = (|| {
        let f = std::fs::File::create(&tmp).map_err(|e| Error::io("create image", &tmp, e))?;
        let sectors = board.disk_size_mib * 2048;
        f.set_len(sectors * gpt::SECTOR)
            .map_err(|e| Error::io("size image", &tmp, e))?;
        drop(f);
        let (primary, backup) =
            gpt::build(&board.layout(), sectors, gpt::derived_guid(&board.name));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&tmp)
            .map_err(|e| Error::io("open image", &tmp, e))?;
        use std::os::unix::fs::FileExt as _;
        f.write_all_at(&primary, 0)
            .map_err(|e| Error::io("write partition table", &tmp, e))?;
        f.write_all_at(&backup, (sectors - gpt::reserved_tail()) * gpt::SECTOR)
            .map_err(|e| Error::io("write partition table", &tmp, e))?;
        f.set_len(sectors * gpt::SECTOR)
            .map_err(|e| Error::io("size image", &tmp, e))?;
        drop(f);
        let disk = Disk::open(&tmp, true)?;
        for p in board.partitions.iter().filter(|p| p.fs == Fs::Fat) {
            let mut w = disk.window(&p.name)?;
            let mut label = [b' '; 11];
            for (i, c) in p.name.to_ascii_uppercase().bytes().take(11).enumerate() {
                label[i] = c;
            }
            fatfs::format_volume(
                &mut w,
                fatfs::FormatVolumeOptions::new().volume_label(label),
            )
            .map_err(|e| Error::io("format FAT", format!("{}:{}", tmp.display(), p.name), e))?;
        }
        let boot_part = board
            .partitions
            .iter()
            .find(|p| p.kind == PartKind::Boot && p.fs == Fs::Fat);
        if let (Some(bp), Some(sname)) = (boot_part, &board.bootloader.script) {
            let src = o
                .files
                .iter()
                .find(|(n, _)| n == sname)
                .map(|(_, s)| s.as_str())
                .ok_or_else(|| Error::Config {
                    path: board.name.clone().into(),
                    detail: format!("boot script {sname} not found"),
                })?;
            let scr = script::compile(
                src,
                &format!("ferry {}", board.name),
                b.manifest.created as u32,
            );
            super::disk::fat_write(disk.window(&bp.name)?, "boot.scr", &scr)
                .map_err(|e| Error::io("write boot.scr", &tmp, e))?;
            super::disk::fat_write(disk.window(&bp.name)?, sname, src.as_bytes())
                .map_err(|e| Error::io("write boot script", &tmp, e))?;
        }
        // ferry's own files on the boot partition are not for --boot-file
        // (FAT names compare without case)
        let mut own = vec!["boot.scr".to_string()];
        own.extend(board.bootloader.script.clone());
        if let crate::board::EnvLocation::File { file, .. } = &board.bootloader.env {
            own.push(file.clone());
            own.push(format!("{file}.redund"));
        }
        if let Some((n, _)) = o
            .boot_files
            .iter()
            .find(|(n, _)| own.iter().any(|r| r.eq_ignore_ascii_case(n)))
        {
            return Err(Error::Usage(format!(
                "--boot-file {n}: ferry writes that file on the boot partition itself"
            )));
        }
        match boot_part {
            Some(bp) => {
                let text = board
                    .boot_files
                    .iter()
                    .map(|(n, t)| (n.as_str(), t.as_bytes()));
                let given = o.boot_files.iter().map(|(n, d)| (n.as_str(), d.as_slice()));
                for (name, data) in text.chain(given) {
                    super::disk::fat_write(disk.window(&bp.name)?, name, data).map_err(|e| {
                        Error::io("write boot file", format!("{}:{name}", tmp.display()), e)
                    })?;
                }
            }
            None if !o.boot_files.is_empty() => {
                return Err(Error::Usage(format!(
                    "board {} has no FAT boot partition for --boot-file",
                    board.name
                )))
            }
            None => {}
        }
        let mut sink = SlotSink::new(&disk, board, Slot::A);
        // a fresh image reads as zeroes: leave zero chunks as holes
        sink.skip_zeros = true;
        sink.progress = o.progress;
        reader::stream(src, &b, Position::default(), true, &mut sink)?;
        let release = Release {
            version: b.manifest.version.clone(),
            digest: b.manifest_digest,
        };
        let mut dev = Device::default();
        dev.slots[0].status = SlotStatus::Good;
        dev.slots[0].release = Some(release.clone());
        dev.floor = Some(release.version);
        for_board(board, &disk).store(&BootState {
            floor: dev.floor.clone(),
            ..BootState::default()
        })?;
        if let Some(data) = board
            .partitions
            .iter()
            .find(|p| p.kind == PartKind::Data && p.fs == Fs::Ext4)
        {
            make_data_fs(&disk, &tmp, &data.name, &dev)?;
        }
        if let Some(sd) = o.state_dir {
            std::fs::create_dir_all(sd).map_err(|e| Error::io("create state dir", sd, e))?;
            for name in [super::store::STATE_FILE, super::store::STATE_COPY] {
                write_durable(&sd.join(name), &dev.encode_copy(1))?;
            }
        }
        disk.sync()?;
        Ok(dev)
    })();
    match result {
        Ok(dev) => {
            std::fs::rename(&tmp, o.output).map_err(|e| Error::io("rename image", o.output, e))?;
            info!(image = %o.output.display(), board = %board.name, "disk image built");
            Ok(dev)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// ext4 on the data partition with `ferry/state.json` and `rancher/` in it.
fn make_data_fs(disk: &Disk, img: &Path, part: &str, dev: &Device) -> Result<(), Error> {
    let e = disk.partition(part)?;
    // private and new: another user cannot plant files (a k3s auto-apply
    // manifest, say) in what becomes the data partition
    let stage = super::private_dir("ferry-data")?;
    std::fs::create_dir_all(stage.join("ferry")).map_err(|x| Error::io("create", &stage, x))?;
    std::fs::create_dir_all(stage.join("rancher")).map_err(|x| Error::io("create", &stage, x))?;
    for name in [super::store::STATE_FILE, super::store::STATE_COPY] {
        write_durable(&stage.join("ferry").join(name), &dev.encode_copy(1))?;
    }
    let out = std::process::Command::new("mke2fs")
        .args(["-F", "-q", "-t", "ext4", "-L", part])
        .arg("-E")
        .arg(format!("offset={}", e.offset()))
        .arg("-d")
        .arg(&stage)
        .arg(img)
        .arg(format!("{}k", e.len() / 1024))
        .output();
    let _ = std::fs::remove_dir_all(&stage);
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(Error::Usage(format!(
            "mke2fs failed for partition {part}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
        Err(x) if x.kind() == std::io::ErrorKind::NotFound => {
            warn!(
                partition = part,
                "mke2fs not found (install e2fsprogs): data partition left unformatted"
            );
            Ok(())
        }
        Err(x) => Err(Error::io("run mke2fs", "mke2fs", x)),
    }
}
