//! Liveness for the init and the hardware: `sd_notify` (READY, WATCHDOG,
//! STOPPING) when systemd supervises the daemon, and `/dev/watchdog` when
//! configured. Both are fed only while the daemon's main loop shows signs of
//! life (it is waiting for its next poll, it made progress recently, or
//! bytes are arriving), so a hung main loop resets the board; a clean exit
//! (SIGTERM, SIGINT) writes the magic close character `V` first, so
//! stopping the daemon does not.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// Signs of life from the main loop.
#[derive(Debug)]
pub(crate) struct Liveness {
    start: Instant,
    /// Milliseconds since `start` of the last sign of life.
    beat: AtomicU64,
    /// The main loop is parked until its next poll (alive by definition).
    waiting: AtomicBool,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            start: Instant::now(),
            beat: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
        }
    }
}

impl Liveness {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
    pub(crate) fn beat(&self) {
        self.beat.store(self.now_ms(), Ordering::SeqCst);
    }
    pub(crate) fn set_waiting(&self, w: bool) {
        self.beat();
        self.waiting.store(w, Ordering::SeqCst);
    }
    /// Whether to feed the watchdogs now.
    fn alive(&self, stall: Duration) -> bool {
        alive(
            self.waiting.load(Ordering::SeqCst),
            self.now_ms()
                .saturating_sub(self.beat.load(Ordering::SeqCst)),
            stall,
        )
    }
}

/// The decision, pure: waiting, or the last sign of life within `stall`.
fn alive(waiting: bool, since_beat_ms: u64, stall: Duration) -> bool {
    waiting || u128::from(since_beat_ms) < stall.as_millis()
}

/// `$NOTIFY_SOCKET`, if systemd gave one.
struct Notify {
    sock: std::os::unix::net::UnixDatagram,
    addr: std::os::unix::net::SocketAddr,
}

impl Notify {
    fn from_env() -> Option<Notify> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                std::os::unix::net::SocketAddr::from_abstract_name(name).ok()?
            }
            None => {
                std::os::unix::net::SocketAddr::from_pathname(std::path::Path::new(&path)).ok()?
            }
        };
        let sock = std::os::unix::net::UnixDatagram::unbound().ok()?;
        // never block on a reader that does not keep up (a full queue):
        // a lost WATCHDOG=1 costs less than a stuck daemon
        sock.set_nonblocking(true).ok()?;
        Some(Notify { sock, addr })
    }
    fn send(&self, msg: &str) {
        match self.sock.send_to_addr(msg.as_bytes(), &self.addr) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tracing::debug!(msg, "sd_notify queue full; message dropped")
            }
            Err(e) => warn!(error = %e, "sd_notify failed"),
        }
    }
}

/// The hardware watchdog device, held open for the daemon's life.
struct Device {
    file: std::fs::File,
    path: std::path::PathBuf,
}

/// Started once by the daemon: the feeding thread and the signal thread.
pub(crate) struct Supervisor {
    notify: Option<Arc<Notify>>,
}

impl Supervisor {
    /// Block SIGTERM/SIGINT in this thread (and every thread it spawns
    /// later), open the watchdog device, and start the threads. Call before
    /// any other thread is spawned.
    pub(crate) fn start(
        device: Option<&std::path::Path>,
        stall: Duration,
        live: Arc<Liveness>,
        received: Arc<AtomicU64>,
    ) -> Supervisor {
        use nix::sys::signal::{SigSet, Signal};
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGINT);
        if let Err(e) = set.thread_block() {
            warn!(error = %e, "cannot block SIGTERM; a stop will not close the watchdog cleanly");
        }
        let notify = Notify::from_env().map(Arc::new);
        // systemd's WatchdogSec: feed at half the interval; the device every 5 s
        let every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|_| notify.is_some())
            .map(|us| {
                Duration::from_micros(us / 2)
                    .clamp(Duration::from_millis(100), Duration::from_secs(5))
            })
            .unwrap_or(Duration::from_secs(5));
        let dev = device.and_then(|p| match std::fs::OpenOptions::new().write(true).open(p) {
            Ok(file) => Some(Device {
                file,
                path: p.to_path_buf(),
            }),
            Err(e) => {
                warn!(path = %p.display(), error = %e, "watchdog not available");
                None
            }
        });
        let dev = Arc::new(std::sync::Mutex::new(dev));
        {
            let (dev, notify, live) = (dev.clone(), notify.clone(), live.clone());
            let mut seen = received.load(Ordering::SeqCst);
            std::thread::spawn(move || loop {
                // bytes arriving count as life: a long download is not a hang
                let now = received.load(Ordering::SeqCst);
                if now != seen {
                    seen = now;
                    live.beat();
                }
                if live.alive(stall) {
                    if let Ok(mut g) = dev.lock() {
                        if let Some(d) = g.as_mut() {
                            let _ = d.file.write_all(b"\0");
                        }
                    }
                    if let Some(n) = &notify {
                        n.send("WATCHDOG=1");
                    }
                } else {
                    warn!(
                        stall_s = stall.as_secs(),
                        "main loop shows no sign of life; no longer feeding the watchdog"
                    );
                }
                std::thread::sleep(every);
            });
        }
        {
            let (dev, notify) = (dev, notify.clone());
            std::thread::spawn(move || {
                let sig = set.wait();
                info!(signal = ?sig.ok(), "stopping");
                if let Some(n) = &notify {
                    n.send("STOPPING=1");
                }
                if let Ok(mut g) = dev.lock() {
                    if let Some(mut d) = g.take() {
                        // magic close: the driver disarms instead of resetting
                        match d.file.write_all(b"V") {
                            Ok(()) => info!(path = %d.path.display(), "watchdog closed cleanly"),
                            Err(e) => {
                                warn!(path = %d.path.display(), error = %e, "watchdog magic close failed")
                            }
                        }
                    }
                }
                // every durable write is power-cut safe: stopping here is too
                std::process::exit(0);
            });
        }
        Supervisor { notify }
    }

    /// Tell systemd the daemon is up (after its first status exists).
    pub(crate) fn ready(&self) {
        if let Some(n) = &self.notify {
            n.send("READY=1");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fed_only_while_waiting_or_recently_alive() {
        let stall = Duration::from_secs(60);
        assert!(alive(true, 3_600_000, stall));
        assert!(alive(false, 59_999, stall));
        assert!(!alive(false, 60_000, stall));
        assert!(!alive(false, u64::MAX, stall));
    }
}
