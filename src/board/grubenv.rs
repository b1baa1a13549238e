//! GRUB's environment block (`grubenv`): a 1024-byte text file starting with
//! "# GRUB Environment Block", `name=value` lines, padded with '#'. Pure codec.

use super::ubootenv::Vars;

const SIG: &str = "# GRUB Environment Block\n";
pub(crate) const SIZE: usize = 1024;

pub fn decode(b: &[u8]) -> Result<Vars, String> {
    if b.len() != SIZE {
        return Err(format!("grubenv is {} bytes, expected {SIZE}", b.len()));
    }
    let s = std::str::from_utf8(b).map_err(|_| "grubenv is not UTF-8".to_string())?;
    let body = s.strip_prefix(SIG).ok_or("grubenv has no GRUB signature")?;
    let mut vars = Vars::new();
    for line in body.split('\n') {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').ok_or("grubenv line without '='")?;
        let mut val = String::new();
        let mut it = v.chars();
        while let Some(c) = it.next() {
            match (c, c == '\\') {
                (_, true) => match it.next() {
                    Some('n') => val.push('\n'),
                    Some(o) => val.push(o),
                    None => {}
                },
                (c, false) => val.push(c),
            }
        }
        vars.insert(k.to_string(), val);
    }
    Ok(vars)
}

pub fn encode(vars: &Vars) -> Result<Vec<u8>, String> {
    let mut s = String::from(SIG);
    for (k, v) in vars {
        if k.is_empty() || k.contains(['=', '\n', '#']) {
            return Err(format!("invalid grubenv name {k:?}"));
        }
        s.push_str(k);
        s.push('=');
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('\n');
    }
    if s.len() > SIZE {
        return Err("grubenv does not fit in 1024 bytes".into());
    }
    let mut b = s.into_bytes();
    b.resize(SIZE, b'#');
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_escapes() {
        let mut v = Vars::new();
        v.insert("ORDER".into(), "A B".into());
        v.insert("weird".into(), "a\\b\nc".into());
        let b = encode(&v).unwrap();
        assert_eq!(b.len(), SIZE);
        assert!(b.ends_with(b"###"));
        assert_eq!(decode(&b).unwrap(), v);
        assert!(decode(&b[..1000]).is_err());
    }
}
