//! Shared helpers for the integration tests: run the real binary, build
//! payloads, keys, bundles and a disk image with a device config in a temp dir.
#![allow(dead_code)]

pub mod httpd;

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn ferry(args: &[&str]) -> Out {
    ferry_env(args, &[])
}

pub fn ferry_env(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.args(args).env("FERRY_LOG", "warn");
    // the tests' servers are on loopback: a proxy set where the tests run
    // must not apply unless a test sets one
    for k in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("run ferry");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

pub fn ok(args: &[&str]) -> String {
    let o = ferry(args);
    assert_eq!(o.code, 0, "ferry {args:?} failed: {}{}", o.stdout, o.stderr);
    o.stdout
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Deterministic pseudo-random bytes (xorshift), partly compressible.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let run = (x % 4) as usize;
        if run == 0 {
            v.extend(std::iter::repeat_n(0u8, 64));
        } else {
            v.extend_from_slice(&x.to_le_bytes());
        }
    }
    v.truncate(len);
    v
}

/// A device on a disk image in a temp dir, slot A installed with 1.0.0.
pub struct Device {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Device {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn new() -> Device {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_path_buf();
        let d = d.as_path();
        ok(&["key", "generate", "dev", "--dir", s(d)]);
        std::fs::create_dir_all(d.join("keys")).unwrap();
        std::fs::copy(d.join("dev.pub"), d.join("keys/dev.pub")).unwrap();
        let dev = Device {
            config: d.join("ferry.toml"),
            dir,
        };
        dev.bundle("1.0.0", 1, "v1.ferry", &[]);
        ok(&[
            "image",
            "build",
            "--board",
            "qemu-aarch64-virt",
            "--bundle",
            s(&dev.path("v1.ferry")),
            "--key",
            s(&dev.path("dev.pub")),
            "-o",
            s(&dev.path("disk.img")),
            "--state-dir",
            s(&dev.path("state")),
        ]);
        std::fs::write(
            &dev.config,
            format!(
                "board = \"qemu-aarch64-virt\"\ndisk = \"{0}/disk.img\"\nstate_dir = \"{0}/state\"\nkeyring = \"{0}/keys\"\ncmdline = \"{0}/cmdline\"\nboot_id = \"{0}/boot_id\"\nreboot = \"record\"\n[health]\ncommands = [\"test -e {0}/healthy\"]\ndeadline_s = 2\ninterval_s = 1\npasses = 2\n",
                d.display()
            ),
        )
        .unwrap();
        dev.boot("a", "boot-1");
        dev
    }

    /// Write payload files and a bundle signed by dev.key.
    pub fn bundle(&self, version: &str, seed: u64, name: &str, extra: &[&str]) -> PathBuf {
        self.bundle_sized(version, seed, name, 2_500_000, extra)
    }

    /// As `bundle`, with a rootfs of `rootfs_len` bytes.
    pub fn bundle_sized(
        &self,
        version: &str,
        seed: u64,
        name: &str,
        rootfs_len: usize,
        extra: &[&str],
    ) -> PathBuf {
        let d = self.dir.path();
        for (n, len) in [
            ("kernel", 300_000usize),
            ("rootfs", rootfs_len),
            ("k3s", 70_000),
        ] {
            std::fs::write(
                d.join(format!("{n}-{seed}")),
                payload(seed * 31 + len as u64, len),
            )
            .unwrap();
        }
        let out = d.join(name);
        let mut args = vec![
            "bundle".to_string(),
            "create".into(),
            "--board".into(),
            "qemu-aarch64-virt".into(),
            "--version".into(),
            version.into(),
            "--kernel".into(),
            format!("{}/kernel-{seed}", d.display()),
            "--rootfs".into(),
            format!("{}/rootfs-{seed}", d.display()),
            "--k3s".into(),
            format!("{}/k3s-{seed}", d.display()),
            "--key".into(),
            format!("{}/dev.key", d.display()),
            "--chunk-size".into(),
            "262144".into(),
            "-o".into(),
            out.display().to_string(),
            "-q".into(),
        ];
        if extra.contains(&"--chunk-size") {
            // the caller's chunk size replaces the default one
            let i = args.iter().position(|a| a == "--chunk-size").unwrap();
            args.drain(i..i + 2);
        }
        args.extend(extra.iter().map(|x| x.to_string()));
        let a: Vec<&str> = args.iter().map(|x| x.as_str()).collect();
        ok(&a);
        out
    }

