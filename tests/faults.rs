//! Storage faults during an install: a real ENOSPC from a small loop-mounted
//! filesystem, EIO from the device, and a device that stores other bits than
//! it was given (read-back mismatch). Each is a clear error, the old slot's
//! bytes and boot entry are untouched, and the new slot is not bootable.

mod common;
use common::*;
use std::process::Command;

fn sh(cmd: &str) {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn assert_old_slot_safe(dev: &Device, a_before: &str) {
    assert_eq!(
        dev.partition_digest("rootfs_a"),
        a_before,
        "active slot touched"
    );
    let st = dev.status();
    assert_eq!(st["boot"]["order"], serde_json::json!(["a"]), "{st}");
    assert_eq!(st["boot"]["next"], "a");
    assert_eq!(st["last"]["result"], "install-failed", "{st}");
    assert_eq!(st["slots"]["b"]["status"], "bad");
    assert!(dev.fw_printenv().lines().any(|l| l == "BOOT_ORDER=A"));
}

#[test]
fn disk_full_is_enospc_and_safe() {
    let dev = Device::new();
    let b = dev.bundle("1.1.0", 2, "v2.ferry", &[]);
    // move the disk image onto a small filesystem with ~1 MiB left
    let fs = dev.path("small.fs");
    std::fs::File::create(&fs)
        .unwrap()
        .set_len(48 << 20)
        .unwrap();
    sh(&format!("mkfs.ext4 -q -m 0 {}", fs.display()));
    let mnt = dev.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    sh(&format!("mount -o loop {} {}", fs.display(), mnt.display()));
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(mnt.clone());
    sh(&format!(
        "cp --sparse=always {} {}/disk.img",
        dev.path("disk.img").display(),
        mnt.display()
    ));
    // reserve 1 MiB, fill the rest, then free the reserve: ~1 MiB stays free
    sh(&format!("dd if=/dev/zero of={m}/pad bs=1M count=1 status=none && (dd if=/dev/zero of={m}/filler bs=64k status=none 2>/dev/null || true) && rm {m}/pad", m = mnt.display()));
    let cfg = std::fs::read_to_string(&dev.config).unwrap().replace(
        &format!(
            "{}/disk.img",
            dev.path("").display().to_string().trim_end_matches('/')
        ),
        &format!("{}/disk.img", mnt.display()),
    );
    std::fs::write(&dev.config, cfg).unwrap();
    std::fs::copy(format!("{}/disk.img", mnt.display()), dev.path("disk.img")).ok();
    let a = {
        let d = ferry::io::disk::Disk::open(&mnt.join("disk.img"), false).unwrap();
        let p = d.partition("rootfs_a").unwrap().clone();
        ferry::io::install::read_back(&d, p.offset(), p.len())
            .unwrap()
            .to_string()
    };
    let o = dev.run(&["install", "--no-reboot", s(&b)]);
    assert_eq!(o.code, 41, "{}", o.stderr);
    assert!(o.stderr.contains("no space left on device"), "{}", o.stderr);
    // check against the image on the full filesystem
    std::fs::copy(mnt.join("disk.img"), dev.path("disk.img")).ok();
    let d = ferry::io::disk::Disk::open(&mnt.join("disk.img"), false).unwrap();
    let p = d.partition("rootfs_a").unwrap().clone();
    assert_eq!(
        ferry::io::install::read_back(&d, p.offset(), p.len())
            .unwrap()
            .to_string(),
        a,
        "active slot touched"
    );
    let st = dev.status();
    assert_eq!(st["boot"]["order"], serde_json::json!(["a"]), "{st}");
    assert_eq!(st["last"]["result"], "install-failed");
}

/// An install of a fresh bundle under the fault `var=at` fails with exit
/// `code` and a message holding every `needle`, the old slot intact; with
/// `retry`, the same install without the fault then succeeds (the card recovered).
fn fault_fails_safely(seed: u64, var: &str, at: &str, code: i32, needles: &[&str], retry: bool) {
    let dev = Device::new();
    let a = dev.partition_digest("rootfs_a");
    let b = dev.bundle("1.1.0", seed, "v2.ferry", &[]);
    let o = dev.run_env(&["install", "--no-reboot", s(&b)], &[(var, at)]);
    assert_eq!(o.code, code, "{}", o.stderr);
    for n in needles {
        assert!(o.stderr.contains(n), "no {n:?} in: {}", o.stderr);
    }
    assert_old_slot_safe(&dev, &a);
    if retry {
        assert_eq!(dev.run(&["install", "--no-reboot", s(&b)]).code, 0);
    }
}

#[test]
fn eio_from_the_device_is_clear_and_safe() {
    fault_fails_safely(
        3,
        "FERRY_EIO_AT",
        "4",
        42,
        &["I/O error from the device"],
        true,
    );
}

#[test]
fn eio_while_reading_back_is_clear_and_safe() {
    // the read-back runs on its own threads: a read error there must end
    // the install with the device's error, not hang it or pass as a mismatch
    let needles = ["read back", "I/O error from the device"];
    fault_fails_safely(6, "FERRY_READ_EIO_AT", "3", 42, &needles, true);
}

#[test]
fn read_back_mismatch_is_caught_and_safe() {
    fault_fails_safely(4, "FERRY_CORRUPT_WRITE", "3", 43, &["read-back"], false);
}
