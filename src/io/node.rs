//! The device at run time: configuration, board, disk, and the update
//! [`Engine`] over this device's bootloader backend and record store.
//! Reboots are returned to the caller.

use tracing::{info, warn};

use super::config::{slot_from_cmdline, Config};
use super::disk::Disk;
use super::store::Store;
use crate::board::Board;
use crate::error::Error;
use crate::io::bootctl::{for_board, BootControl};
use crate::update::engine::{BootEnv as _, Engine};
use crate::update::machine::{Action, Event};

/// The engine as it runs on a device.
pub(crate) type DeviceEngine = Engine<Box<dyn BootControl>, Store>;

pub(crate) struct Node {
    pub cfg: Config,
    pub board: Board,
    pub disk: Disk,
    pub eng: DeviceEngine,
}

impl Node {
    /// Open everything; when `writable`, deliver this boot's `Booted` event
    /// if it is new and reconcile the bootloader env with the record.
    pub(crate) fn open(cfg: Config, writable: bool) -> Result<Node, Error> {
        let (board, _) = crate::io::boardfile::load(&cfg.board)?;
        let disk = Disk::open(&cfg.disk, writable)?;
        let boot = for_board(&board, &disk);
        let cmdline = std::fs::read_to_string(&cfg.cmdline)
            .map_err(|e| Error::io("read kernel command line", &cfg.cmdline, e))?;
        let booted = slot_from_cmdline(&cmdline).ok_or_else(|| {
            Error::Usage(format!("{} has no ferry.slot=a|b", cfg.cmdline.display()))
        })?;
        let boot_id = std::fs::read_to_string(&cfg.boot_id)
            .map(|s| s.trim().to_string())
            .ok();
        let attempts = board.bootloader.attempts;
        let eng = if writable {
            Engine::open(
                boot,
                Store::open(&cfg.state_dir)?,
                booted,
                boot_id,
                attempts,
            )?
        } else {
            Engine::view(
                Store::open_readonly(&cfg.state_dir),
                boot,
                booted,
                boot_id,
                attempts,
            )?
        };
        Ok(Node {
            cfg,
            board,
            disk,
            eng,
        })
    }

    /// The device's status: one shape for `ferry status --json`, the control
    /// socket and the daemon (which adds its own `paused`).
    pub(crate) fn status_view(&mut self) -> Result<serde_json::Value, Error> {
        use crate::board::Slot;
        use crate::update::engine::BootEnv as _;
        use crate::update::persist::outcome_parts;
        let boot_found = self.eng.env.load()?;
        let boot_readable = boot_found.is_some();
        let boot = boot_found.unwrap_or_default();
        let d = &self.eng.dev;
        let slot_json = |s: Slot| {
            let i = &d.slots[s.index()];
            serde_json::json!({
                "status": i.status.as_str(),
                "version": i.release.as_ref().map(|r| r.version.to_string()),
                "bundle": i.release.as_ref().map(|r| r.digest.to_string()),
                "boot_attempts_left": boot.left[s.index()],
                "bootable": boot.order.contains(&s),
            })
        };
        let last = d.last.as_ref().map(|o| {
            let (kind, slot, version, reason) = outcome_parts(o);
            let version = version.or(d.last_version.as_ref());
            serde_json::json!({"result": kind, "slot": slot.to_string(), "version": version.map(|v| v.to_string()), "error": reason})
        });
        Ok(serde_json::json!({
            "board": self.board.name,
            "booted": self.eng.booted.to_string(),
            "state": d.state.name(),
            "state_detail": d.state.to_string(),
            "slots": {"a": slot_json(Slot::A), "b": slot_json(Slot::B)},
            "boot": {
                "order": boot.order.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "trial": boot.trial.map(|s| s.to_string()),
                "next": boot.next_boot().map(|s| s.to_string()),
            },
            "rollback_floor": d.floor.as_ref().map(|v| v.to_string()),
            "resume": match &d.state {
                crate::update::machine::State::Installing { done, .. } => serde_json::json!({"payload": done.payload, "chunk": done.chunk}),
                _ => serde_json::Value::Null,
            },
            "boot_env_readable": boot_readable,
            "failed_releases": d.failed.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
            "feeds": d.feeds,
            "last": last,
        }))
    }

    /// Run an event: bootloader actions first, then the durable record.
    pub(crate) fn apply(&mut self, event: Event) -> Result<Vec<Action>, Error> {
        self.eng.apply(event)
    }

    pub(crate) fn save(&mut self) -> Result<(), Error> {
        self.eng.save()
    }

    /// Reboot as configured (after syncing), with the backend's argument.
    pub(crate) fn reboot(&mut self) -> Result<(), Error> {
        let st = self.eng.env.load()?.unwrap_or_default();
        let arg = self.eng.env.reboot_arg(&st);
        if self.cfg.reboot == super::config::RebootMode::Record {
            let p = self.cfg.state_dir.join("reboot-requested");
            std::fs::write(&p, arg.unwrap_or_default() + "\n")
                .map_err(|e| Error::io("record reboot", &p, e))?;
            info!(path = %p.display(), "reboot recorded (reboot = \"record\")");
            return Ok(());
        }
        if let Some(cmd) = &self.cfg.reboot_command {
            self.reboot_through_init(cmd, arg.as_deref());
        }
        info!("rebooting directly (reboot(2))");
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

impl Node {
    /// Hand the reboot to the init so services stop in order, and wait for
    /// it to end this process; returns when that did not happen in time.
    fn reboot_through_init(&self, cmd: &[String], arg: Option<&str>) {
        let has_slot = cmd.iter().any(|c| c.contains("{arg}"));
        if arg.is_some() && !has_slot {
            warn!(
                ?arg,
                "reboot_command has no {{arg}} for the firmware's reboot argument; rebooting directly so the trial boot is not lost"
            );
            return;
        }
        let argv: Vec<String> = cmd
            .iter()
            .filter_map(|c| match (c.as_str(), arg) {
                ("{arg}", None) => None,
                (_, a) => Some(c.replace("{arg}", a.unwrap_or(""))),
            })
            .collect();
        let deadline = std::time::Duration::from_secs(self.cfg.reboot_deadline_s);
        info!(command = ?argv, deadline_s = deadline.as_secs(), "rebooting through the init");
        nix::unistd::sync();
        match std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .status()
        {
            Ok(s) if s.success() => {
                std::thread::sleep(deadline);
                warn!(
                    deadline_s = deadline.as_secs(),
                    "the init did not restart the machine in time"
                );
            }
            Ok(s) => warn!(status = %s, "reboot_command failed"),
            Err(e) => warn!(error = %e, "reboot_command could not start"),
        }
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