    /// Simulate a boot into `slot` with a new boot id.
    pub fn boot(&self, slot: &str, id: &str) {
        std::fs::write(
            self.path("cmdline"),
            format!("console=ttyAMA0 ferry.slot={slot}\n"),
        )
        .unwrap();
        std::fs::write(self.path("boot_id"), format!("{id}\n")).unwrap();
    }

    pub fn run(&self, args: &[&str]) -> Out {
        let mut a = vec!["--config", s(&self.config)];
        a.extend_from_slice(args);
        ferry(&a)
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut a = vec!["--config", s(&self.config)];
        a.extend_from_slice(args);
        ferry_env(&a, env)
    }

    pub fn status(&self) -> serde_json::Value {
        let o = self.run(&["status", "--json"]);
        assert_eq!(o.code, 0, "status failed: {}", o.stderr);
        serde_json::from_str(&o.stdout).expect("status json")
    }

    /// SHA-256 of a partition's bytes in the image.
    pub fn partition_digest(&self, name: &str) -> String {
        let disk = ferry::io::disk::Disk::open(&self.path("disk.img"), false).unwrap();
        let p = disk.partition(name).unwrap().clone();
        let d = ferry::io::install::read_back(&disk, p.offset(), p.len()).unwrap();
        d.to_string()
    }

    /// Does `partition` start with exactly the bytes of the payload file `payload`?
    pub fn holds(&self, partition: &str, payload: &str) -> bool {
        let data = std::fs::read(self.path(payload)).unwrap();
        let want = ferry::bundle::Sha256Digest::of(&data);
        let disk = ferry::io::disk::Disk::open(&self.path("disk.img"), false).unwrap();
        let p = disk.partition(partition).unwrap().clone();
        ferry::io::install::read_back(&disk, p.offset(), data.len() as u64).unwrap() == want
    }

    /// The uboot.env on the boot partition as `fw_printenv` reads it.
    pub fn fw_printenv(&self) -> String {
        let off = 2048 * 512;
        let env = self.path("uboot.env");
        let st = Command::new("mcopy")
            .args([
                "-o",
                "-n",
                "-i",
                &format!("{}@@{off}", self.path("disk.img").display()),
                "::uboot.env",
                s(&env),
            ])
            .status()
            .expect("mcopy (mtools) is installed");
        assert!(st.success());
        let cfg = self.path("fw_env.config");
        std::fs::write(&cfg, format!("{} 0x0 0x40000\n", env.display())).unwrap();
        let o = Command::new("fw_printenv")
            .args(["-c", s(&cfg)])
            .output()
            .expect("fw_printenv (libubootenv-tool) is installed");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into()
    }
}

pub struct Feed {
    pub server: httpd::Server,
    pub root: tempfile::TempDir,
}

/// A loopback HTTPS feed for `dev`, with `[feed]` and `[daemon]` added to its config.
pub fn feed(dev: &Device) -> Feed {
    let root = tempfile::tempdir().unwrap();
    let server = httpd::serve(root.path().to_path_buf(), true);
    std::fs::write(dev.path("ca.pem"), &server.ca_pem).unwrap();
    let cfg = std::fs::read_to_string(&dev.config).unwrap();
    std::fs::write(
        &dev.config,
        format!(
            "{cfg}[feed]\nurl = \"{}\"\nchannel = \"stable\"\nca = [\"{}\"]\npoll_interval_s = 1\njitter_s = 0\nattempts = 4\nidle_timeout_s = 2\n[daemon]\nsocket = \"{}\"\n",
            server.url("stable/index.json"),
            dev.path("ca.pem").display(),
            dev.path("ferry.sock").display()
        ),
    )
    .unwrap();
    Feed { server, root }
}

/// `ferry feed publish` of `bundle` into the feed, signed by the device's key.
pub fn publish(dev: &Device, f: &Feed, bundle: &std::path::Path, extra: &[&str]) {
    let o = try_publish(dev, f, bundle, extra);
    assert_eq!(o.code, 0, "feed publish failed: {}{}", o.stdout, o.stderr);
}

/// The same, returning what the command did (for refusals).
pub fn try_publish(dev: &Device, f: &Feed, bundle: &std::path::Path, extra: &[&str]) -> Out {
    let key = dev.path("dev.key");
    let mut a = vec![
        "feed",
        "publish",
        "--feed",
        s(f.root.path()),
        "--channel",
        "stable",
        "--bundle",
        s(bundle),
        "--key",
        s(&key),
    ];
    a.extend_from_slice(extra);
    ferry(&a)
}
