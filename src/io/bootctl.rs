//! Bootloader backends: load and store a [`BootState`] where each bootloader
//! keeps it. One trait, one implementation per mechanism; every store is one
//! write of all variables of a change.

use crate::board::bootenv::BootState;
use crate::board::ubootenv::{self, Vars};
use crate::board::{grubenv, rpi, BackendKind, Board, EnvLocation, Slot};
use crate::error::Error;
use crate::io::disk::{fat_read, fat_write, Disk};
use crate::update::engine::BootEnv;

/// A bootloader backend: the engine's [`BootEnv`] plus what the CLI shows.
pub trait BootControl: BootEnv {
    /// Raw variables for display (U-Boot/GRUB); empty for others.
    fn vars(&mut self) -> Result<Vars, Error>;
    /// Argument for reboot(2) when a trial is armed (`0 tryboot` on the Pi).
    fn reboot_arg(&self, _st: &BootState) -> Option<String> {
        None
    }
}

impl BootEnv for Box<dyn BootControl> {
    fn load(&mut self) -> Result<Option<BootState>, Error> {
        (**self).load()
    }
    fn store(&mut self, st: &BootState) -> Result<(), Error> {
        (**self).store(st)
    }
    fn repair(&mut self) -> Result<bool, Error> {
        (**self).repair()
    }
    fn normalize(&self, st: BootState) -> BootState {
        (**self).normalize(st)
    }
}

fn boot_err(what: impl std::fmt::Display) -> Error {
    Error::Boot(what.to_string())
}

/// The backend the board names, on `disk`.
pub fn for_board(board: &Board, disk: &Disk) -> Box<dyn BootControl> {
    let store = EnvStore {
        disk: disk.clone(),
        loc: board.bootloader.env.clone(),
    };
    match board.bootloader.backend {
        BackendKind::UBoot => Box::new(VarBackend {
            store,
            kind: VarKind::UBoot,
        }),
        BackendKind::Grub => Box::new(VarBackend {
            store,
            kind: VarKind::Grub,
        }),
        BackendKind::RpiTryboot => {
            let part = |s: Slot| {
                board
                    .slot_partition(s, "kernel")
                    .and_then(|p| board.part_number(&p.name))
                    .unwrap_or(0)
            };
            Box::new(RpiBackend {
                store,
                parts: [part(Slot::A), part(Slot::B)],
            })
        }
    }
}

/// Raw access to the bytes of an environment, wherever it lives.
pub(crate) struct EnvStore {
    disk: Disk,
    loc: EnvLocation,
}

impl EnvStore {
    /// All stored copies (one, or two for redundant layouts); `None` = absent.
    fn read_copies(&self) -> Result<Vec<Option<Vec<u8>>>, Error> {
        match &self.loc {
            EnvLocation::File {
                partition, file, ..
            } => {
                let mut out = Vec::new();
                for name in [file.clone(), format!("{file}.redund")] {
                    let w = self.disk.window(partition)?;
                    out.push(
                        fat_read(w, &name)
                            .map_err(|e| boot_err(format!("read {partition}:{name}: {e}")))?,
                    );
                }
                Ok(out)
            }
            EnvLocation::Raw {
                offset,
                size,
                redundant_offset,
            } => {
                let mut out = Vec::new();
                for off in std::iter::once(*offset).chain(*redundant_offset) {
                    let mut b = vec![0u8; *size];
                    self.disk.read_at(&mut b, off)?;
                    out.push(Some(b));
                }
                Ok(out)
            }
        }
    }

    /// Write copy `index`. File layouts write the redundant file first, then
    /// the primary, so a torn write always leaves one intact new-or-old copy.
    fn write_copy(&self, index: usize, data: &[u8]) -> Result<(), Error> {
        match &self.loc {
            EnvLocation::File {
                partition, file, ..
            } => {
                let name = if index == 0 {
                    file.clone()
                } else {
                    format!("{file}.redund")
                };
                let w = self.disk.window(partition)?;
                fat_write(w, &name, data)
                    .map_err(|e| boot_err(format!("write {partition}:{name}: {e}")))?;
                self.disk.sync()
            }
            EnvLocation::Raw {
                offset,
                redundant_offset,
                ..
            } => {
                let off = if index == 0 {
                    *offset
                } else {
                    redundant_offset.unwrap_or(*offset)
                };
                self.disk.write_at(data, off)?;
                self.disk.sync()
            }
        }
    }

    fn size(&self) -> usize {
        match &self.loc {
            EnvLocation::File { size, .. } | EnvLocation::Raw { size, .. } => *size,
        }
    }

    fn raw_redundant(&self) -> bool {
        matches!(
            self.loc,
            EnvLocation::Raw {
                redundant_offset: Some(_),
                ..
            }
        )
    }
}

#[derive(Clone, Copy)]
enum VarKind {
    UBoot,
    Grub,
}

/// U-Boot and GRUB: the boot state as environment variables.
struct VarBackend {
    store: EnvStore,
    kind: VarKind,
}

