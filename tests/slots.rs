//! Slots on a real GPT disk image: image build, status vs the real
//! `fw_printenv`, install -> trial -> commit, health failure -> rollback,
//! bootloader fallback, policy refusals, and a simulated power cut at every
//! durable write of an install.

mod common;
use common::*;

fn env_has(env: &str, line: &str) -> bool {
    env.lines().any(|l| l == line)
}

#[test]
fn fresh_image_status_agrees_with_fw_printenv() {
    let dev = Device::new();
    let st = dev.status();
    assert_eq!(st["booted"], "a");
    assert_eq!(st["state"], "idle");
    assert_eq!(st["slots"]["a"]["status"], "good");
    assert_eq!(st["slots"]["a"]["version"], "1.0.0");
    assert_eq!(st["slots"]["b"]["status"], "empty");
    assert_eq!(st["boot"]["order"], serde_json::json!(["a"]));
    let env = dev.fw_printenv();
    assert!(env_has(&env, "BOOT_ORDER=A"), "{env}");
    assert!(env_has(&env, "FERRY_TRIAL="), "{env}");
    // the image is a real GPT that sgdisk-compatible tools read
    let o = std::process::Command::new("sfdisk")
        .args(["--json", s(&dev.path("disk.img"))])
        .output();
    if let Ok(o) = o {
        if o.status.success() {
            let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let names: Vec<&str> = j["partitiontable"]["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert_eq!(
                names,
                [
                    "boot", "kernel_a", "rootfs_a", "k3s_a", "kernel_b", "rootfs_b", "k3s_b",
                    "data"
                ]
            );
        }
    }
}

