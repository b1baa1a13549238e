//! The six sequences that bricked a board or mixed two releases in one slot
//! under ferry 0.1 (issue "never brick, never mix"), run on the release
//! binary against a disk image and the real `fw_printenv`: each now ends in
//! a bootable single-release slot or a clear refusal. The model check
//! (`tests/model.rs`) explores the general case; these pin the named ones.

mod common;

use common::*;
use std::process::Command;

/// Corrupt a file on the boot partition (FAT) of the device's disk image.
fn damage_boot_file(dev: &Device, name: &str) {
    let off = 2048 * 512;
    let img = format!("{}@@{off}", dev.path("disk.img").display());
    let tmp = dev.path("damaged");
    let st = Command::new("mcopy")
        .args(["-o", "-n", "-i", &img, &format!("::{name}"), s(&tmp)])
        .status()
        .unwrap();
    assert!(st.success());
    let mut b = std::fs::read(&tmp).unwrap();
    for x in b.iter_mut().skip(8).take(64) {
        *x ^= 0x5a;
    }
    std::fs::write(&tmp, b).unwrap();
    let st = Command::new("mcopy")
        .args(["-o", "-i", &img, s(&tmp), &format!("::{name}")])
        .status()
        .unwrap();
    assert!(st.success());
}

/// `ferry install --no-reboot BUNDLE` with a power cut at durable write `n`.
fn cut_install(dev: &Device, bundle: &std::path::Path, n: &str) {
    let o = dev.run_env(
        &["install", "--no-reboot", s(bundle)],
        &[("FERRY_CRASH_AT", n)],
    );
    assert!(o.stderr.contains("simulated power cut"), "{}", o.stderr);
}

/// A device that installed 1.1.0 into B, booted it and committed it.
fn committed_b() -> Device {
    let dev = Device::new();
    let v2 = dev.bundle("1.1.0", 2, "v2.ferry", &[]);
    assert_eq!(dev.run(&["install", s(&v2)]).code, 0);
    dev.boot("b", "boot-2");
    std::fs::write(dev.path("healthy"), "").unwrap();
    assert_eq!(dev.run(&["check"]).code, 0);
    dev
}

fn order(dev: &Device) -> serde_json::Value {
    dev.status()["boot"]["order"].clone()
}

