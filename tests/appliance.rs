//! The appliance's init integration at the file level: the systemd units
//! pass `systemd-analyze verify` (with only the binaries absent), every
//! `ferry` command they and the OpenRC scripts run is a valid command line,
//! the OpenRC scripts are valid shell, and the shipped `ferry.toml` parses
//! with a reboot that goes through the init.

mod common;
use common::*;
use std::process::Command;

fn appliance(sub: &str) -> std::path::PathBuf {
    repo().join("board/appliance").join(sub)
}

fn files(sub: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(appliance(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// The ferry command lines in a unit or script: every `/usr/bin/ferry ...`
/// up to the end of its shell command (`;`, a quote, a pipe), comments aside.
fn ferry_commands(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split("/usr/bin/ferry ").skip(1))
        .map(|rest| {
            let end = rest.find([';', '\'', '"', '|', '&']).unwrap_or(rest.len());
            rest[..end].split_whitespace().map(String::from).collect()
        })
        .collect()
}

#[test]
fn systemd_units_verify_and_run_valid_commands() {
    let units = files("systemd");
    assert_eq!(units.len(), 4);
    let mut args = vec!["verify".to_string(), "--man=no".into()];
    args.extend(units.iter().map(|p| p.display().to_string()));
    let o = Command::new("systemd-analyze")
        .args(&args)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .expect("systemd-analyze (package systemd)");
    let text = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("is not executable"))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
    let all: String = units
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    // the daemon is supervised the systemd way
    let daemon = std::fs::read_to_string(appliance("systemd/ferry.service")).unwrap();
    for want in [
        "Type=notify",
        "WatchdogSec=",
        "ExecStart=/usr/bin/ferry daemon",
    ] {
        assert!(daemon.contains(want), "{want}");
    }
    let cmds = ferry_commands(&all);
    assert_eq!(cmds.len(), 4, "{cmds:?}");
    assert!(cmds.iter().any(|c| c[0] == "grow-data"), "{cmds:?}");
    for c in cmds {
        let mut a: Vec<&str> = c.iter().map(String::as_str).collect();
        a.push("--help");
        let o = ferry(&a);
        assert_eq!(o.code, 0, "{c:?}: {}", o.stderr);
    }
}

#[test]
fn openrc_scripts_are_shell_and_run_valid_commands() {
    for p in files("openrc") {
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("#!/sbin/openrc-run\n"), "{}", p.display());
        let o = Command::new("sh").arg("-n").arg(&p).output().unwrap();
        assert!(
            o.status.success(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        for c in ferry_commands(&text) {
            let mut a: Vec<&str> = c.iter().map(String::as_str).collect();
            a.push("--help");
            assert_eq!(ferry(&a).code, 0, "{c:?}");
        }
    }
}

#[test]
fn the_appliance_config_parses_and_reboots_through_the_init() {
    let p = appliance("ferry.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    let c = ferry::io::config::Config::parse(&text, &p).unwrap();
    assert_eq!(
        c.reboot_command.as_deref(),
        Some(&["systemctl".to_string(), "reboot".into(), "{arg}".into()][..])
    );
    assert_eq!(c.state_dir, std::path::PathBuf::from("/data/ferry"));
}
