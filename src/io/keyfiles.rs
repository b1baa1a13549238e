//! Key files at the edge: reading public and secret keys and keyring
//! directories from disk into the pure types of `bundle::keys`.

use std::path::Path;

#[cfg(feature = "host")]
use crate::bundle::keys::SecretKey;
use crate::bundle::keys::{Keyring, PublicKey};
use crate::error::Error;

/// Load public keys from files and from `*.pub` files in directories.
pub(crate) fn load_keyring(
    files: &[impl AsRef<Path>],
    dirs: &[impl AsRef<Path>],
    threshold: usize,
) -> Result<Keyring, Error> {
    let mut keys = Vec::new();
    for f in files {
        keys.push(read_public(f.as_ref())?);
    }
    for d in dirs {
        let d = d.as_ref();
        let rd = std::fs::read_dir(d).map_err(|e| Error::io("read keyring", d, e))?;
        let mut paths: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "pub"))
        {
            keys.push(read_public(p)?);
        }
    }
    if keys.is_empty() {
        return Err(Error::Usage(
            "no trusted public keys given (--key or --keyring)".into(),
        ));
    }
    Ok(Keyring::new(keys, threshold))
}

/// A public key: ferry's one-line format, or an Ed25519 `PUBLIC KEY` PEM
/// (as `openssl pkey -pubout` writes it).
pub(crate) fn read_public(path: &Path) -> Result<PublicKey, Error> {
    let (mut k, name) = read_key(path, PublicKey::parse, |k: &PublicKey| k.name == "pem")?;
    if let Some(n) = name {
        k.name = n;
    }
    Ok(k)
}

/// Parse a key file; for a PEM (no name inside) also the name from the file.
fn read_key<K>(
    path: &Path,
    parse: fn(&str) -> Result<K, String>,
    unnamed: fn(&K) -> bool,
) -> Result<(K, Option<String>), Error> {
    let text = read_small(path)?;
    let k = parse(&text).map_err(|detail| Error::Key {
        path: path.into(),
        detail,
    })?;
    let name = unnamed(&k).then(|| stem(path));
    Ok((k, name))
}

/// A secret key: ferry's one-line format, or an Ed25519 PKCS#8 `PRIVATE KEY`
/// PEM (as `openssl genpkey -algorithm ed25519` writes it).
#[cfg(feature = "host")]
pub(crate) fn read_secret(path: &Path) -> Result<SecretKey, Error> {
    let (mut k, name) = read_key(path, SecretKey::parse, |k: &SecretKey| k.name == "pem")?;
    if let Some(n) = name {
        k.name = n;
    }
    Ok(k)
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pem".into())
}

/// A signer outside this process (an HSM, a KMS, a PKCS#11 token behind a
/// command): `sh -c CMD` gets the exact bytes to sign on stdin and prints
/// the 64-byte Ed25519 signature on stdout (raw, or as hex). Its signature
/// is checked against `public` before it is used.
#[cfg(feature = "host")]
pub(crate) fn command_signer(
    cmd: String,
    public: PublicKey,
) -> impl FnMut(
    crate::bundle::keys::Context,
    &[u8],
) -> Result<crate::bundle::format::SignatureEntry, Error> {
    move |ctx, doc| {
        use std::io::Write as _;
        let msg = ctx.message(doc);
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| Error::io("run sign command", Path::new("/bin/sh"), e))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&msg)
                .map_err(|e| Error::io("write to sign command", Path::new(&cmd), e))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| Error::io("run sign command", Path::new(&cmd), e))?;
        let key_err = |detail: String| Error::Key {
            path: cmd.clone().into(),
            detail,
        };
        if !out.status.success() {
            return Err(key_err(format!("sign command failed: {}", out.status)));
        }
        let sig: [u8; 64] = match out.stdout.len() {
            64 => out.stdout[..].try_into().unwrap_or([0; 64]),
            _ => crate::bundle::format::unhex::<64>(String::from_utf8_lossy(&out.stdout).trim())
                .ok_or_else(|| {
                    key_err(format!(
                        "sign command printed {} bytes, not a 64-byte signature (raw or hex)",
                        out.stdout.len()
                    ))
                })?,
        };
        let entry = crate::bundle::format::SignatureEntry {
            key_id: public.id(),
            signature: sig,
        };
        Keyring::new(vec![public.clone()], 1)
            .verify(ctx, doc, std::slice::from_ref(&entry))
            .map_err(|_| {
                key_err(
                    "the sign command's signature does not verify with the given public key".into(),
                )
            })?;
        Ok(entry)
    }
}

fn read_small(path: &Path) -> Result<String, Error> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).map_err(|e| Error::io("open key", path, e))?;
    let mut s = String::new();
    f.take(4096)
        .read_to_string(&mut s)
        .map_err(|e| Error::io("read key", path, e))?;
    Ok(s)
}
