//! `ferry key generate NAME`: a new ed25519 key pair as NAME.key (0600,
//! never overwritten) and NAME.pub.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use crate::bundle::format::hex;
use crate::bundle::keys::{key_id, SecretKey};
use crate::error::Error;

pub(super) fn generate(name: &str, dir: &Path) -> Result<(), Error> {
    let base = Path::new(name)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if base.is_empty() || !crate::bundle::manifest::safe_name(&base) {
        return Err(Error::Usage(format!(
            "key name {name:?} must be letters, digits, '-', '_' or '.'"
        )));
    }
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| Error::Key {
        path: dir.into(),
        detail: format!("no randomness: {e}"),
    })?;
    let sk = SecretKey::from_seed(&base, seed);
    let key_path = dir.join(format!("{base}.key"));
    let pub_path = dir.join(format!("{base}.pub"));
    if pub_path.exists() {
        return Err(Error::Usage(format!(
            "{} already exists; refusing to overwrite",
            pub_path.display()
        )));
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::Usage(format!(
                "{} already exists; refusing to overwrite",
                key_path.display()
            )),
            _ => Error::io("create key", &key_path, e),
        })?;
    f.write_all(sk.encode().as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("write key", &key_path, e))?;
    std::fs::write(&pub_path, sk.public().encode())
        .map_err(|e| Error::io("write key", &pub_path, e))?;
    println!(
        "{}\t{}\t{}",
        hex(&key_id(&sk.public().key)),
        key_path.display(),
        pub_path.display()
    );
    Ok(())
}

/// `ferry key export FILE`: the key as PEM on stdout.
pub(super) fn export(file: &Path) -> Result<(), Error> {
    if let Ok(k) = crate::io::keyfiles::read_public(file) {
        print!("{}", crate::bundle::pem::spki_pem(k.key.as_bytes()));
        return Ok(());
    }
    let k = crate::io::keyfiles::read_secret(file)?;
    print!("{}", crate::bundle::pem::pkcs8_pem(&k.key.to_bytes()));
    Ok(())
}
