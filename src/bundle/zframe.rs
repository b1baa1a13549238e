//! Reading a zstd frame header (RFC 8878 section 3.1.1.1) without zstd, so a
//! chunk whose frame asks for a window or content size over the manifest's
//! limits is refused before any decoder state is touched. Pure.

const MAGIC: u32 = 0xFD2F_B528;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub window_size: u64,
    pub content_size: Option<u64>,
}

pub fn parse(b: &[u8]) -> Result<FrameHeader, &'static str> {
    if b.len() < 6 {
        return Err("chunk shorter than a zstd frame header");
    }
    if u32::from_le_bytes([b[0], b[1], b[2], b[3]]) != MAGIC {
        return Err("chunk is not a zstd frame");
    }
    let fhd = b[4];
    let fcs_flag = fhd >> 6;
    let single = fhd & 0x20 != 0;
    if fhd & 0x08 != 0 {
        return Err("reserved bit set in zstd frame header");
    }
    let did_len = [0usize, 1, 2, 4][(fhd & 3) as usize];
    let fcs_len = match (fcs_flag, single) {
        (0, true) => 1,
        (0, false) => 0,
        (1, _) => 2,
        (2, _) => 4,
        _ => 8,
    };
    let mut pos = 5;
    let window = if single {
        None
    } else {
        let wd = b[pos];
        pos += 1;
        let log = 10 + u64::from(wd >> 3);
        if log > 41 {
            return Err("zstd window descriptor out of range");
        }
        let base = 1u64 << log;
        Some(base + (base / 8) * u64::from(wd & 7))
    };
    pos += did_len;
    if b.len() < pos + fcs_len {
        return Err("zstd frame header truncated");
    }
    let raw = &b[pos..pos + fcs_len];
    let content = match fcs_len {
        0 => None,
        1 => Some(u64::from(raw[0])),
        2 => Some(u64::from(u16::from_le_bytes([raw[0], raw[1]])) + 256),
        4 => Some(u64::from(u32::from_le_bytes([
            raw[0], raw[1], raw[2], raw[3],
        ]))),
        _ => Some(u64::from_le_bytes([
            raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
        ])),
    };
    let window_size = match (window, content) {
        (Some(w), _) => w,
        (None, Some(c)) => c,
        (None, None) => return Err("zstd single-segment frame without content size"),
    };
    Ok(FrameHeader {
        window_size,
        content_size: content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_real_frames() {
        let data = vec![7u8; 100_000];
        let z = zstd::bulk::compress(&data, 3).unwrap();
        let h = parse(&z).unwrap();
        assert_eq!(h.content_size, Some(100_000));
        assert!(h.window_size >= 100_000);
        let small = zstd::bulk::compress(b"hi", 3).unwrap();
        assert_eq!(parse(&small).unwrap().content_size, Some(2));
        assert!(parse(b"\0\0\0\0\0\0").is_err());
        assert!(parse(&z[..4]).is_err());
    }
}
