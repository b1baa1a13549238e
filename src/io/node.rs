//! The device at run time: configuration, board, disk, bootloader backend,
//! persisted record and booted slot, and `apply`, which runs one event
//! through the state machine, carries out its bootloader actions, then
//! persists the record. Reboots are returned to the caller.

use tracing::{info, warn};

use super::config::{slot_from_cmdline, Config};
use super::disk::Disk;
use super::store::Store;
use crate::board::backend::{for_board, BootControl};
use crate::board::bootenv::BootState;
use crate::board::{Board, Slot};
use crate::error::Error;
use crate::update::machine::{self, Action, Event, SlotStatus};
use crate::update::persist::Device;

pub struct Node {
    pub cfg: Config,
    pub board: Board,
    pub disk: Disk,
    pub boot: Box<dyn BootControl>,
    pub store: Store,
    pub dev: Device,
    pub booted: Slot,
}

impl Node {
    /// Open everything and deliver this boot's `Booted` event if it is new.
    pub fn open(cfg: Config, writable: bool) -> Result<Node, Error> {
        let (board, _) = Board::load(&cfg.board)?;
        let disk = Disk::open(&cfg.disk, writable)?;
        let boot = for_board(&board, &disk);
        let store = if writable {
            Store::open(&cfg.state_dir)?
        } else {
            Store::open_readonly(&cfg.state_dir)
        };
        let cmdline = std::fs::read_to_string(&cfg.cmdline)
            .map_err(|e| Error::io("read kernel command line", &cfg.cmdline, e))?;
        let booted = slot_from_cmdline(&cmdline).ok_or_else(|| {
            Error::Usage(format!("{} has no ferry.slot=a|b", cfg.cmdline.display()))
        })?;
        let dev = match store.load()? {
            Some(d) => d,
            None => {
                // A device without a record: the slot we booted is the good one.
                let mut d = Device::default();
                d.slots[booted.index()].status = SlotStatus::Good;
                d
            }
        };
        let mut node = Node {
            cfg,
            board,
            disk,
            boot,
            store,
            dev,
            booted,
        };
        if writable && node.boot.repair()? {
            warn!("a damaged bootloader environment copy was rewritten from the intact one");
        }
        let boot_id = std::fs::read_to_string(&node.cfg.boot_id)
            .map(|s| s.trim().to_string())
            .ok();
        if boot_id.is_some() && boot_id != node.dev.boot_id {
            node.dev.boot_id = boot_id;
            if writable {
                let acts = node.apply(Event::Booted { slot: booted })?;
                if acts.contains(&Action::Reboot) {
                    warn!("boot event asked for a reboot; ignored");
                }
            } else if let Ok((next, acts)) =
                machine::step(node.dev.state.clone(), Event::Booted { slot: booted })
            {
                // Read-only view (status): show what the next writer will record.
                node.dev.advance(next, &acts);
            }
        }
        Ok(node)
    }

    /// Run an event: bootloader actions first, then the durable record.
    pub fn apply(&mut self, event: Event) -> Result<Vec<Action>, Error> {
        let ev = event.name();
        let (next, actions) =
            machine::step(self.dev.state.clone(), event).map_err(|e| Error::InvalidTransition {
                state: e.state,
                event: e.event.to_string(),
            })?;
        let mut bs: Option<BootState> = None;
        for a in &actions {
            let cur = match bs.take() {
                Some(b) => b,
                None => self.boot.load()?,
            };
            bs = Some(match a {
                Action::InvalidateBoot(s) => cur.invalidate(*s),
                Action::ArmTrial(s) => cur.arm_trial(*s, self.board.bootloader.attempts),
                Action::CommitBoot(s) => cur.commit(*s),
                _ => cur,
            });
        }
        if actions.iter().any(|a| {
            matches!(
                a,
                Action::InvalidateBoot(_) | Action::ArmTrial(_) | Action::CommitBoot(_)
            )
        }) {
            if let Some(b) = &bs {
                self.boot.store(b)?;
            }
        }
        if self.dev.state == next && actions.is_empty() {
            tracing::debug!(event = ev, state = %next, "no transition");
        } else {
            info!(event = ev, from = %self.dev.state, to = %next, "state transition");
        }
        self.dev.advance(next, &actions);
        self.store.save(&self.dev)?;
        Ok(actions)
    }

    pub fn save(&self) -> Result<(), Error> {
        self.store.save(&self.dev)
    }

    /// Reboot as configured (after syncing), with the backend's argument.
    pub fn reboot(&mut self) -> Result<(), Error> {
        let st = self.boot.load()?;
        let arg = self.boot.reboot_arg(&st);
        if self.cfg.reboot == "record" {
            let p = self.cfg.state_dir.join("reboot-requested");
            std::fs::write(&p, arg.unwrap_or_default() + "\n")
                .map_err(|e| Error::io("record reboot", &p, e))?;
            info!(path = %p.display(), "reboot recorded (reboot = \"record\")");
            return Ok(());
        }
        info!("rebooting");
        nix::unistd::sync();
        let err = match arg {
            Some(a) => reboot_with_arg(&a),
            None => nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT)
                .err()
                .unwrap_or(nix::errno::Errno::UnknownErrno),
        };
        Err(Error::io("reboot", "reboot(2)", err.into()))
    }
}

fn reboot_with_arg(arg: &str) -> nix::errno::Errno {
    use nix::libc;
    let Ok(c) = std::ffi::CString::new(arg) else {
        return nix::errno::Errno::EINVAL;
    };
    // SAFETY: reboot(2) with RESTART2 reads a NUL-terminated string argument.
    let r = unsafe {
        libc::syscall(
            libc::SYS_reboot,
            libc::LINUX_REBOOT_MAGIC1,
            libc::LINUX_REBOOT_MAGIC2,
            libc::LINUX_REBOOT_CMD_RESTART2,
            c.as_ptr(),
        )
    };
    if r == 0 {
        nix::errno::Errno::UnknownErrno
    } else {
        nix::errno::Errno::last()
    }
}