/// Sequence 1: The rollback window: after a failed trial, until the reboot happens,
/// nothing may install into (or roll back) the only good slot.
#[test]
fn rollback_window_refuses_everything_until_the_reboot() {
    let dev = Device::new();
    let a = dev.partition_digest("rootfs_a");
    let v2 = dev.bundle("1.1.0", 2, "v2.ferry", &[]);
    assert_eq!(dev.run(&["install", s(&v2)]).code, 0);
    dev.boot("b", "boot-2");
    // no `healthy` file: the gate fails, B is rolled back; reboot = "record"
    let o = dev.run(&["check"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let st = dev.status();
    assert_eq!(st["state"], "reboot-pending", "{st}");
    assert_eq!(st["boot"]["order"], serde_json::json!(["a"]));
    let env = dev.fw_printenv();
    let v3 = dev.bundle("1.2.0", 3, "v3.ferry", &[]);
    for args in [
        vec!["install", s(&v3)],
        vec!["install", s(&v2)],
        vec!["rollback"],
        vec!["mark-good"],
        vec!["mark-bad"],
    ] {
        let o = dev.run(&args);
        assert_eq!(
            o.code, 54,
            "{args:?} was accepted: {}{}",
            o.stdout, o.stderr
        );
        assert!(o.stderr.contains("reboot first"), "{args:?}: {}", o.stderr);
        assert_eq!(dev.fw_printenv(), env, "{args:?} changed the boot env");
    }
    assert_eq!(
        dev.partition_digest("rootfs_a"),
        a,
        "the good slot was touched"
    );
    // the reboot happens: A runs, and the failed release is not taken again
    dev.boot("a", "boot-3");
    assert_eq!(dev.status()["state"], "idle");
    let o = dev.run(&["install", "--no-reboot", s(&v2)]);
    assert_eq!(o.code, 36, "{}", o.stderr);
    assert!(o.stderr.contains("already failed"), "{}", o.stderr);
    let o = dev.run(&["install", "--no-reboot", s(&v3)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(order(&dev), serde_json::json!(["b", "a"]));
}

/// The number of the first durable write after which `pred` holds.
fn first_cut(
    dev_fn: impl Fn() -> Device,
    bundle: &dyn Fn(&Device) -> std::path::PathBuf,
    pred: impl Fn(&Device) -> bool,
) -> (Device, usize) {
    for n in 1..400 {
        let dev = dev_fn();
        let b = bundle(&dev);
        let o = dev.run_env(
            &["install", "--no-reboot", s(&b)],
            &[("FERRY_CRASH_AT", &n.to_string())],
        );
        assert!(o.code != 0, "no cut point satisfies the condition");
        if pred(&dev) {
            return (dev, n);
        }
    }
    panic!("no cut point found");
}

/// Sequence 2: A stale resume point: an interrupted 1.1.0, then 1.2.0 interrupted
/// before its first durable point, then 1.2.0 again: it must start from zero
/// and end with 1.2.0 in every partition.
#[test]
fn another_release_never_inherits_a_resume_point() {
    let (dev, _) = first_cut(
        Device::new,
        &|d: &Device| d.bundle("1.1.0", 6, "v2.ferry", &["--chunk-size", "65536"]),
        |d| {
            d.status()["resume"]["payload"]
                .as_u64()
                .is_some_and(|p| p >= 1)
        },
    );
    let v3 = dev.bundle("1.2.0", 7, "v3.ferry", &["--chunk-size", "65536"]);
    cut_install(&dev, &v3, "1");
    let o = dev.run(&["install", "--no-reboot", s(&v3)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!o.stdout.contains("resumed at"), "{}", o.stdout);
    for (part, file) in [
        ("kernel_b", "kernel-7"),
        ("rootfs_b", "rootfs-7"),
        ("k3s_b", "k3s-7"),
    ] {
        assert!(dev.holds(part, file), "{part} does not hold 1.2.0");
    }
    assert_eq!(dev.status()["slots"]["b"]["version"], "1.2.0");
}

/// Sequence 3: The arming window: a cut at the record write right after the env was
/// armed; the next install of another bundle first takes B out of the boot
/// order, and a failed one leaves it out.
#[test]
fn an_armed_env_never_survives_the_next_install() {
    let (dev, _) = first_cut(
        Device::new,
        &|d: &Device| d.bundle("1.1.0", 2, "v2.ferry", &[]),
        |d| {
            let env = d.fw_printenv();
            env.contains("FERRY_TRIAL=B")
        },
    );
    // the record still says installing: the env says trial B
    let v3 = dev.bundle("1.2.0", 3, "v3.ferry", &[]);
    // a cut early in the next install (after its first writes)
    cut_install(&dev, &v3, "6");
    let env = dev.fw_printenv();
    assert!(
        env.contains("BOOT_ORDER=A\n"),
        "B still bootable after the cut: {env}"
    );
    // a clean failure (EIO on the slot) leaves it out too, and says so
    let o = dev.run_env(
        &["install", "--no-reboot", s(&v3)],
        &[("FERRY_EIO_AT", "3")],
    );
    assert_eq!(o.code, 42, "{}", o.stderr);
    let st = dev.status();
    assert_eq!(st["slots"]["b"]["status"], "bad");
    assert_eq!(st["boot"]["order"], serde_json::json!(["a"]));
    assert_eq!(st["boot"]["next"], "a");
    assert!(dev.fw_printenv().contains("FERRY_TRIAL=\n"));
}

/// Sequence 4: Both env copies unreadable on a board running a committed B: ferry
/// rebuilds the env from the record before anything else; an install into
/// A never leaves an empty boot order, and B stays bootable.
#[test]
fn unreadable_env_is_rebuilt_from_the_record_not_a_default() {
    let dev = committed_b();
    damage_boot_file(&dev, "uboot.env");
    damage_boot_file(&dev, "uboot.env.redund");
    let st = dev.status();
    assert_eq!(st["boot_env_readable"], false, "{st}");
    let v3 = dev.bundle("1.2.0", 3, "v3.ferry", &[]);
    cut_install(&dev, &v3, "12");
    let env = dev.fw_printenv();
    assert!(env.contains("BOOT_ORDER=B\n"), "{env}");
    assert!(env.contains("FERRY_FLOOR=1.1.0"), "{env}");
    let o = dev.run(&["install", "--no-reboot", s(&v3)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(order(&dev), serde_json::json!(["a", "b"]));
}

/// Sequence 5: A signed bundle that carries only some of the slot's targets.
#[test]
fn a_bundle_must_fill_the_whole_slot() {
    let dev = Device::new();
    std::fs::write(dev.path("k"), payload(5, 5000)).unwrap();
    let b = dev.path("partial.ferry");
    ok(&[
        "bundle",
        "create",
        "-q",
        "--board",
        "qemu-aarch64-virt",
        "--version",
        "2.0.0",
        "--kernel",
        s(&dev.path("k")),
        "--key",
        s(&dev.path("dev.key")),
        "-o",
        s(&b),
    ]);
    let env = dev.fw_printenv();
    let o = dev.run(&["install", s(&b)]);
    assert_eq!(o.code, 35, "{}", o.stderr);
    assert!(o.stderr.contains("missing: rootfs, k3s"), "{}", o.stderr);
    assert_eq!(dev.fw_printenv(), env);
    assert_eq!(dev.status()["state"], "idle");
}

/// Sequence 6: Records that fail open or forever: one damaged copy loses nothing;
/// both damaged is a clear error with a recovery that keeps the floor.
#[test]
fn a_damaged_record_copy_loses_nothing_and_both_have_a_way_out() {
    let dev = committed_b();
    let primary = dev.path("state/state.json");
    std::fs::write(&primary, b"{\"format\": 2, \"generation\": 99").unwrap();
    let st = dev.status();
    assert_eq!(st["rollback_floor"], "1.1.0");
    assert_eq!(st["slots"]["b"]["status"], "good");
    // a writer repairs it
    assert_eq!(dev.run(&["mark-good"]).code, 0);
    assert!(std::fs::read_to_string(&primary)
        .unwrap()
        .contains("\"record\""));
    // both copies damaged: every command refuses, naming the way out
    std::fs::write(&primary, b"garbage").unwrap();
    std::fs::write(dev.path("state/state.1.json"), b"").unwrap();
    let o = dev.run(&["status"]);
    assert_eq!(o.code, 53, "{}", o.stderr);
    assert!(o.stderr.contains("recover-state"), "{}", o.stderr);
    let o = dev.run(&["recover-state"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let st = dev.status();
    assert_eq!(st["rollback_floor"], "1.1.0", "the floor was lost: {st}");
    assert_eq!(st["state"], "idle");
    assert_eq!(st["boot"]["order"], serde_json::json!(["b"]));
    // and the floor still holds
    let old = dev.path("v1.ferry");
    assert_eq!(dev.run(&["install", s(&old)]).code, 31);
}
