//! The U-Boot environment image: CRC32 (LE) + optional flag byte + NUL
//! separated `name=value` pairs, padded to the configured size. The same bytes
//! `fw_printenv`/`fw_setenv` (libubootenv) and U-Boot's `env import -c` read.
//! Redundant copies: the valid copy with the newer flag wins; a write goes to
//! the other copy with flag + 1, so a torn write leaves the old copy intact.
//! Pure codec over byte slices.

use std::collections::BTreeMap;

pub type Vars = BTreeMap<String, String>;

fn header_len(redundant: bool) -> usize {
    if redundant {
        5
    } else {
        4
    }
}

/// Decode one copy; `None` if the CRC does not match (or it is malformed).
pub fn decode(img: &[u8], redundant: bool) -> Option<(Vars, u8)> {
    let h = header_len(redundant);
    if img.len() <= h + 1 {
        return None;
    }
    let crc = u32::from_le_bytes([img[0], img[1], img[2], img[3]]);
    let data = &img[h..];
    if crc32fast::hash(data) != crc {
        return None;
    }
    let flag = if redundant { img[4] } else { 0 };
    let mut vars = Vars::new();
    for entry in data.split(|&b| b == 0) {
        if entry.is_empty() {
            break;
        }
        let s = std::str::from_utf8(entry).ok()?;
        let (k, v) = s.split_once('=')?;
        vars.insert(k.to_string(), v.to_string());
    }
    Some((vars, flag))
}

/// Encode vars into an image of `size` bytes. Fails if they do not fit or a
/// name or value holds a NUL or a name holds '='.
pub fn encode(vars: &Vars, size: usize, redundant: bool, flag: u8) -> Result<Vec<u8>, String> {
    let h = header_len(redundant);
    let mut img = vec![0u8; size];
    let mut pos = h;
    for (k, v) in vars {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(format!("invalid environment variable {k:?}"));
        }
        let need = k.len() + 1 + v.len() + 1;
        if pos + need + 1 > size {
            return Err(format!("environment does not fit in {size} bytes"));
        }
        img[pos..pos + k.len()].copy_from_slice(k.as_bytes());
        img[pos + k.len()] = b'=';
        img[pos + k.len() + 1..pos + need - 1].copy_from_slice(v.as_bytes());
        pos += need;
    }
    let crc = crc32fast::hash(&img[h..]);
    img[..4].copy_from_slice(&crc.to_le_bytes());
    if redundant {
        img[4] = flag;
    }
    Ok(img)
}

/// Is flag `a` newer than `b`? Wrap-around as libubootenv treats it.
fn newer(a: u8, b: u8) -> bool {
    if a == 0 && b == 255 {
        return true;
    }
    if a == 255 && b == 0 {
        return false;
    }
    a > b
}

/// Pick the current copy of a redundant pair: (vars, flag, index of the copy).
/// `None` when neither copy is valid.
pub fn pick(copies: [Option<(Vars, u8)>; 2]) -> Option<(Vars, u8, usize)> {
    match copies {
        [Some((a, fa)), Some((b, fb))] => {
            if newer(fb, fa) {
                Some((b, fb, 1))
            } else {
                Some((a, fa, 0))
            }
        }
        [Some((a, fa)), None] => Some((a, fa, 0)),
        [None, Some((b, fb))] => Some((b, fb, 1)),
        [None, None] => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn round_trip_both_layouts() {
        let v = vars(&[("BOOT_ORDER", "A B"), ("BOOT_A_LEFT", "3")]);
        for red in [false, true] {
            let img = encode(&v, 4096, red, 7).unwrap();
            assert_eq!(img.len(), 4096);
            let (d, f) = decode(&img, red).unwrap();
            assert_eq!(d, v);
            assert_eq!(f, if red { 7 } else { 0 });
        }
    }

    #[test]
    fn corruption_is_detected() {
        let mut img = encode(&vars(&[("a", "b")]), 256, false, 0).unwrap();
        img[10] ^= 0xff;
        assert!(decode(&img, false).is_none());
    }

    #[test]
    fn overflow_and_bad_names_refused() {
        assert!(encode(&vars(&[("k", &"x".repeat(300))]), 256, false, 0).is_err());
        assert!(encode(&vars(&[("a=b", "c")]), 256, false, 0).is_err());
    }

    #[test]
    fn newest_valid_copy_wins() {
        let a = Some((vars(&[("v", "1")]), 4));
        let b = Some((vars(&[("v", "2")]), 5));
        assert_eq!(pick([a.clone(), b.clone()]).unwrap().2, 1);
        assert_eq!(pick([a.clone(), None]).unwrap().2, 0);
        assert_eq!(
            pick([Some((vars(&[]), 0)), Some((vars(&[]), 255))])
                .unwrap()
                .2,
            0
        );
        assert!(pick([None, None]).is_none());
    }
}
