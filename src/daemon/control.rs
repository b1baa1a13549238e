//! The local control API: a Unix socket (mode 0600) taking one JSON request
//! per line and answering one JSON line. Peers must be root or the daemon's
//! own user (SO_PEERCRED). Requests: status, progress, check-now, pause,
//! resume, install {url}.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::json;
use tracing::warn;

use super::Shared;
use crate::error::Error;

pub fn bind(path: &Path) -> Result<UnixListener, Error> {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).map_err(|e| Error::io("bind control socket", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("chmod control socket", path, e))?;
    Ok(l)
}

pub fn serve(l: UnixListener, shared: Arc<Shared>) {
    for conn in l.incoming() {
        let Ok(s) = conn else { continue };
        let shared = shared.clone();
        std::thread::spawn(move || {
            if let Err(e) = handle(s, &shared) {
                warn!(error = %e, "control connection failed");
            }
        });
    }
}

fn peer_allowed(s: &UnixStream) -> bool {
    match nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(c) => c.uid() == 0 || c.uid() == nix::unistd::geteuid().as_raw(),
        Err(_) => false,
    }
}

fn handle(s: UnixStream, shared: &Shared) -> std::io::Result<()> {
    let mut w = s.try_clone()?;
    if !peer_allowed(&s) {
        writeln!(
            w,
            "{}",
            json!({"ok": false, "error": "permission denied: root only"})
        )?;
        return Ok(());
    }
    let r = BufReader::new(s.take(64 << 10));
    for line in r.lines() {
        let line = line?;
        let req: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                writeln!(
                    w,
                    "{}",
                    json!({"ok": false, "error": format!("bad request: {e}")})
                )?;
                continue;
            }
        };
        let resp = match req["cmd"].as_str().unwrap_or("") {
            "status" => json!({"ok": true, "status": shared.status()}),
            "progress" => {
                json!({"ok": true, "phase": shared.phase(), "received": shared.received.load(Ordering::Relaxed)})
            }
            "check-now" => {
                shared.wake(|w| w.check_now = true);
                json!({"ok": true})
            }
            "pause" => {
                shared.paused.store(true, Ordering::SeqCst);
                json!({"ok": true, "paused": true})
            }
            "resume" => {
                shared.paused.store(false, Ordering::SeqCst);
                shared.wake(|w| w.check_now = true);
                json!({"ok": true, "paused": false})
            }
            "install" => match req["url"].as_str() {
                Some(u) if crate::net::url::Url::parse(u).is_ok() => {
                    let u = u.to_string();
                    shared.wake(move |w| w.install_url = Some(u));
                    json!({"ok": true})
                }
                _ => json!({"ok": false, "error": "install needs a valid http(s) url"}),
            },
            other => json!({"ok": false, "error": format!("unknown command {other:?}")}),
        };
        writeln!(w, "{resp}")?;
    }
    Ok(())
}

use std::io::Read as _;

/// Client side for `ferry ctl`: send one request, return the answer.
pub fn request(path: &Path, req: &serde_json::Value) -> Result<serde_json::Value, Error> {
    let mut s =
        UnixStream::connect(path).map_err(|e| Error::io("connect to the daemon", path, e))?;
    writeln!(s, "{req}").map_err(|e| Error::io("write to the daemon", path, e))?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| Error::io("read from the daemon", path, e))?;
    serde_json::from_str(&line)
        .map_err(|e| Error::Usage(format!("bad answer from the daemon: {e}")))
}
