//! Minimal GUID partition table: read a table to find partitions by name, and
//! write a fresh one (primary + backup + protective MBR) for image building.
//! Pure over byte buffers; the caller does the I/O.

use sha2::{Digest as _, Sha256};

pub(crate) const SECTOR: u64 = 512;
const ENTRIES: usize = 128;
const ENTRY_LEN: usize = 128;
const ENTRY_SECTORS: u64 = (ENTRIES * ENTRY_LEN) as u64 / SECTOR;

pub(crate) const TYPE_LINUX: [u8; 16] = guid("0FC63DAF-8483-4772-8E79-3D69D8477DE4");
#[cfg(test)]
pub(crate) const TYPE_ESP: [u8; 16] = guid("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
pub(crate) const TYPE_BASIC_DATA: [u8; 16] = guid("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7");
/// Attribute bit 2: legacy BIOS bootable, which U-Boot's distro boot looks for.
pub(crate) const ATTR_LEGACY_BOOT: u64 = 1 << 2;

/// Parse a textual GUID into its on-disk (mixed-endian) byte order.
pub(crate) const fn guid(s: &str) -> [u8; 16] {
    let b = s.as_bytes();
    let mut raw = [0u8; 16];
    let mut i = 0;
    let mut j = 0;
    while i < b.len() {
        if b[i] == b'-' {
            i += 1;
            continue;
        }
        let hi = nib(b[i]);
        let lo = nib(b[i + 1]);
        raw[j] = (hi << 4) | lo;
        j += 1;
        i += 2;
    }
    [
        raw[3], raw[2], raw[1], raw[0], raw[5], raw[4], raw[7], raw[6], raw[8], raw[9], raw[10],
        raw[11], raw[12], raw[13], raw[14], raw[15],
    ]
}

const fn nib(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub type_guid: [u8; 16],
    pub unique_guid: [u8; 16],
    pub first_lba: u64,
    pub last_lba: u64,
    pub attributes: u64,
}

impl Entry {
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }
    pub fn len(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A deterministic GUID from a seed string (reproducible images).
pub fn derived_guid(seed: &str) -> [u8; 16] {
    let d = Sha256::digest(seed.as_bytes());
    let mut g = [0u8; 16];
    g.copy_from_slice(&d[..16]);
    g[7] = (g[7] & 0x0f) | 0x40; // version 4 layout (byte 7 holds the high half of time_hi on disk)
    g[8] = (g[8] & 0x3f) | 0x80;
    g
}

/// Number of sectors at the end of the disk the backup table takes.
pub(crate) fn reserved_tail() -> u64 {
    ENTRY_SECTORS + 1
}

/// First usable LBA (after MBR, header and entries).
pub(crate) fn first_usable() -> u64 {
    2 + ENTRY_SECTORS
}

/// Build the primary area (LBA 0..first_usable) and the backup area (last
/// `reserved_tail` sectors) for a disk of `disk_sectors`.
pub fn build(entries: &[Entry], disk_sectors: u64, disk_guid: [u8; 16]) -> (Vec<u8>, Vec<u8>) {
    let last = disk_sectors - 1;
    let mut table = vec![0u8; ENTRIES * ENTRY_LEN];
    for (i, e) in entries.iter().enumerate().take(ENTRIES) {
        let o = &mut table[i * ENTRY_LEN..(i + 1) * ENTRY_LEN];
        o[0..16].copy_from_slice(&e.type_guid);
        o[16..32].copy_from_slice(&e.unique_guid);
        o[32..40].copy_from_slice(&e.first_lba.to_le_bytes());
        o[40..48].copy_from_slice(&e.last_lba.to_le_bytes());
        o[48..56].copy_from_slice(&e.attributes.to_le_bytes());
        for (k, u) in e.name.encode_utf16().take(36).enumerate() {
            o[56 + 2 * k..58 + 2 * k].copy_from_slice(&u.to_le_bytes());
        }
    }
    let table_crc = crc32fast::hash(&table);
    let header = |current: u64, backup: u64, entries_lba: u64| {
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&first_usable().to_le_bytes());
        h[48..56].copy_from_slice(&(last - reserved_tail()).to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_LEN as u32).to_le_bytes());
        h[88..92].copy_from_slice(&table_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let mut primary = vec![0u8; (first_usable() * SECTOR) as usize];
    // protective MBR
    let mbr = &mut primary[446..462];
    mbr[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    mbr[4] = 0xEE;
    mbr[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    mbr[8..12].copy_from_slice(&1u32.to_le_bytes());
    mbr[12..16].copy_from_slice(&((disk_sectors - 1).min(0xFFFF_FFFF) as u32).to_le_bytes());
    primary[510] = 0x55;
    primary[511] = 0xAA;
    primary[512..1024].copy_from_slice(&header(1, last, 2));
    primary[1024..].copy_from_slice(&table);
    let mut backup = table.clone();
    backup.extend_from_slice(&header(last, 1, last - ENTRY_SECTORS));
    (primary, backup)
}

/// Parse the primary GPT from the first `first_usable()` sectors of a disk.
pub fn parse(primary: &[u8]) -> Result<Vec<Entry>, String> {
    if primary.len() < (first_usable() * SECTOR) as usize {
        return Err("disk too small for a GPT".into());
    }
    parse_table(&primary[512..1024], &primary[1024..], 2)
}

/// Parse the backup GPT from the last `reserved_tail()` sectors of a disk
/// of `disk_sectors` (entries, then the header in the last sector), as
/// firmware and the kernel do when the primary is damaged.
pub(crate) fn parse_backup(tail: &[u8], disk_sectors: u64) -> Result<Vec<Entry>, String> {
    if tail.len() != (reserved_tail() * SECTOR) as usize || disk_sectors <= reserved_tail() {
        return Err("disk too small for a backup GPT".into());
    }
    let (table, h) = tail.split_at(tail.len() - SECTOR as usize);
    parse_table(h, table, disk_sectors - 1 - ENTRY_SECTORS)
}

/// The disk GUID in a GPT header sector (the primary's at LBA 1, the
/// backup's in the disk's last sector).
pub(crate) fn disk_guid(header: &[u8]) -> [u8; 16] {
    let mut g = [0u8; 16];
    g.copy_from_slice(&header[56..72]);
    g
}

/// The table with partition `name` grown to the end of a disk of
/// `disk_sectors` (whole MiB, up to the backup table), or `None` when it
/// already ends within a MiB of there. It must be the last partition on the
/// disk: nothing else moves. Pure: the caller writes the new table (the
/// backup first, then the primary).
pub(crate) fn grown(
    entries: &[Entry],
    name: &str,
    disk_sectors: u64,
) -> Result<Option<Vec<Entry>>, String> {
    let i = entries
        .iter()
        .position(|e| e.name == name)
        .ok_or_else(|| format!("no partition named {name:?}"))?;
    if entries.iter().any(|e| e.last_lba > entries[i].last_lba) {
        return Err(format!("partition {name:?} is not the last on the disk"));
    }
    let last_usable = disk_sectors
        .checked_sub(1 + reserved_tail())
        .ok_or("disk too small")?;
    let first = entries[i].first_lba;
    const MIB: u64 = 2048;
    let len = (last_usable + 1).saturating_sub(first) / MIB * MIB;
    if len <= entries[i].last_lba + 1 - first {
        return Ok(None);
    }
    let mut out = entries.to_vec();
    out[i].last_lba = first + len - 1;
    Ok(Some(out))
}

/// Parse one GPT header and its entry table, which must sit at `entries_lba`.
fn parse_table(h: &[u8], entries: &[u8], entries_lba: u64) -> Result<Vec<Entry>, String> {
    if &h[0..8] != b"EFI PART" {
        return Err("no GPT signature".into());
    }
    let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    let u64_at = |b: &[u8], o: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(x)
    };
    let hsize = u32_at(12) as usize;
    if !(92..=512).contains(&hsize) {
        return Err("bad GPT header size".into());
    }
    let mut hcopy = h[..hsize].to_vec();
    hcopy[16..20].fill(0);
    if crc32fast::hash(&hcopy) != u32_at(16) {
        return Err("GPT header CRC mismatch".into());
    }
    let (n, esize) = (u32_at(80) as usize, u32_at(84) as usize);
    if u64_at(h, 72) != entries_lba
        || n > ENTRIES
        || esize != ENTRY_LEN
        || entries.len() < n * esize
    {
        return Err("unsupported GPT entry layout".into());
    }
    let table = &entries[..n * esize];
    if crc32fast::hash(table) != u32_at(88) {
        return Err("GPT entry table CRC mismatch".into());
    }
    let mut out = Vec::new();
    for e in table.chunks_exact(esize) {
        if e[0..16].iter().all(|&b| b == 0) {
            continue;
        }
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let mut type_guid = [0u8; 16];
        type_guid.copy_from_slice(&e[0..16]);
        let mut unique_guid = [0u8; 16];
        unique_guid.copy_from_slice(&e[16..32]);
        let (first_lba, last_lba) = (u64_at(e, 32), u64_at(e, 40));
        if last_lba < first_lba {
            return Err("GPT entry ends before it starts".into());
        }
        out.push(Entry {
            name: String::from_utf16_lossy(&units),
            type_guid,
            unique_guid,
            first_lba,
            last_lba,
            attributes: u64_at(e, 48),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_then_parse() {
        let entries = vec![
            Entry {
                name: "boot".into(),
                type_guid: TYPE_ESP,
                unique_guid: derived_guid("1"),
                first_lba: 2048,
                last_lba: 4095,
                attributes: ATTR_LEGACY_BOOT,
            },
            Entry {
                name: "rootfs_a".into(),
                type_guid: TYPE_LINUX,
                unique_guid: derived_guid("2"),
                first_lba: 4096,
                last_lba: 8191,
                attributes: 0,
            },
        ];
        let (primary, backup) = build(&entries, 16384, derived_guid("disk"));
        assert_eq!(parse(&primary).unwrap(), entries);
        assert_eq!(backup.len() as u64, reserved_tail() * SECTOR);
        let mut bad = primary.clone();
        bad[1024 + 60] ^= 1;
        assert!(parse(&bad).unwrap_err().contains("CRC"));
    }

    /// What firmware and the kernel (and `Disk::open`) see: the primary if
    /// it is valid, else the backup at the disk's end.
    fn read_table(disk: &[u8]) -> Result<Vec<Entry>, String> {
        let sectors = disk.len() as u64 / SECTOR;
        parse(&disk[..(first_usable() * SECTOR) as usize]).or_else(|_| {
            parse_backup(
                &disk[((sectors - reserved_tail()) * SECTOR) as usize..],
                sectors,
            )
        })
    }

    /// Growing the last partition to a bigger disk: idempotent, and a power
    /// cut at any sector of either table write leaves a table that firmware
    /// reads, with every other partition unchanged and the grown one either
    /// its old size or its new one.
    #[test]
    fn growing_the_data_partition_survives_a_cut_at_every_sector() {
        let part = |name: &str, first: u64, last: u64| Entry {
            name: name.into(),
            type_guid: TYPE_LINUX,
            unique_guid: derived_guid(name),
            first_lba: first,
            last_lba: last,
            attributes: 0,
        };
        let old = vec![part("boot", 2048, 4095), part("data", 4096, 14335)];
        let (small, new_sectors) = (16384u64, 65536u64 + 17);
        let guid = derived_guid("disk");
        let (p0, b0) = build(&old, small, guid);
        let mut disk = vec![0u8; (new_sectors * SECTOR) as usize];
        disk[..p0.len()].copy_from_slice(&p0);
        let tail0 = ((small - reserved_tail()) * SECTOR) as usize;
        disk[tail0..tail0 + b0.len()].copy_from_slice(&b0);
        assert_eq!(read_table(&disk).unwrap(), old);

        let new = grown(&old, "data", new_sectors).unwrap().unwrap();
        assert_eq!(new[0], old[0]);
        assert_eq!(new[1].first_lba, 4096);
        assert_eq!((new[1].last_lba + 1 - 4096) % 2048, 0, "whole MiB");
        assert!(new[1].last_lba < new_sectors - 1 - reserved_tail());
        assert!(new[1].last_lba + 2048 >= new_sectors - 1 - reserved_tail());
        assert_eq!(
            grown(&new, "data", new_sectors).unwrap(),
            None,
            "idempotent"
        );
        assert_eq!(grown(&old, "data", small).unwrap(), None, "nothing to grow");
        assert!(grown(&old, "boot", new_sectors).is_err(), "not the last");
        assert!(grown(&old, "nope", new_sectors).is_err());

        let (p1, b1) = build(&new, new_sectors, disk_guid(&p0[512..1024]));
        let tail1 = ((new_sectors - reserved_tail()) * SECTOR) as usize;
        let writes = [(tail1, &b1), (0, &p1)];
        for (w, (at, bytes)) in writes.iter().enumerate() {
            for cut in 0..=bytes.len() / SECTOR as usize {
                let mut d = disk.clone();
                for (at2, bytes2) in &writes[..w] {
                    d[*at2..*at2 + bytes2.len()].copy_from_slice(bytes2);
                }
                let n = cut * SECTOR as usize;
                d[*at..*at + n].copy_from_slice(&bytes[..n]);
                let t = read_table(&d).unwrap_or_else(|e| panic!("write {w}, cut {cut}: {e}"));
                assert_eq!(t[0], old[0], "write {w}, cut {cut}");
                assert!(t[1] == old[1] || t[1] == new[1], "write {w}, cut {cut}");
            }
        }
        let mut d = disk.clone();
        d[tail1..].copy_from_slice(&b1);
        d[..p1.len()].copy_from_slice(&p1);
        assert_eq!(read_table(&d).unwrap(), new);
    }

    #[test]
    fn guid_is_mixed_endian() {
        assert_eq!(&TYPE_LINUX[..4], &[0xAF, 0x3D, 0xC6, 0x0F]);
    }
}
