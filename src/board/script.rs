//! Compile a U-Boot script source into a legacy `boot.scr` image (what
//! `mkimage -A arm64 -T script -C none` produces): a 64-byte big-endian header
//! with CRCs, then a length table and the script. Pure.

const IH_MAGIC: u32 = 0x2705_1956;
const IH_OS_LINUX: u8 = 5;
const IH_ARCH_ARM64: u8 = 22;
const IH_TYPE_SCRIPT: u8 = 6;

pub fn compile(source: &str, name: &str, time: u32) -> Vec<u8> {
    let mut data = Vec::with_capacity(source.len() + 8);
    data.extend_from_slice(&(source.len() as u32).to_be_bytes());
    data.extend_from_slice(&0u32.to_be_bytes());
    data.extend_from_slice(source.as_bytes());
    let mut h = [0u8; 64];
    h[0..4].copy_from_slice(&IH_MAGIC.to_be_bytes());
    h[8..12].copy_from_slice(&time.to_be_bytes());
    h[12..16].copy_from_slice(&(data.len() as u32).to_be_bytes());
    h[24..28].copy_from_slice(&crc32fast::hash(&data).to_be_bytes());
    h[28] = IH_OS_LINUX;
    h[29] = IH_ARCH_ARM64;
    h[30] = IH_TYPE_SCRIPT;
    h[31] = 0; // no compression
    for (i, b) in name.bytes().take(31).enumerate() {
        h[32 + i] = b;
    }
    let hcrc = crc32fast::hash(&h);
    h[4..8].copy_from_slice(&hcrc.to_be_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(&data);
    out
}
