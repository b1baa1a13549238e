//! Durable storage of the device record: write to a temporary file, fsync,
//! rename over the old one, fsync the directory. A crash at any point leaves
//! either the old or the new record, never a torn one. Mode 0600. An
//! exclusive lock file serialises ferry processes.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::update::persist::Device;

pub const STATE_FILE: &str = "state.json";

pub struct Store {
    dir: PathBuf,
    _lock: Option<nix::fcntl::Flock<File>>,
}

impl Store {
    /// Open (creating) the state directory and take the lock; fails at once
    /// if another ferry holds it.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create state dir", dir, e))?;
        let lp = dir.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lp)
            .map_err(|e| Error::io("open lock", &lp, e))?;
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| {
                Error::Usage(format!(
                    "another ferry process holds {} ({e})",
                    lp.display()
                ))
            })?;
        Ok(Store {
            dir: dir.into(),
            _lock: Some(lock),
        })
    }

    /// For readers (`status`): no lock, nothing created.
    pub fn open_readonly(dir: &Path) -> Store {
        Store {
            dir: dir.into(),
            _lock: None,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The record, or `None` on a device that has none yet.
    pub fn load(&self) -> Result<Option<Device>, Error> {
        let p = self.path();
        match std::fs::read(&p) {
            Ok(b) => Device::decode(&b)
                .map(Some)
                .map_err(|d| Error::State(format!("{}: {d}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read state", &p, e)),
        }
    }

    pub fn save(&self, d: &Device) -> Result<(), Error> {
        write_durable(&self.path(), &d.encode())
    }
}

/// tmp + fsync + rename + fsync(dir).
pub fn write_durable(path: &Path, data: &[u8]) -> Result<(), Error> {
    super::fault::point("state write");
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut f = File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync dir", dir, e))
}
