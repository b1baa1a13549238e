//! The local control API: a Unix socket (mode 0600) taking one JSON request
//! per line and answering one JSON line. Peers must be root or the daemon's
//! own user (SO_PEERCRED). Requests are one typed enum, [`Request`], shared
//! with `ferry ctl` and `ferry install URL`: status, progress, check-now,
//! pause, resume, install {url, wait}. With `wait`, the answer comes when
//! the install has ended, with ferry's exit code for it.

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

/// One request on the control socket (`{"cmd": "install", "url": ..., "wait": true}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) enum Request {
    Status,
    Progress,
    CheckNow,
    Pause,
    Resume,
    Install {
        url: String,
        /// Answer only when the install has ended, with its outcome.
        #[serde(default)]
        wait: bool,
    },
}

/// How long a waiting install request is answered at the latest.
const INSTALL_WAIT: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

pub(crate) fn bind(path: &Path) -> Result<UnixListener, Error> {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).map_err(|e| Error::io("bind control socket", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("chmod control socket", path, e))?;
    Ok(l)
}

pub(crate) fn serve(l: UnixListener, shared: Arc<Shared>) {
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
        let req: Request = match serde_json::from_str(&line) {
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
        let resp = match req {
            Request::Status => json!({"ok": true, "status": shared.status()}),
            Request::Progress => {
                json!({"ok": true, "phase": shared.phase(), "received": shared.received.load(Ordering::Relaxed)})
            }
            Request::CheckNow => {
                shared.wake(|w| w.check_now = true);
                json!({"ok": true})
            }
            Request::Pause => {
                shared.paused.store(true, Ordering::SeqCst);
                json!({"ok": true, "paused": true})
            }
            Request::Resume => {
                shared.paused.store(false, Ordering::SeqCst);
                shared.wake(|w| w.check_now = true);
                json!({"ok": true, "paused": false})
            }
            Request::Install { url, wait } => match crate::net::url::Url::parse(&url) {
                Err(e) => {
                    json!({"ok": false, "exit_code": 2, "error": format!("install needs a valid http(s) url: {e}")})
                }
                Ok(_) => {
                    let id = shared.request_install(url);
                    if !wait {
                        json!({"ok": true, "id": id})
                    } else {
                        match shared.wait_outcome(id, INSTALL_WAIT) {
                            Some(o) if o.code == 0 => {
                                json!({"ok": true, "exit_code": 0, "message": o.message})
                            }
                            Some(o) => {
                                json!({"ok": false, "exit_code": o.code, "error": o.message})
                            }
                            None => {
                                json!({"ok": false, "exit_code": 61, "error": "the daemon did not finish the install in time"})
                            }
                        }
                    }
                }
            },
        };
        writeln!(w, "{resp}")?;
    }
    Ok(())
}

use std::io::Read as _;

/// Client side for `ferry ctl`: send one request, return the answer.
pub(crate) fn request(path: &Path, req: &Request) -> Result<serde_json::Value, Error> {
    let mut s =
        UnixStream::connect(path).map_err(|e| Error::io("connect to the daemon", path, e))?;
    let line = serde_json::to_string(req)
        .map_err(|e| Error::Internal(format!("encode control request: {e}")))?;
    writeln!(s, "{line}").map_err(|e| Error::io("write to the daemon", path, e))?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| Error::io("read from the daemon", path, e))?;
    serde_json::from_str(&line)
        .map_err(|e| Error::Usage(format!("bad answer from the daemon: {e}")))
}
