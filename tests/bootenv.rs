//! ferry's U-Boot environment code against the real libubootenv tools
//! (`fw_printenv`/`fw_setenv`): a raw redundant environment at disk offsets
//! (the generic eMMC layout) and the single-copy file layout, both ways.

mod common;
use common::*;

use ferry::board::bootenv::BootState;
use ferry::board::{gpt, Board, Slot};
use ferry::io::bootctl::for_board;
use ferry::io::disk::Disk;
use std::process::Command;

const BOARD: &str = r#"
name = "test-raw-env"
compatible = "test-raw-env"
disk_size_mib = 16
[[partition]]
name = "boot"
size_mib = 2
kind = "boot"
fs = "fat"
[[partition]]
name = "rootfs_a"
size_mib = 4
kind = "slot"
slot = "a"
target = "rootfs"
[[partition]]
name = "rootfs_b"
size_mib = 4
kind = "slot"
slot = "b"
target = "rootfs"
[bootloader]
backend = "uboot"
env = { offset = 0x80000, size = 0x20000, redundant_offset = 0xA0000 }
"#;

fn raw_disk(dir: &std::path::Path) -> (Board, Disk, std::path::PathBuf) {
    let board = Board::parse(BOARD, "test").unwrap();
    let img = dir.join("disk.img");
    let sectors = board.disk_size_mib * 2048;
    let (primary, backup) = gpt::build(&board.layout(), sectors, gpt::derived_guid("t"));
    let mut bytes = vec![0u8; (sectors * 512) as usize];
    bytes[..primary.len()].copy_from_slice(&primary);
    let tail = bytes.len() - backup.len();
    bytes[tail..].copy_from_slice(&backup);
    std::fs::write(&img, bytes).unwrap();
    let cfg = dir.join("fw_env.config");
    std::fs::write(
        &cfg,
        format!("{0} 0x80000 0x20000\n{0} 0xA0000 0x20000\n", img.display()),
    )
    .unwrap();
    (board, Disk::open(&img, true).unwrap(), cfg)
}

fn printenv(cfg: &std::path::Path) -> String {
    let o = Command::new("fw_printenv")
        .args(["-c", s(cfg)])
        .output()
        .expect("fw_printenv installed");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into()
}

fn setenv(cfg: &std::path::Path, k: &str, v: &str) {
    let st = Command::new("fw_setenv")
        .args(["-c", s(cfg), k, v])
        .status()
        .expect("fw_setenv installed");
    assert!(st.success());
}

#[test]
fn redundant_raw_env_round_trips_with_libubootenv() {
    let d = tempfile::tempdir().unwrap();
    let (board, disk, cfg) = raw_disk(d.path());
    // a blank env has no valid copy: ferry reports that instead of guessing
    // a default (the record decides what to write); ferry writes it first
    let mut boot = for_board(&board, &disk);
    assert_eq!(boot.load().unwrap(), None);
    boot.store(&BootState::default()).unwrap();
    assert!(printenv(&cfg).lines().any(|l| l == "BOOT_ORDER=A"));
    setenv(&cfg, "bootdelay", "1");
    // ferry arms a trial; fw_printenv reads it, and ferry kept foreign vars
    let armed = boot
        .load()
        .unwrap()
        .unwrap()
        .invalidate(Slot::B)
        .arm_trial(Slot::B, 3);
    boot.store(&armed).unwrap();
    let env = printenv(&cfg);
    for l in [
        "BOOT_ORDER=B A",
        "FERRY_TRIAL=B",
        "BOOT_B_LEFT=3",
        "bootdelay=1",
    ] {
        assert!(env.lines().any(|x| x == l), "{l} missing from {env}");
    }
    // the boot script's decrement as U-Boot would save it, then ferry reads it
    setenv(&cfg, "BOOT_B_LEFT", "2");
    assert_eq!(boot.load().unwrap().unwrap().left, [0, 2]);
    // several alternating writes: each side always sees the other's newest
    for i in 0..4u32 {
        let st = boot
            .load()
            .unwrap()
            .unwrap()
            .commit(if i % 2 == 0 { Slot::B } else { Slot::A });
        boot.store(&st).unwrap();
        assert_eq!(BootState::from_vars(&parse(&printenv(&cfg))).unwrap(), st);
        setenv(&cfg, "bootcount_dummy", &i.to_string());
        assert_eq!(boot.load().unwrap(), Some(st));
    }
    // a torn write of one copy: both readers fall back to the other copy
    let before = printenv(&cfg);
    let img = d.path().join("disk.img");
    let mut bytes = std::fs::read(&img).unwrap();
    // corrupt the copy that is current now (the newest flag)
    let (fa, fb) = (bytes[0x80000 + 4], bytes[0xA0000 + 4]);
    let cur = if fb.wrapping_sub(fa) == 1 {
        0xA0000
    } else {
        0x80000
    };
    bytes[cur + 100] ^= 0xff;
    std::fs::write(&img, bytes).unwrap();
    let after = printenv(&cfg);
    assert_ne!(after, before, "the corrupted copy must not be read");
    let disk = Disk::open(&img, true).unwrap();
    let mut boot = for_board(&board, &disk);
    assert_eq!(
        BootState::from_vars(&parse(&after)).unwrap(),
        boot.load().unwrap().unwrap()
    );
}