impl VarBackend {
    /// Current vars and, for raw redundant layouts, (flag, index of current
    /// copy); `None` when no copy is valid (the caller must not guess).
    fn current(&self) -> Result<Option<(Vars, u8, usize)>, Error> {
        let copies = self.store.read_copies()?;
        Ok(match self.kind {
            VarKind::Grub => copies
                .into_iter()
                .flatten()
                .find_map(|b| grubenv::decode(&b).ok())
                .map(|v| (v, 0, 0)),
            VarKind::UBoot if self.store.raw_redundant() => {
                let dec =
                    |c: &Option<Vec<u8>>| c.as_deref().and_then(|b| ubootenv::decode(b, true));
                let pair = [dec(&copies[0]), copies.get(1).and_then(dec)];
                ubootenv::pick(pair)
            }
            // File layout: primary first, then the backup written alongside
            // it, as the boot script reads them.
            VarKind::UBoot => copies
                .iter()
                .find_map(|c| c.as_deref().and_then(|b| ubootenv::decode(b, false)))
                .map(|(v, _)| (v, 0, 0)),
        })
    }
}

impl BootControl for VarBackend {
    fn vars(&mut self) -> Result<Vars, Error> {
        Ok(self.current()?.map(|c| c.0).unwrap_or_default())
    }
}

impl BootEnv for VarBackend {
    fn repair(&mut self) -> Result<bool, Error> {
        if !matches!(self.kind, VarKind::UBoot) || self.store.raw_redundant() {
            return Ok(false); // raw redundant copies heal on the next write by design
        }
        let copies = self.store.read_copies()?;
        let valid: Vec<bool> = copies
            .iter()
            .map(|c| {
                c.as_deref()
                    .is_some_and(|b| ubootenv::decode(b, false).is_some())
            })
            .collect();
        match (valid.first().copied(), valid.get(1).copied()) {
            (Some(true), Some(false)) | (Some(false), Some(true)) => {
                let good = if valid[0] { 0 } else { 1 };
                let Some(Some(bytes)) = copies.into_iter().nth(good) else {
                    return Ok(false);
                };
                self.store.write_copy(1 - good, &bytes)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn load(&mut self) -> Result<Option<BootState>, Error> {
        let Some((v, _, _)) = self.current()? else {
            return Ok(None);
        };
        match BootState::from_vars(&v) {
            Ok(st) => Ok(Some(st)),
            Err(why) => {
                tracing::warn!(error = %why, "bootloader environment has unusable boot variables");
                Ok(None)
            }
        }
    }

    fn store(&mut self, st: &BootState) -> Result<(), Error> {
        let (base, flag, idx) = self.current()?.unwrap_or((Vars::new(), 0, 1));
        let vars = st.to_vars(&base);
        match self.kind {
            VarKind::Grub => {
                let b = grubenv::encode(&vars).map_err(boot_err)?;
                self.store.write_copy(1, &b)?;
                self.store.write_copy(0, &b)
            }
            VarKind::UBoot if self.store.raw_redundant() => {
                let b = ubootenv::encode(&vars, self.store.size(), true, flag.wrapping_add(1))
                    .map_err(boot_err)?;
                self.store.write_copy(1 - idx, &b)
            }
            VarKind::UBoot => {
                let b = ubootenv::encode(&vars, self.store.size(), false, 0).map_err(boot_err)?;
                self.store.write_copy(1, &b)?;
                self.store.write_copy(0, &b)
            }
        }
    }
}

/// Raspberry Pi firmware tryboot via autoboot.txt.
struct RpiBackend {
    store: EnvStore,
    parts: [usize; 2],
}

impl RpiBackend {
    fn decode(&self, text: &str) -> Result<BootState, String> {
        let parts = self.parts;
        rpi::decode(text, |n| {
            [Slot::A, Slot::B]
                .into_iter()
                .find(|s| parts[s.index()] == n)
        })
    }
}

impl BootEnv for RpiBackend {
    fn load(&mut self) -> Result<Option<BootState>, Error> {
        let copies = self.store.read_copies()?;
        let Some(Some(b)) = copies.into_iter().next() else {
            return Ok(None);
        };
        let Ok(text) = String::from_utf8(b) else {
            tracing::warn!("autoboot.txt is not UTF-8");
            return Ok(None);
        };
        match self.decode(&text) {
            Ok(st) => Ok(Some(st)),
            Err(why) => {
                tracing::warn!(error = %why, "autoboot.txt is unusable");
                Ok(None)
            }
        }
    }

    fn store(&mut self, st: &BootState) -> Result<(), Error> {
        let parts = self.parts;
        let text = rpi::encode(st, |s| parts[s.index()]);
        self.store.write_copy(0, text.as_bytes())
    }

    /// autoboot.txt holds a committed and a tryboot partition only.
    fn normalize(&self, st: BootState) -> BootState {
        let parts = self.parts;
        self.decode(&rpi::encode(&st, |s| parts[s.index()]))
            .unwrap_or(st)
    }
}

impl BootControl for RpiBackend {
    fn vars(&mut self) -> Result<Vars, Error> {
        Ok(Vars::new())
    }

    fn reboot_arg(&self, st: &BootState) -> Option<String> {
        st.trial.map(|_| "0 tryboot".to_string())
    }
}
