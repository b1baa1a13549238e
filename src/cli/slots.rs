//! `ferry status | install | mark-good | mark-bad | rollback`.

use std::path::Path;

use crate::board::Slot;
use crate::bundle::format::hex;
use crate::bundle::Keyring;
use crate::error::Error;
use crate::io::config::Config;
use crate::io::install;
use crate::io::node::Node;
use crate::update::machine::Event;
use crate::update::persist::outcome_parts;

fn keyring(cfg: &Config) -> Result<Keyring, Error> {
    crate::io::keyfiles::load_keyring(&[] as &[&Path], &[&cfg.keyring], cfg.threshold)
}

pub(super) fn status(config: &Path, json: bool) -> Result<(), Error> {
    let cfg = Config::load(config)?;
    let mut node = Node::open(cfg, false)?;
    let v = node.status_view()?;
    use crate::update::engine::BootEnv as _;
    let boot_found = node.eng.env.load()?;
    let boot_readable = boot_found.is_some();
    let boot = boot_found.unwrap_or_default();
    let d = &node.eng.dev;
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    println!("board    {}", node.board.name);
    println!("booted   slot {}", node.eng.booted);
    println!("state    {}", d.state);
    for s in [Slot::A, Slot::B] {
        let i = &d.slots[s.index()];
        let rel = i
            .release
            .as_ref()
            .map(|r| format!("{} (bundle {})", r.version, &hex(&r.digest.0)[..16]))
            .unwrap_or_else(|| "-".into());
        println!(
            "slot {s}   {:<10} {rel}{}{}",
            i.status.as_str(),
            if boot.order.contains(&s) {
                ""
            } else {
                ", not bootable"
            },
            if boot.trial == Some(s) {
                format!(", trial: {} boot attempts left", boot.left[s.index()])
            } else {
                String::new()
            },
        );
    }
    if !boot_readable {
        println!("boot     environment unreadable (no valid copy): the next ferry command that writes rebuilds it from the record");
    }
    let order: Vec<String> = boot.order.iter().map(|s| s.to_string()).collect();
    println!(
        "boot     order [{}], next boot: {}",
        order.join(" "),
        boot.next_boot()
            .map(|s| s.to_string())
            .unwrap_or("none".into())
    );
    if let Some(f) = &d.floor {
        println!("floor    {f} (no older bundle is accepted)");
    }
    if let Some(o) = &d.last {
        let (kind, slot, version, reason) = outcome_parts(o);
        println!(
            "last     {kind} (slot {slot}{}{})",
            version.map(|v| format!(", {v}")).unwrap_or_default(),
            reason.map(|r| format!(": {r}")).unwrap_or_default()
        );
    }
    Ok(())
}

pub(super) fn install(
    config: &Path,
    file: &Path,
    no_reboot: bool,
    quiet: bool,
) -> Result<(), Error> {
    let cfg = Config::load(config)?;
    let ring = keyring(&cfg)?;
    let as_url = file
        .to_str()
        .filter(|s| s.starts_with("http://") || s.starts_with("https://"))
        .map(String::from);
    if let Some(url) = as_url {
        // the daemon holds the state lock: hand the URL to it when it runs
        // and report its outcome as our own (exit code included)
        if cfg.daemon.socket.exists() {
            use crate::daemon::control::{request, Request};
            let req = Request::Install {
                url: url.clone(),
                wait: true,
            };
            if let Ok(v) = request(&cfg.daemon.socket, &req) {
                if v["ok"] == true {
                    println!(
                        "the running daemon: {}",
                        v["message"].as_str().unwrap_or("installed")
                    );
                    return Ok(());
                }
                return Err(Error::Remote {
                    code: v["exit_code"]
                        .as_u64()
                        .and_then(|c| u8::try_from(c).ok())
                        .unwrap_or(2),
                    message: format!(
                        "the running daemon: {}",
                        v["error"].as_str().unwrap_or("install refused")
                    ),
                });
            }
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| Error::io("start runtime", "tokio", e))?;
        let fc = cfg.feed.clone();
        let opts = crate::net::http::TlsOptions {
            ca: fc.as_ref().map(|f| f.ca.clone()).unwrap_or_default(),
            client_cert: fc.as_ref().and_then(|f| f.client_cert.clone()),
            client_key: fc.as_ref().and_then(|f| f.client_key.clone()),
            allow_http: fc.as_ref().is_some_and(|f| f.allow_http),
            ..Default::default()
        };
        let mut client = crate::net::http::Client::new(&opts).map_err(|e| Error::Net {
            what: "client".into(),
            detail: e.to_string(),
        })?;
        // the configured stall timeout, as the daemon uses it
        if let Some(f) = &fc {
            client.idle_timeout = std::time::Duration::from_secs(f.idle_timeout_s.max(1));
            client.min_rate_bps = f.min_rate_bps;
        }
        let f = crate::daemon::ota::Fetcher {
            rt: rt.handle().clone(),
            client,
            attempts: fc.map_or(6, |f| f.attempts),
            backoff: std::time::Duration::from_millis(500),
            received: Default::default(),
        };
        let mut node = Node::open(cfg, true)?;
        let done = crate::daemon::ota::install_url(&mut node, &f, &url, None, &ring)?;
        print_installed(&done);
        if !no_reboot {
            node.reboot()?;
        }
        return Ok(());
    }
    let mut node = Node::open(cfg, true)?;
    let total = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let bar = super::progress::bar(total, "install", quiet);
    let progress: Option<Box<dyn FnMut(u64)>> = bar
        .clone()
        .map(|b| Box::new(move |n| b.inc(n)) as Box<dyn FnMut(u64)>);
    let mut src = install::FileSource::new(file)?;
    let done = install::install(&mut node, &mut src, &ring, None, progress)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    print_installed(&done);
    if !no_reboot {
        node.reboot()?;
    }
    Ok(())
}