fn parse(env: &str) -> ferry::board::ubootenv::Vars {
    env.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn file_env_written_by_fw_setenv_is_read_by_ferry() {
    let dev = Device::new();
    let b = dev.bundle("1.1.0", 2, "v2.ferry", &[]);
    assert_eq!(dev.run(&["install", "--no-reboot", s(&b)]).code, 0);
    // U-Boot's script spends one attempt: emulate it with the real fw_setenv
    dev.fw_printenv(); // extracts uboot.env and writes fw_env.config
    let st = Command::new("fw_setenv")
        .args(["-c", s(&dev.path("fw_env.config")), "BOOT_B_LEFT", "2"])
        .status()
        .unwrap();
    assert!(st.success());
    let img = format!("{}@@{}", dev.path("disk.img").display(), 2048 * 512);
    for f in ["uboot.env", "uboot.env.redund"] {
        let st = Command::new("mcopy")
            .args([
                "-o",
                "-i",
                &img,
                s(&dev.path("uboot.env")),
                &format!("::{f}"),
            ])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let st = dev.status();
    assert_eq!(st["slots"]["b"]["boot_attempts_left"], 2, "{st}");
    assert_eq!(st["boot"]["trial"], "b");
}

#[test]
fn boot_script_compiles_like_mkimage() {
    // dumpimage (u-boot-tools) accepts ferry's boot.scr and extracts the source
    let d = tempfile::tempdir().unwrap();
    let (_, files) = ferry::io::boardfile::load("qemu-aarch64-virt").unwrap();
    let src = &files.iter().find(|(n, _)| n == "boot.cmd").unwrap().1;
    let scr = ferry::board::script::compile(src, "ferry test", 0);
    std::fs::write(d.path().join("boot.scr"), &scr).unwrap();
    let o = Command::new("dumpimage")
        .args(["-l", s(&d.path().join("boot.scr"))])
        .output()
        .expect("dumpimage installed");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("Script"), "{text}");
    std::fs::write(d.path().join("src.cmd"), src).unwrap();
    let mut st = Command::new("mkimage");
    st.args([
        "-A",
        "arm64",
        "-T",
        "script",
        "-C",
        "none",
        "-n",
        "ferry test",
        "-d",
    ])
    .arg(d.path().join("src.cmd"))
    .arg(d.path().join("mk.scr"))
    .env("SOURCE_DATE_EPOCH", "0");
    assert!(st.status().unwrap().success());
    assert_eq!(
        std::fs::read(d.path().join("mk.scr")).unwrap(),
        scr,
        "differs from mkimage's output"
    );
}

#[test]
fn a_damaged_env_copy_is_repaired_from_the_intact_one() {
    let dev = Device::new();
    let env = dev.fw_printenv();
    // tear uboot.env (as a power cut during U-Boot's fatwrite would)
    let mut bytes = std::fs::read(dev.path("uboot.env")).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(dev.path("torn.env"), &bytes).unwrap();
    let img = format!("{}@@{}", dev.path("disk.img").display(), 2048 * 512);
    let st = Command::new("mcopy")
        .args(["-o", "-i", &img, s(&dev.path("torn.env")), "::uboot.env"])
        .status()
        .unwrap();
    assert!(st.success());
    // readers fall back to the backup copy
    assert_eq!(dev.status()["boot"]["order"], serde_json::json!(["a"]));
    // the next writer rewrites the torn copy; fw_printenv reads it again
    assert_eq!(dev.run(&["mark-good"]).code, 0);
    assert_eq!(dev.fw_printenv(), env);
}

/// `mcopy` NAME out of the FAT partition starting at byte `off` of `img`.
fn fat_read(img: &std::path::Path, off: u64, name: &str, to: &std::path::Path) -> bool {
    Command::new("mcopy")
        .args(["-n", "-o", "-i", &format!("{}@@{off}", img.display())])
        .arg(format!("::{name}"))
        .arg(to)
        .status()
        .unwrap()
        .success()
}

#[test]
fn pi_image_carries_its_boot_files_and_a_state_uboot_leaves_alone() {
    // the raspberry-pi-4 image: the board's config.txt, the firmware and
    // U-Boot given with --boot-file (also under a directory), boot.scr,
    // and the boot state in ferry.env at U-Boot's env size, which the real
    // fw_printenv reads; no uboot.env (that U-Boot would load it as its
    // whole environment and lose its bootcmd)
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n);
    ok(&["key", "generate", "dev", "--dir", s(d.path())]);
    for (n, len) in [
        ("kernel", 300_000usize),
        ("rootfs", 600_000),
        ("k3s", 70_000),
    ] {
        std::fs::write(p(n), payload(len as u64, len)).unwrap();
    }
    ok(&[
        "bundle",
        "create",
        "--board",
        "raspberry-pi-4",
        "--version",
        "1.0.0",
        "--kernel",
        s(&p("kernel")),
        "--rootfs",
        s(&p("rootfs")),
        "--k3s",
        s(&p("k3s")),
        "--key",
        s(&p("dev.key")),
        "-o",
        s(&p("pi.ferry")),
        "-q",
    ]);
    std::fs::write(p("start4.elf"), payload(7, 70_000)).unwrap();
    std::fs::write(p("u-boot.bin"), payload(8, 50_000)).unwrap();
    std::fs::write(p("rpi4.dtb"), payload(9, 3_000)).unwrap();
    let img = p("pi.img");
    let (bundle, key) = (p("pi.ferry"), p("dev.pub"));
    let build = |extra: &[&str]| {
        let mut a = vec![
            "image",
            "build",
            "--board",
            "raspberry-pi-4",
            "--bundle",
            s(&bundle),
            "--key",
            s(&key),
            "-o",
            s(&img),
            "-q",
        ];
        a.extend_from_slice(extra);
        ferry(&a)
    };
    let o = build(&[
        "--boot-file",
        s(&p("start4.elf")),
        "--boot-file",
        s(&p("u-boot.bin")),
        "--boot-file",
        &format!("{}:dtbs/bcm2711-rpi-4-b.dtb", p("rpi4.dtb").display()),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let off = 2048 * 512; // partition 1 starts at 1 MiB
    for (name, src) in [
        ("start4.elf", "start4.elf"),
        ("u-boot.bin", "u-boot.bin"),
        ("dtbs/bcm2711-rpi-4-b.dtb", "rpi4.dtb"),
    ] {
        assert!(fat_read(&img, off, name, &p("got")), "{name} missing");
        assert_eq!(
            std::fs::read(p("got")).unwrap(),
            std::fs::read(p(src)).unwrap(),
            "{name}"
        );
    }
    assert!(fat_read(&img, off, "config.txt", &p("config.txt")));
    let cfg = std::fs::read_to_string(p("config.txt")).unwrap();
    assert!(
        cfg.contains("kernel=u-boot.bin") && cfg.contains("arm_64bit=1"),
        "{cfg}"
    );
    assert!(fat_read(&img, off, "boot.scr", &p("boot.scr")));
    assert!(
        !fat_read(&img, off, "uboot.env", &p("uboot.env")),
        "a uboot.env would replace U-Boot's env"
    );
    assert!(fat_read(&img, off, "ferry.env", &p("ferry.env")));
    assert_eq!(std::fs::metadata(p("ferry.env")).unwrap().len(), 0x4000);
    std::fs::write(
        p("fw_env.config"),
        format!("{} 0x0 0x4000\n", p("ferry.env").display()),
    )
    .unwrap();
    let o = Command::new("fw_printenv")
        .args(["-c", s(&p("fw_env.config")), "-n", "BOOT_ORDER"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "A");
    // a name that climbs out of the partition, or one of ferry's own files,
    // is refused, and no image is left
    std::fs::remove_file(&img).unwrap();
    for own in ["FERRY.ENV", "ferry.env.redund", "boot.scr", "boot.cmd"] {
        let o = build(&["--boot-file", &format!("{}:{own}", p("rpi4.dtb").display())]);
        assert_eq!(o.code, 2, "{own}: {}", o.stderr);
        assert!(o.stderr.contains("ferry writes that file"), "{}", o.stderr);
        assert!(!img.exists());
    }
    let o = build(&["--boot-file", &format!("{}:../x", p("rpi4.dtb").display())]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("not a file name on the boot partition"),
        "{}",
        o.stderr
    );
    assert!(!img.exists());
}
