//! Key files at the edge: reading public and secret keys and keyring
//! directories from disk into the pure types of `bundle::keys`.

use std::path::Path;

use crate::bundle::keys::{Keyring, PublicKey, SecretKey};
use crate::error::Error;

/// Load public keys from files and from `*.pub` files in directories.
pub fn load_keyring(
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

pub fn read_public(path: &Path) -> Result<PublicKey, Error> {
    let text = read_small(path)?;
    PublicKey::parse(&text).map_err(|detail| Error::Key {
        path: path.into(),
        detail,
    })
}

pub fn read_secret(path: &Path) -> Result<SecretKey, Error> {
    let text = read_small(path)?;
    SecretKey::parse(&text).map_err(|detail| Error::Key {
        path: path.into(),
        detail,
    })
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
