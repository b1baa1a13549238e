//! Ed25519 keys in the standard containers OpenSSL and HSM/KMS tools use:
//! PKCS#8 (`-----BEGIN PRIVATE KEY-----`, RFC 8410) for secret keys and
//! SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`) for public keys, and
//! the base64 they are written in. Only the fixed Ed25519 encodings are
//! accepted (no general ASN.1 parser). Pure.
//!
//! Never does: files, clocks, threads, processes, network.

/// PKCS#8 v1 Ed25519 private key, up to the 32-byte seed (RFC 8410 §7).
#[cfg(any(feature = "host", test))]
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// SubjectPublicKeyInfo for an Ed25519 public key, up to the 32-byte key.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The DER inside a PEM block with `label`, if the text is one.
pub(crate) fn pem_block(text: &str, label: &str) -> Option<Result<Vec<u8>, String>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = text[start..].find(&end)? + start;
    Some(base64_decode(&text[start..stop]))
}

/// The seed of an Ed25519 PKCS#8 private key (v1, or v2 with the public key).
#[cfg(any(feature = "host", test))]
pub(crate) fn seed_from_pkcs8(der: &[u8]) -> Result<[u8; 32], String> {
    // v2 (RFC 5958, "OneAsymmetricKey") has version 1 and a longer outer length
    let v1 = der.len() == 48 && der[..16] == PKCS8_PREFIX;
    let v2 = der.len() > 48
        && der[0] == 0x30
        && der[2..5] == [0x02, 0x01, 0x01]
        && der[5..16] == PKCS8_PREFIX[5..16];
    if !(v1 || v2) {
        return Err("not an Ed25519 PKCS#8 private key".into());
    }
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&der[16..48]);
    Ok(seed)
}

/// The key of an Ed25519 SubjectPublicKeyInfo.
pub(crate) fn key_from_spki(der: &[u8]) -> Result<[u8; 32], String> {
    if der.len() != 44 || der[..12] != SPKI_PREFIX {
        return Err("not an Ed25519 public key (SubjectPublicKeyInfo)".into());
    }
    let mut k = [0u8; 32];
    k.copy_from_slice(&der[12..]);
    Ok(k)
}

#[cfg(any(feature = "host", test))]
pub(crate) fn pkcs8_pem(seed: &[u8; 32]) -> String {
    let mut der = PKCS8_PREFIX.to_vec();
    der.extend_from_slice(seed);
    pem("PRIVATE KEY", &der)
}

#[cfg(any(feature = "host", test))]
pub(crate) fn spki_pem(key: &[u8; 32]) -> String {
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(key);
    pem("PUBLIC KEY", &der)
}

#[cfg(any(feature = "host", test))]
fn pem(label: &str, der: &[u8]) -> String {
    let b = base64_encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub(crate) fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let mut acc = 0u32;
        for (i, &b) in chunk.iter().enumerate() {
            acc |= (b as u32) << (16 - 8 * i);
        }
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((acc >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decode standard base64 (with or without padding, whitespace ignored).
pub(crate) fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let clean: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let data = clean
        .strip_suffix(b"==")
        .or_else(|| clean.strip_suffix(b"="))
        .unwrap_or(&clean);
    if data.len() % 4 == 1 || (data.len() != clean.len() && clean.len() % 4 != 0) {
        return Err("bad base64 length".into());
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    for chunk in data.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = val(c).ok_or_else(|| format!("bad base64 character {:?}", c as char))?;
            acc |= v << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for n in 0..70usize {
            let d: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&d)).unwrap(), d, "{n}");
        }
        assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
    }

    #[test]
    fn pkcs8_and_spki_round_trip_and_refuse_others() {
        let seed = [7u8; 32];
        let pem = pkcs8_pem(&seed);
        let der = pem_block(&pem, "PRIVATE KEY").unwrap().unwrap();
        assert_eq!(seed_from_pkcs8(&der).unwrap(), seed);
        let pubpem = spki_pem(&[9u8; 32]);
        let der = pem_block(&pubpem, "PUBLIC KEY").unwrap().unwrap();
        assert_eq!(key_from_spki(&der).unwrap(), [9u8; 32]);
        // an RSA or EC key (other OID) is refused
        let mut other = PKCS8_PREFIX.to_vec();
        other[11] = 0x71; // 1.3.101.113 is Ed448
        other.extend_from_slice(&seed);
        assert!(seed_from_pkcs8(&other).is_err());
        assert!(pem_block("no pem here", "PRIVATE KEY").is_none());
    }
}