#[test]
fn install_trial_commit_cycle() {
    let dev = Device::new();
    let a_before = dev.partition_digest("rootfs_a");
    let b = dev.bundle("1.1.0", 2, "v2.ferry", &[]);
    let o = dev.run(&["install", s(&b)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        dev.path("state/reboot-requested").exists(),
        "install must reboot"
    );
    assert_eq!(
        dev.partition_digest("rootfs_a"),
        a_before,
        "active slot touched"
    );
    let st = dev.status();
    assert_eq!(st["state"], "installed");
    assert_eq!(st["slots"]["b"]["status"], "installed");
    assert_eq!(st["boot"]["next"], "b");
    let env = dev.fw_printenv();
    for l in ["BOOT_ORDER=B A", "FERRY_TRIAL=B", "BOOT_B_LEFT=3"] {
        assert!(env_has(&env, l), "{l} not in {env}");
    }
    // the installed bytes are exactly the payload
    assert!(dev.holds("rootfs_b", "rootfs-2"));
    assert!(dev.holds("kernel_b", "kernel-2") && dev.holds("k3s_b", "k3s-2"));

    dev.boot("b", "boot-2");
    std::fs::write(dev.path("healthy"), "").unwrap();
    let o = dev.run(&["check"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("committed"), "{}", o.stdout);
    let st = dev.status();
    assert_eq!(st["state"], "idle");
    assert_eq!(st["slots"]["b"]["status"], "good");
    assert_eq!(st["slots"]["b"]["version"], "1.1.0");
    assert_eq!(st["last"]["result"], "committed");
    assert_eq!(st["rollback_floor"], "1.1.0");
    let env = dev.fw_printenv();
    assert!(
        env_has(&env, "BOOT_ORDER=B A") && env_has(&env, "FERRY_TRIAL="),
        "{env}"
    );
    // a committed slot needs no counter: it stays at 0 and still boots
    assert!(env_has(&env, "BOOT_B_LEFT=0"), "{env}");
    assert_eq!(st["boot"]["next"], "b");
}

#[test]
fn failed_health_rolls_back_and_reboots() {
    let dev = Device::new();
    let b = dev.bundle("1.1.0", 3, "v2.ferry", &[]);
    assert_eq!(dev.run(&["install", "--no-reboot", s(&b)]).code, 0);
    assert!(!dev.path("state/reboot-requested").exists());
    dev.boot("b", "boot-2");
    let o = dev.run(&["check"]); // no `healthy` file: the checks never pass
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("rolled back"), "{}", o.stdout);
    assert!(dev.path("state/reboot-requested").exists());
    let st = dev.status();
    assert_eq!(st["last"]["result"], "rolled-back");
    assert_eq!(
        st["last"]["version"], "1.1.0",
        "the failed release is named"
    );
    assert!(
        st["last"]["error"]
            .as_str()
            .unwrap()
            .contains("did not pass within 2 s"),
        "{st}"
    );
    assert_eq!(st["slots"]["b"]["status"], "bad");
    assert_eq!(st["boot"]["order"], serde_json::json!(["a"]));
    assert!(env_has(&dev.fw_printenv(), "BOOT_ORDER=A"));
    dev.boot("a", "boot-3");
    let st = dev.status();
    assert_eq!(
        (st["booted"].as_str(), st["state"].as_str()),
        (Some("a"), Some("idle"))
    );
}

#[test]
fn bootloader_fallback_is_recorded() {
    let dev = Device::new();
    let b = dev.bundle("1.1.0", 4, "v2.ferry", &[]);
    assert_eq!(dev.run(&["install", s(&b)]).code, 0);
    // the new kernel never reached userspace: U-Boot fell back to A
    dev.boot("a", "boot-2");
    let st = dev.status(); // read-only view already shows it
    assert_eq!(st["last"]["result"], "boot-failed");
    assert_eq!(dev.run(&["mark-good"]).code, 0); // first writer records it
    let st = dev.status();
    assert_eq!(st["slots"]["b"]["status"], "bad");
    assert_eq!(st["slots"]["a"]["status"], "good");
    assert!(env_has(&dev.fw_printenv(), "BOOT_ORDER=A"));
}

#[test]
fn refusals_never_touch_the_active_slot() {
    let dev = Device::new();
    std::fs::copy(
        repo().join("signing/dev.pub"),
        dev.path("keys/fixtures.pub"),
    )
    .unwrap();
    let a = dev.partition_digest("rootfs_a");
    let env = dev.fw_printenv();
    let data = repo().join("tests/data");
    for (fixture, code, phrase) in [
        ("downgrade", 31, "downgrade refused"),
        ("wrong-board", 30, "is for board \"raspberry-pi-4\""),
        ("wrong-key", 18, "0 valid"),
        ("truncated-manifest", 15, "truncated"),
    ] {
        let o = dev.run(&["install", s(&data.join(fixture).join("bundle.ferry"))]);
        assert_eq!(o.code, code, "{fixture}: {}", o.stderr);
        assert!(o.stderr.contains(phrase), "{fixture}: {}", o.stderr);
        assert_eq!(dev.fw_printenv(), env, "{fixture}: boot env changed");
        assert_eq!(dev.status()["state"], "idle", "{fixture}");
    }
    // corrupt payloads are caught while streaming: B is left out of the boot order
    for (fixture, code) in [("flipped-payload-byte", 20), ("installed-digest-wrong", 43)] {
        let o = dev.run(&["install", s(&data.join(fixture).join("bundle.ferry"))]);
        assert_eq!(o.code, code, "{fixture}: {}", o.stderr);
        let st = dev.status();
        assert_eq!(st["last"]["result"], "install-failed", "{fixture}");
        assert_eq!(st["slots"]["b"]["status"], "bad");
        assert_eq!(st["boot"]["order"], serde_json::json!(["a"]));
    }
    assert!(!dev.path("state/reboot-requested").exists());
    assert_eq!(dev.partition_digest("rootfs_a"), a, "active slot touched");
    // a bundle that needs a newer installed version
    let b = dev.bundle(
        "3.0.0",
        9,
        "v3.ferry",
        &["--min-installed-version", "2.0.0"],
    );
    let o = dev.run(&["install", s(&b)]);
    assert_eq!(o.code, 32, "{}", o.stderr);
}

#[test]
fn illegal_commands_are_refused_with_the_state() {
    let dev = Device::new();
    let o = dev.run(&["mark-bad"]);
    assert_eq!(o.code, 54);
    assert!(
        o.stderr.contains("mark-bad is not allowed in state idle"),
        "{}",
        o.stderr
    );
    let b = dev.bundle("1.1.0", 5, "v2.ferry", &[]);
    assert_eq!(dev.run(&["install", "--no-reboot", s(&b)]).code, 0);
    assert_eq!(
        dev.run(&["mark-good"]).code,
        54,
        "cannot commit before booting the trial"
    );
    assert_eq!(dev.run(&["rollback"]).code, 0, "cancel before reboot");
    assert_eq!(dev.status()["boot"]["order"], serde_json::json!(["a"]));
}

#[test]
fn power_cut_at_every_write_point_keeps_the_old_slot() {
    let mut n = 1;
    let mut resumed = 0;
    let mut mid_payload = 0;
    loop {
        let dev = Device::new();
        let a = dev.partition_digest("rootfs_a");
        // a 9 MiB rootfs spans more than one durable window (8 MiB), so
        // cuts land mid-payload and retries resume inside it
        let b = dev.bundle_sized(
            "1.1.0",
            6,
            "v2.ferry",
            9 << 20,
            &["--chunk-size", "1048576"],
        );
        let o = dev.run_env(
            &["install", "--no-reboot", s(&b)],
            &[("FERRY_CRASH_AT", &n.to_string())],
        );
        if o.code == 0 {
            break; // no write point left to cut at
        }
        assert!(
            o.stderr.contains("simulated power cut"),
            "cut {n}: {}",
            o.stderr
        );
        // the power comes back: the bootloader picks the slot
        let pre = dev.status();
        let next = pre["boot"]["next"].as_str().unwrap().to_string();
        assert_eq!(
            dev.partition_digest("rootfs_a"),
            a,
            "cut {n}: active slot touched"
        );
        assert!(
            dev.fw_printenv().contains("BOOT_ORDER="),
            "cut {n}: env unreadable"
        );
        dev.boot(&next, "after-cut");
        let st = dev.status();
        if next == "b" {
            // armed only after read-back verification: B is complete and on trial
            assert_eq!(st["state"], "trial", "cut {n}: {st}");
            assert!(dev.holds("rootfs_b", "rootfs-6"), "cut {n}");
        } else {
            assert_eq!(next, "a", "cut {n}");
            assert_ne!(st["state"], "trial", "cut {n}: {st}");
            // a retry succeeds, resuming where it can
            let o = dev.run(&["install", "--no-reboot", s(&b)]);
            assert_eq!(o.code, 0, "cut {n}: retry failed: {}", o.stderr);
            resumed += o.stdout.contains("resumed at") as usize;
            mid_payload += o.stdout.contains("resumed at payload 1 chunk 8") as usize;
            let st = dev.status();
            assert_eq!(st["state"], "installed", "cut {n}");
            assert_eq!(st["boot"]["next"], "b");
        }
        n += 1;
        assert!(n < 200, "too many write points");
    }
    assert!(
        n > 10,
        "only {n} write points: crash injection is not reaching the install"
    );
    assert!(resumed > 0, "no retry resumed from a persisted chunk");
    assert!(mid_payload > 0, "no retry resumed inside a payload");
}
