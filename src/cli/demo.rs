//! `ferry demo`: the main job end to end with no hardware, on the embedded
//! qemu-aarch64-virt board: keys, two signed bundles, a bootable disk image,
//! an update streamed into the inactive slot, a simulated reboot into the
//! trial, the health gate, and `status` at each step. Every step is a real
//! ferry command, printed before it runs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::Error;

fn step(what: &str, args: &[&str]) -> Result<(), Error> {
    println!("\n$ ferry {}    # {what}", args.join(" "));
    let mut v: Vec<OsString> = vec!["ferry".into()];
    v.extend(args.iter().map(OsString::from));
    match super::run(v)? {
        0 => Ok(()),
        c => Err(Error::Usage(format!("demo step failed with exit code {c}"))),
    }
}

fn payload(path: &Path, len: usize, seed: u64) -> Result<(), Error> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x % 3 == 0 {
            v.extend_from_slice(&[0u8; 256]);
        } else {
            v.extend_from_slice(&x.to_le_bytes());
        }
    }
    v.truncate(len);
    std::fs::write(path, v).map_err(|e| Error::io("write", path, e))
}

pub(super) fn run(dir: Option<PathBuf>) -> Result<(), Error> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("ferry-demo-{}", std::process::id())),
    };
    if dir.exists() {
        return Err(Error::Usage(format!(
            "{} exists; give a new --dir",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir.join("keys")).map_err(|e| Error::io("create", &dir, e))?;
    let p = |n: &str| dir.join(n).display().to_string();
    println!("ferry demo in {}", dir.display());
    step(
        "a signing key pair",
        &["key", "generate", "release", "--dir", &p("")],
    )?;
    std::fs::copy(dir.join("release.pub"), dir.join("keys/release.pub"))
        .map_err(|e| Error::io("copy", &dir, e))?;
    for (v, seed) in [("1.0.0", 1u64), ("1.1.0", 2)] {
        payload(&dir.join(format!("kernel-{v}")), 6 << 20, seed)?;
        payload(&dir.join(format!("rootfs-{v}")), 48 << 20, seed + 10)?;
        payload(&dir.join(format!("k3s-{v}")), 8 << 20, seed + 20)?;
        step(
            "build and sign a bundle",
            &[
                "-q",
                "bundle",
                "create",
                "--board",
                "qemu-aarch64-virt",
                "--version",
                v,
                "--kernel",
                &p(&format!("kernel-{v}")),
                "--rootfs",
                &p(&format!("rootfs-{v}")),
                "--k3s",
                &p(&format!("k3s-{v}")),
                "--key",
                &p("release.key"),
                "-o",
                &p(&format!("v{v}.ferry")),
            ],
        )?;
    }
    step(
        "check signatures and every chunk",
        &[
            "-q",
            "bundle",
            "verify",
            "--key",
            &p("release.pub"),
            &p("v1.1.0.ferry"),
        ],
    )?;
    step(
        "a bootable disk image: GPT, U-Boot script and env, slot A = 1.0.0",
        &[
            "-q",
            "image",
            "build",
            "--board",
            "qemu-aarch64-virt",
            "--bundle",
            &p("v1.0.0.ferry"),
            "--key",
            &p("release.pub"),
            "-o",
            &p("disk.img"),
            "--state-dir",
            &p("state"),
        ],
    )?;
    let cfg = dir.join("ferry.toml");
    let text = format!(
        "board = \"qemu-aarch64-virt\"\ndisk = \"{d}/disk.img\"\nstate_dir = \"{d}/state\"\nkeyring = \"{d}/keys\"\ncmdline = \"{d}/cmdline\"\nboot_id = \"{d}/boot_id\"\nreboot = \"record\"\n[health]\ncommands = [\"true\"]\ndeadline_s = 30\ninterval_s = 1\npasses = 2\n",
        d = dir.display()
    );
    std::fs::write(&cfg, text).map_err(|e| Error::io("write", &cfg, e))?;
    let boot = |slot: &str, id: &str| -> Result<(), Error> {
        std::fs::write(dir.join("cmdline"), format!("ferry.slot={slot}\n"))
            .map_err(|e| Error::io("write", &dir, e))?;
        std::fs::write(dir.join("boot_id"), id).map_err(|e| Error::io("write", &dir, e))
    };
    boot("a", "boot-1")?;
    let c = cfg.display().to_string();
    step(
        "the device, booted from slot A",
        &["--config", &c, "status"],
    )?;
    step(
        "stream 1.1.0 into slot B and arm a trial boot",
        &["--config", &c, "-q", "install", &p("v1.1.0.ferry")],
    )?;
    step(
        "after install (the reboot was recorded, not done)",
        &["--config", &c, "status"],
    )?;
    println!("\n# ... the bootloader boots slot B on trial ...");
    boot("b", "boot-2")?;
    step("health gate on the trial boot", &["--config", &c, "check"])?;
    step("committed", &["--config", &c, "status"])?;
    println!("\ndemo files are in {} (disk.img is sparse)", dir.display());
    Ok(())
}