fn print_installed(done: &crate::update::engine::Installed) {
    println!(
        "installed {} into slot {}{}; trial boot armed",
        done.version,
        done.slot,
        done.resumed_from
            .map(|p| format!(" (resumed at payload {} chunk {})", p.payload, p.chunk))
            .unwrap_or_default()
    );
}

pub(super) fn event(config: &Path, ev: Event) -> Result<(), Error> {
    let cfg = Config::load(config)?;
    let mut node = Node::open(cfg, true)?;
    let acts = node.apply(ev)?;
    println!("state: {}", node.eng.dev.state);
    if install::wants_reboot(&acts) {
        node.reboot()?;
    }
    Ok(())
}

pub(super) fn check(config: &Path) -> Result<(), Error> {
    use crate::daemon::{gate, GateOutcome};
    let cfg = Config::load(config)?;
    let mut node = Node::open(cfg, true)?;
    let trial = match &node.eng.dev.state {
        crate::update::machine::State::Trial { slot, release } => (*slot, release.version.clone()),
        other => {
            println!("no trial in progress (state {other}): nothing to check");
            return Ok(());
        }
    };
    match gate(&mut node, None)? {
        Some(GateOutcome::Committed) => {
            println!("health passed: slot {} ({}) committed", trial.0, trial.1);
        }
        Some(GateOutcome::RolledBack { reason, reboot }) => {
            println!(
                "health failed: slot {} ({}) rolled back: {reason}",
                trial.0, trial.1
            );
            if reboot {
                node.reboot()?;
            }
        }
        None => {}
    }
    Ok(())
}

pub(super) fn ctl(config: &Path, cmd: &str, url: Option<String>) -> Result<(), Error> {
    use crate::daemon::control::Request;
    let cfg = Config::load(config)?;
    let mut raw = serde_json::json!({"cmd": cmd});
    if let Some(u) = url {
        raw["url"] = serde_json::Value::String(u);
    }
    let req: Request = serde_json::from_value(raw).map_err(|e| {
        Error::Usage(format!(
            "ctl: unknown command or arguments: {e} (commands: status, progress, check-now, pause, resume, install URL)"
        ))
    })?;
    let v = crate::daemon::control::request(&cfg.daemon.socket, &req)?;
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    if v["ok"] != true {
        return Err(Error::Remote {
            code: v["exit_code"]
                .as_u64()
                .and_then(|c| u8::try_from(c).ok())
                .unwrap_or(2),
            message: v["error"].as_str().unwrap_or("request failed").to_string(),
        });
    }
    Ok(())
}

/// `ferry recover-state`: a new record from what survives outside it.
pub(super) fn recover(config: &Path, floor: Option<semver::Version>) -> Result<(), Error> {
    use crate::update::engine::{BootEnv as _, RecordStore as _};
    let cfg = Config::load(config)?;
    let (board, _) = crate::io::boardfile::load(&cfg.board)?;
    let disk = crate::io::disk::Disk::open(&cfg.disk, true)?;
    let mut env = crate::io::bootctl::for_board(&board, &disk);
    let mut store = crate::io::store::Store::open(&cfg.state_dir)?;
    if let Ok(Some(_)) = store.load() {
        return Err(Error::InvalidTransition {
            state: "a readable device record".into(),
            event: "recover-state".into(),
        });
    }
    let cmdline = std::fs::read_to_string(&cfg.cmdline)
        .map_err(|e| Error::io("read kernel command line", &cfg.cmdline, e))?;
    let booted = crate::io::config::slot_from_cmdline(&cmdline)
        .ok_or_else(|| Error::Usage(format!("{} has no ferry.slot=a|b", cfg.cmdline.display())))?;
    let env_floor = env.load()?.and_then(|st| st.floor);
    let mut dev = crate::update::persist::Device::first_boot(booted);
    dev.slots[booted.other().index()].status = crate::update::machine::SlotStatus::Bad;
    dev.floor = env_floor.clone().max(floor);
    store.save(&dev)?;
    println!(
        "device record rebuilt: slot {booted} committed, slot {} to be reinstalled, rollback floor {}",
        booted.other(),
        dev.floor
            .as_ref()
            .map(|f| f.to_string())
            .unwrap_or_else(|| "none (give --floor)".into())
    );
    // the next writer reconciles the env with this record
    drop(store);
    crate::io::node::Node::open(cfg, true)?;
    Ok(())
}
