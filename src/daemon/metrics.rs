//! An optional Prometheus endpoint (`daemon.metrics = "ADDR:PORT"`): `GET
//! /metrics` in the text exposition format, rendered from the status the
//! control socket gives plus a few counters. One thread, one connection at a
//! time with short timeouts, no HTTP library: a scrape every 15 s from one
//! Prometheus is all it serves. Nothing here can change the device.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tracing::{info, warn};

use super::Shared;
use crate::error::Error;

/// Counters the status does not hold.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Counters {
    /// Bundle bytes received over the network since the daemon started.
    pub received: u64,
    /// Update reboots deferred (lock, drain, alerts) since the daemon started.
    pub deferred: u64,
    /// What the reboot waits on now, and for how many seconds.
    pub waiting: Option<(String, f64)>,
    pub paused: bool,
    pub phase: String,
}

/// A label value, escaped as the exposition format wants.
fn esc(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter().fold(v, |v, k| &v[*k]).as_str().unwrap_or("")
}

/// The exposition text for a status (as `ferry status --json` shows it).
pub(crate) fn render(status: &Value, c: &Counters) -> String {
    let mut o = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, rows: &[(String, String)]| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in rows {
            let _ = writeln!(o, "{name}{labels} {value}");
        }
    };
    let booted = s(status, &["booted"]);
    let running = s(status, &["slots", booted, "version"]);
    metric(
        "ferry_info",
        "gauge",
        "The running release and slot.",
        &[(
            format!(
                "{{board=\"{}\",slot=\"{}\",version=\"{}\"}}",
                esc(s(status, &["board"])),
                esc(booted),
                esc(running)
            ),
            "1".into(),
        )],
    );
    let slots: Vec<(String, String)> = ["a", "b"]
        .iter()
        .map(|x| {
            (
                format!(
                    "{{slot=\"{x}\",status=\"{}\",version=\"{}\"}}",
                    esc(s(status, &["slots", x, "status"])),
                    esc(s(status, &["slots", x, "version"]))
                ),
                "1".into(),
            )
        })
        .collect();
    metric(
        "ferry_slot_info",
        "gauge",
        "Each slot's status and release.",
        &slots,
    );
    metric(
        "ferry_state",
        "gauge",
        "The update state machine's state (1 for the current one).",
        &[(
            format!("{{state=\"{}\"}}", esc(s(status, &["state"]))),
            "1".into(),
        )],
    );
    metric(
        "ferry_phase",
        "gauge",
        "What the daemon is doing (1 for the current phase).",
        &[(format!("{{phase=\"{}\"}}", esc(&c.phase)), "1".into())],
    );
    if status["last"].is_object() {
        metric(
            "ferry_last_result",
            "gauge",
            "How the last update ended (1 for its result).",
            &[(
                format!(
                    "{{result=\"{}\",version=\"{}\"}}",
                    esc(s(status, &["last", "result"])),
                    esc(s(status, &["last", "version"]))
                ),
                "1".into(),
            )],
        );
    }
    metric(
        "ferry_download_bytes_total",
        "counter",
        "Bundle bytes received since the daemon started.",
        &[(String::new(), c.received.to_string())],
    );
    metric(
        "ferry_reboots_deferred_total",
        "counter",
        "Update reboots deferred by the cluster (lock, drain, alerts).",
        &[(String::new(), c.deferred.to_string())],
    );
    let waiting = match &c.waiting {
        Some((why, secs)) => vec![(format!("{{reason=\"{}\"}}", esc(why)), format!("{secs:.0}"))],
        None => vec![],
    };
    metric(
        "ferry_reboot_waiting_seconds",
        "gauge",
        "How long the update reboot has waited on its current reason.",
        &waiting,
    );
    metric(
        "ferry_paused",
        "gauge",
        "Updates paused over the control socket.",
        &[(String::new(), u8::from(c.paused).to_string())],
    );
    o
}

/// The configured address; a malformed one is a configuration error.
pub(crate) fn address(addr: &str) -> Result<SocketAddr, Error> {
    addr.parse()
        .map_err(|e| Error::Usage(format!("daemon.metrics {addr:?}: {e} (want ADDRESS:PORT)")))
}

pub(crate) fn bind(a: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(a).map_err(|e| Error::io("bind metrics endpoint", a.to_string(), e))
}

fn counters(shared: &Shared) -> Counters {
    let waiting = shared.stuck.lock().ok().and_then(|s| {
        s.waiting(SystemTime::now())
            .map(|(w, d)| (w.to_string(), d.as_secs_f64()))
    });
    Counters {
        received: shared.received.load(Ordering::Relaxed),
        deferred: shared.deferred.load(Ordering::Relaxed),
        waiting,
        paused: shared.paused.load(Ordering::SeqCst),
        phase: shared.phase(),
    }
}

pub(crate) fn serve(l: TcpListener, shared: Arc<Shared>) {
    if let Ok(a) = l.local_addr() {
        info!(addr = %a, "metrics endpoint listening");
    }
    for conn in l.incoming() {
        let Ok(c) = conn else { continue };
        if let Err(e) = answer(c, &shared) {
            warn!(error = %e, "metrics request failed");
        }
    }
}

fn answer(mut c: TcpStream, shared: &Shared) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 4096];
    let mut n = 0;
    while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        match c.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let mut words = head.split_whitespace();
    let (code, body) = match (words.next(), words.next()) {
        (Some("GET"), Some("/metrics")) => ("200 OK", render(&shared.status(), &counters(shared))),
        (Some("GET"), _) => ("404 Not Found", "only /metrics is here\n".to_string()),
        _ => ("405 Method Not Allowed", "GET /metrics\n".to_string()),
    };
    write!(
        c,
        "HTTP/1.1 {code}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_status_becomes_metrics() {
        let status = json!({"board": "qemu-aarch64-virt", "booted": "b", "state": "idle",
            "slots": {"a": {"status": "good", "version": "1.0.0"}, "b": {"status": "good", "version": "1.1.0"}},
            "last": {"result": "committed", "version": "1.1.0"}});
        let c = Counters {
            received: 1234,
            deferred: 2,
            waiting: Some(("pdb:default/db \"x\"".into(), 61.4)),
            paused: true,
            phase: "idle".into(),
        };
        let text = render(&status, &c);
        for line in [
            r#"ferry_info{board="qemu-aarch64-virt",slot="b",version="1.1.0"} 1"#,
            r#"ferry_slot_info{slot="a",status="good",version="1.0.0"} 1"#,
            r#"ferry_state{state="idle"} 1"#,
            r#"ferry_last_result{result="committed",version="1.1.0"} 1"#,
            "ferry_download_bytes_total 1234",
            "ferry_reboots_deferred_total 2",
            r#"ferry_reboot_waiting_seconds{reason="pdb:default/db \"x\""} 61"#,
            "ferry_paused 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // every sample line is NAME[{labels}] VALUE with a number
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let v = l.rsplit(' ').next().unwrap();
            assert!(v.parse::<f64>().is_ok(), "{l}");
        }
        let idle = render(
            &json!({"booted": "a", "state": "idle"}),
            &Counters::default(),
        );
        assert!(!idle.contains("ferry_last_result{"), "{idle}");
        assert!(!idle.contains("ferry_reboot_waiting_seconds{"), "{idle}");
    }
}
