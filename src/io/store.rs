//! Durable storage of the device record: two copies (`state.json` and
//! `state.1.json`), each written tmp + fsync + rename + fsync(dir), both on
//! every save, so a crash leaves at least one copy of the newest or the
//! previous record and one corrupt copy never loses the floor (which copy
//! wins is `update::persist::pick`). Mode 0600. An exclusive lock file
//! serialises ferry processes.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::error::Error;
use crate::update::engine::RecordStore;
use crate::update::persist::{self, Device};

pub(crate) const STATE_FILE: &str = "state.json";
pub(crate) const STATE_COPY: &str = "state.1.json";

pub(crate) struct Store {
    dir: PathBuf,
    generation: u64,
    _lock: Option<nix::fcntl::Flock<File>>,
}

impl Store {
    /// Open (creating) the state directory and take the lock; fails at once
    /// if another ferry holds it.
    pub(crate) fn open(dir: &Path) -> Result<Store, Error> {
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
                Error::Busy(format!(
                    "another ferry process holds {} ({e}); if the daemon runs, use `ferry ctl`",
                    lp.display()
                ))
            })?;
        Ok(Store {
            dir: dir.into(),
            generation: 0,
            _lock: Some(lock),
        })
    }

    /// For readers (`status`): no lock, nothing created.
    pub(crate) fn open_readonly(dir: &Path) -> Store {
        Store {
            dir: dir.into(),
            generation: 0,
            _lock: None,
        }
    }

    fn copies(&self) -> [PathBuf; 2] {
        [self.dir.join(STATE_FILE), self.dir.join(STATE_COPY)]
    }
}

impl RecordStore for Store {
    /// The newest intact record, or `None` on a device that has none yet.
    fn load(&mut self) -> Result<Option<Device>, Error> {
        let mut raw: [Option<Vec<u8>>; 2] = [None, None];
        for (i, p) in self.copies().iter().enumerate() {
            raw[i] = match std::fs::read(p) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    warn!(path = %p.display(), error = %e, "record copy unreadable");
                    Some(Vec::new())
                }
            };
        }
        match persist::pick([raw[0].as_deref(), raw[1].as_deref()]) {
            Ok(Some(l)) => {
                for (i, why) in &l.damaged {
                    warn!(copy = %self.copies()[*i].display(), error = %why, "record copy damaged; the next write repairs it");
                }
                self.generation = l.generation;
                Ok(Some(l.device))
            }
            Ok(None) => Ok(None),
            Err(why) => Err(Error::State(format!(
                "both copies of the device record in {} are damaged ({why}); nothing was changed: \
                 run `ferry recover-state` to rebuild it from the bootloader environment (keeps the rollback floor)",
                self.dir.display()
            ))),
        }
    }

    fn save(&mut self, d: &Device) -> Result<(), Error> {
        let g = self.generation + 1;
        let bytes = d.encode_copy(g);
        let copies = self.copies();
        for i in persist::write_order(g) {
            write_durable(&copies[i], &bytes)?;
        }
        self.generation = g;
        Ok(())
    }
}

/// tmp + fsync + rename + fsync(dir).
pub(crate) fn write_durable(path: &Path, data: &[u8]) -> Result<(), Error> {
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
