//! `ferry flash` and `ferry provision` against files and real loop devices:
//! sparse copies, zstd images, read-back catching a corrupted write, the
//! refusals, and personalised images read back with e2fsprogs.

mod common;
use common::*;
use std::process::Command;

fn sh(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

struct Loop(String);
impl Loop {
    fn new(file: &std::path::Path) -> Loop {
        Loop(sh(&format!("losetup --find --show {}", file.display())))
    }
}
impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg(&self.0)
            .stderr(std::process::Stdio::null())
            .status();
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn image() -> Device {
    Device::new()
}

#[test]
fn flash_to_file_is_exact_sparse_and_verified() {
    let dev = image();
    let img = dev.path("disk.img");
    let out = dev.path("card.img");
    std::fs::write(&out, vec![0xAAu8; 4096]).unwrap(); // old contents must not survive
    let o = ferry(&["-q", "flash", s(&img), s(&out)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("verified by read-back"), "{}", o.stdout);
    assert_eq!(std::fs::read(&img).unwrap(), std::fs::read(&out).unwrap());
    use std::os::unix::fs::MetadataExt as _;
    let md = std::fs::metadata(&out).unwrap();
    assert!(
        md.blocks() * 512 < md.len() / 4,
        "target is not sparse: {} of {}",
        md.blocks() * 512,
        md.len()
    );
    // zstd-compressed image, streamed
    sh(&format!(
        "zstd -q -f {} -o {}.zst",
        img.display(),
        img.display()
    ));
    let out2 = dev.path("card2.img");
    std::fs::write(&out2, b"").unwrap();
    let o = ferry(&["-q", "flash", &format!("{}.zst", img.display()), s(&out2)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(std::fs::read(&img).unwrap(), std::fs::read(&out2).unwrap());
}

#[test]
fn flash_to_loop_device_and_catch_a_corrupted_write() {
    let dev = image();
    let img = dev.path("disk.img");
    let len = std::fs::metadata(&img).unwrap().len();
    let backing = dev.path("card.bin");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(len + (8 << 20))
        .unwrap();
    let lo = Loop::new(&backing);
    let o = ferry(&["-q", "flash", "--yes", s(&img), &lo.0]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let card = std::fs::read(&lo.0).unwrap();
    assert_eq!(
        &card[..len as usize],
        &std::fs::read(&img).unwrap()[..],
        "loop device content differs"
    );
    // the card keeps other bits than were written: read-back says so
    let o = ferry_env(
        &["-q", "flash", "--yes", s(&img), &lo.0],
        &[("FERRY_CORRUPT_WRITE", "3")],
    );
    assert_eq!(o.code, 43, "{}", o.stderr);
    assert!(o.stderr.contains("read-back"), "{}", o.stderr);
    // without --yes and without a terminal: refused
    let o = ferry(&["-q", "flash", s(&img), &lo.0]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("without --yes"), "{}", o.stderr);
}

#[test]
fn flash_refuses_small_and_mounted_targets() {
    let dev = image();
    let img = dev.path("disk.img");
    let small = dev.path("small.bin");
    std::fs::File::create(&small)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let lo = Loop::new(&small);
    let o = ferry(&["-q", "flash", "--yes", s(&img), &lo.0]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("the image needs"), "{}", o.stderr);
    drop(lo);
    // mounted
    let fsimg = dev.path("fs.bin");
    std::fs::File::create(&fsimg)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let lo = Loop::new(&fsimg);
    sh(&format!("mkfs.ext4 -q {}", lo.0));
    let mnt = dev.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    sh(&format!("mount {} {}", lo.0, mnt.display()));
    let o = ferry(&["-q", "flash", "--yes", s(&img), &lo.0]);
    sh(&format!("umount {}", mnt.display()));
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("is mounted at"), "{}", o.stderr);
    // the host's boot disk: detected from mountinfo ("/" on the device)
    use std::os::unix::fs::MetadataExt as _;
    let rdev = std::fs::metadata(&lo.0).unwrap().rdev();
    let (maj, min) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let info = format!(
        "22 1 {maj}:{min} / / rw,relatime shared:1 - ext4 {} rw\n",
        lo.0
    );
    let m = ferry::io::flash::mounts_on(maj, min, &info);
    assert_eq!(m, vec![("/".to_string(), true)]);
    let t = ferry::io::flash::inspect_target(std::path::Path::new(&lo.0)).unwrap();
    assert!(t.block && t.size == Some(1 << 30));
}

fn debugfs(
    img: &std::path::Path,
    part_off: u64,
    part_len: u64,
    cmd: &str,
    work: &std::path::Path,
) -> String {
    let p = work.join("part.bin");
    sh(&format!(
        "dd if={} of={} bs=1M skip={} count={} iflag=skip_bytes,count_bytes status=none",
        img.display(),
        p.display(),
        part_off,
        part_len
    ));
    let o = Command::new("debugfs")
        .arg("-R")
        .arg(cmd)
        .arg(&p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn provision_one_image_then_a_batch() {
    let dev = image();
    let img = dev.path("disk.img");
    let node = dev.path("node.toml");
    std::fs::write(
        &node,
        "hostname = \"edge-01\"\nssh_authorized_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ test@ferry\"]\nntp = [\"pool.ntp.org\"]\n[k3s]\nrole = \"agent\"\nserver_url = \"https://10.0.0.1:6443\"\ntoken = \"SECRET-TOKEN-123\"\nlabels = [\"zone=a\"]\ntaints = [\"edge=true:NoSchedule\"]\n[wifi]\nssid = \"factory\"\npsk = \"SECRET-PSK-456\"\n[identity]\ngenerate = true\n",
    )
    .unwrap();
    let o = ferry(&["provision", "--image", s(&img), "--config", s(&node)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        !o.stdout.contains("SECRET") && !o.stderr.contains("SECRET"),
        "secret in output: {}",
        o.stdout
    );
    let disk = ferry::io::disk::Disk::open(&img, false).unwrap();
    let p = disk.partition("data").unwrap().clone();
    let w = tempfile::tempdir().unwrap();
    let toml = debugfs(
        &img,
        p.offset(),
        p.len(),
        "cat provision/node.toml",
        w.path(),
    );
    let parsed: ferry::io::provision::NodeConfig = toml::from_str(&toml).unwrap();
    assert_eq!(parsed.hostname.as_deref(), Some("edge-01"));
    assert_eq!(parsed.k3s.token.as_deref(), Some("SECRET-TOKEN-123"));
    let stat = debugfs(
        &img,
        p.offset(),
        p.len(),
        "stat provision/node.toml",
        w.path(),
    );
    assert!(stat.contains("Mode:  0600"), "{stat}");
    let key = debugfs(
        &img,
        p.offset(),
        p.len(),
        "stat provision/identity/client.key",
        w.path(),
    );
    assert!(key.contains("Mode:  0600"), "{key}");
    assert!(debugfs(
        &img,
        p.offset(),
        p.len(),
        "cat provision/identity/client.crt",
        w.path()
    )
    .contains("BEGIN CERTIFICATE"));
    // the device record from image build is still there
    assert!(
        debugfs(&img, p.offset(), p.len(), "cat ferry/state.json", w.path())
            .contains("\"format\": 2")
    );
    // again: idempotent
    assert_eq!(
        ferry(&["provision", "--image", s(&img), "--config", s(&node)]).code,
        0
    );

    // batch: two good rows, one bad; a rerun changes nothing
    let csv = dev.path("devices.csv");
    std::fs::write(&csv, "hostname,role,server_url,token,labels\nnode-a,agent,https://10.0.0.1:6443,TOKEN-A-SECRET,zone=a;rack=1\nbad_name!,agent,https://10.0.0.1:6443,T,\nnode-b,server,,,zone=b\n").unwrap();
    std::fs::write(
        dev.path("tmpl.toml"),
        "ntp = [\"time.example\"]\n[k3s]\nextra_args = [\"--disable=traefik\"]\n",
    )
    .unwrap();
    let out = dev.path("factory");
    let tmpl = dev.path("tmpl.toml");
    let batch = || {
        let a = [
            "provision",
            "--image",
            s(&img),
            "--batch",
            s(&csv),
            "--template",
            s(&tmpl),
            "--out",
            s(&out),
        ];
        ferry(&a)
    };
    let o = batch();
    assert_ne!(o.code, 0, "a bad row must fail the run: {}", o.stdout);
    assert!(o.stdout.contains("2 ok, 1 failed"), "{}", o.stdout);
    let report = std::fs::read_to_string(out.join("report.json")).unwrap();
    assert!(!report.contains("TOKEN-A-SECRET"), "secret in report");
    assert!(report.contains("not a valid host name"), "{report}");
    for h in ["node-a", "node-b"] {
        let i = out.join(format!("{h}.img"));
        let t = debugfs(&i, p.offset(), p.len(), "cat provision/node.toml", w.path());
        assert!(
            t.contains(&format!("hostname = \"{h}\"")) && t.contains("--disable=traefik"),
            "{t}"
        );
    }
    let o = batch();
    assert_eq!(o.stdout.matches("unchanged").count(), 2, "{}", o.stdout);
    // the images hold the join token: owner only
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(out.join("node-a.img"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "image mode {mode:o}");

    // a spreadsheet's CSV: byte-order mark; two rows naming one host, an
    // empty host name, and a feed URL with a token in its query
    std::fs::write(&csv, "\u{feff}hostname,role,feed_url,feed_channel,labels\nnode-c,server,https://feed.example/i.json?token=SECRET-Q,stable,zone=a\u{1}b\\c\nnode-e,server,,,\"zone=x,y\nz\"\nnode-d,server,,,\nnode-d,server,,,\n,server,,,\n").unwrap();
    let out2 = dev.path("factory2");
    let o = ferry(&[
        "provision",
        "--image",
        s(&img),
        "--batch",
        s(&csv),
        "--template",
        s(&tmpl),
        "--out",
        s(&out2),
    ]);
    assert_ne!(o.code, 0);
    assert!(
        o.stdout.contains("1 ok, 4 failed"),
        "{}{}",
        o.stdout,
        o.stderr
    );
    let report = std::fs::read_to_string(out2.join("report.json")).unwrap();
    assert!(
        !report.contains("SECRET-Q"),
        "URL secret in report: {report}"
    );
    assert!(report.contains("appears in rows [3, 4]"), "{report}");
    // a quoted field with a comma and a line break is one field of one row
    let rep: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(rep.as_array().map(|a| a.len()), Some(5), "{report}");
    assert!(
        rep[1]["error"]
            .as_str()
            .unwrap_or("")
            .contains(r"zone=x,y\nz"),
        "{report}"
    );
    assert!(report.contains("empty hostname"), "{report}");
    assert!(out2.join("node-c.img").exists());
    // a control character and a backslash in a label: node.toml is still TOML
    let t = debugfs(
        &out2.join("node-c.img"),
        p.offset(),
        p.len(),
        "cat provision/node.toml",
        w.path(),
    );
    let n: ferry::io::provision::NodeConfig =
        toml::from_str(&t).unwrap_or_else(|e| panic!("{e}: {t}"));
    assert_eq!(n.k3s.labels, vec!["zone=a\u{1}b\\c".to_string()]);
    assert!(!out2.join("node-d.img").exists() && !out2.join(".img").exists());
}

/// An exclusive holder the mount table does not show (as btrfs, LVM or
/// device-mapper are to a mountinfo scan): the kernel's EBUSY refuses it.
#[test]
fn flash_refuses_a_device_another_program_holds() {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dev = image();
    let img = dev.path("disk.img");
    let len = std::fs::metadata(&img).unwrap().len();
    let backing = dev.path("held.bin");
    std::fs::write(&backing, vec![0x5Au8; (len + (1 << 20)) as usize]).unwrap();
    let lo = Loop::new(&backing);
    let holder = std::fs::File::options()
        .read(true)
        .custom_flags(nix::libc::O_EXCL)
        .open(&lo.0)
        .unwrap();
    let o = ferry(&["-q", "flash", "--yes", s(&img), &lo.0]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("busy"), "{}", o.stderr);
    drop(holder);
    let card = std::fs::read(&lo.0).unwrap();
    assert!(card.iter().all(|&b| b == 0x5A), "a held device was written");
}

/// Zero-filled blocks the image *has* (allocated, not holes) are written
/// to a device and verified: the card's old bytes never survive there.
#[test]
fn allocated_zeros_overwrite_old_bytes_on_a_device() {
    let dev = image();
    let img = dev.path("zeros.img");
    // 4 MiB of data, 8 MiB of allocated zeros, 4 MiB of data, then a hole
    let mut data = payload(3, 4 << 20);
    data.extend(vec![0u8; 8 << 20]);
    data.extend(payload(4, 4 << 20));
    std::fs::write(&img, &data).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len((16 + 4) << 20).unwrap();
    let backing = dev.path("old-card.bin");
    std::fs::write(&backing, vec![0xA5u8; 24 << 20]).unwrap();
    let lo = Loop::new(&backing);
    let o = ferry(&["-q", "flash", "--yes", s(&img), &lo.0]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let card = std::fs::read(&lo.0).unwrap();
    assert_eq!(
        &card[..16 << 20],
        &data[..],
        "the image's bytes (zeros included) are not on the card"
    );
    // the hole is unmapped: the card's bytes there are left alone, as bmaptool does
    assert!(card[16 << 20..20 << 20].iter().all(|&b| b == 0xA5));
}

/// A compressed image is measured whole (every frame) before the first
/// write: one that does not fit is refused with the device untouched.
#[test]
fn multi_frame_zst_too_large_is_refused_before_writing() {
    let dev = image();
    let part = dev.path("part.bin");
    std::fs::write(&part, payload(9, 6 << 20)).unwrap();
    // two frames; the first frame's header announces only 6 MiB
    sh(&format!(
        "zstd -q -f {0} -o {0}.1.zst && cat {0}.1.zst {0}.1.zst > {0}.zst",
        part.display()
    ));
    let backing = dev.path("small-card.bin");
    std::fs::write(&backing, vec![0x3Cu8; 8 << 20]).unwrap();
    let lo = Loop::new(&backing);
    let o = ferry(&[
        "-q",
        "flash",
        "--yes",
        &format!("{}.zst", part.display()),
        &lo.0,
    ]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("the image needs 12582912"),
        "{}",
        o.stderr
    );
    let card = std::fs::read(&lo.0).unwrap();
    assert!(
        card.iter().all(|&b| b == 0x3C),
        "the device was written before the refusal"
    );
}

/// A target file that does not exist yet is created (as bmaptool does).
#[test]
fn a_missing_target_file_is_created() {
    let dev = image();
    let img = dev.path("disk.img");
    let out = dev.path("new-card.img");
    let o = ferry(&["-q", "flash", s(&img), s(&out)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(std::fs::read(&img).unwrap(), std::fs::read(&out).unwrap());
}

/// `--bmap` with a block map written by the real `bmaptool create`: only
/// the mapped ranges are written (a compressed image too), the card's
/// bytes elsewhere stay; an image that does not match its map, or a map
/// that was edited, is refused with the card untouched.
#[test]
fn flash_with_a_bmaptool_block_map() {
    let dev = image();
    let img = dev.path("mapped.img");
    // data, an allocated zero range, data, then a hole; bmaptool maps the
    // allocated zeros too (it maps what the file system allocated)
    let mut data = payload(5, 3 << 20);
    data.extend(vec![0u8; 2 << 20]);
    data.extend(payload(6, (1 << 20) + 4096));
    std::fs::write(&img, &data).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(10 << 20).unwrap();
    drop(f);
    let map = dev.path("mapped.bmap");
    sh(&format!("bmaptool create {} -o {}", s(&img), s(&map)));
    sh(&format!("zstd -q -f {0} -o {0}.zst", s(&img)));
    for source in [img.clone(), dev.path("mapped.img.zst")] {
        let backing = dev.path("card.bin");
        std::fs::write(&backing, vec![0xC3u8; 12 << 20]).unwrap();
        let lo = Loop::new(&backing);
        let o = ferry(&["-q", "flash", "--yes", "--bmap", s(&map), s(&source), &lo.0]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        let card = std::fs::read(&lo.0).unwrap();
        assert_eq!(&card[..data.len()], &data[..], "{}", source.display());
        // unmapped: the hole, and the card past the image
        assert!(
            card[7 << 20..].iter().all(|&b| b == 0xC3),
            "{}",
            source.display()
        );
    }
    // the image changed after the map was made: refused at the first bad range
    let mut bad = data.clone();
    bad[100] ^= 1;
    std::fs::write(&img, &bad).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(10 << 20)
        .unwrap();
    let out = dev.path("out.img");
    let o = ferry(&["-q", "flash", "--bmap", s(&map), s(&img), s(&out)]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("does not match its bmap"), "{}", o.stderr);
    // a map whose ranges were edited fails its own checksum before any write
    let text = std::fs::read_to_string(&map).unwrap();
    let edited = dev.path("edited.bmap");
    std::fs::write(
        &edited,
        text.replace("<MappedBlocksCount>", "<MappedBlocksCount> "),
    )
    .unwrap();
    let backing = dev.path("card2.bin");
    std::fs::write(&backing, vec![0x11u8; 12 << 20]).unwrap();
    let lo = Loop::new(&backing);
    let o = ferry(&["-q", "flash", "--yes", "--bmap", s(&edited), s(&img), &lo.0]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("BmapFileChecksum"), "{}", o.stderr);
    assert!(std::fs::read(&lo.0).unwrap().iter().all(|&b| b == 0x11));
}

/// The cluster agent's credentials go onto the card with the settings: a
/// self-contained kubeconfig (the `ferry` ServiceAccount's token) becomes
/// `provision/kubeconfig`, 0600, byte for byte; one that names files on the
/// host, or uses an exec plugin, is refused before anything is written.
#[test]
fn provision_writes_a_self_contained_kubeconfig_and_refuses_host_paths() {
    let dev = image();
    let img = dev.path("disk.img");
    let kc = "apiVersion: v1\nkind: Config\ncurrent-context: ferry\nclusters:\n- name: k3s\n  cluster:\n    server: https://10.0.0.1:6443\n    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==\nusers:\n- name: ferry\n  user:\n    token: SECRET-SA-TOKEN\ncontexts:\n- name: ferry\n  context: {cluster: k3s, user: ferry}\n";
    std::fs::write(dev.path("ferry.kubeconfig"), kc).unwrap();
    let node = dev.path("node.toml");
    std::fs::write(
        &node,
        format!(
            "hostname = \"edge-02\"\nkubeconfig = \"{}\"\n",
            dev.path("ferry.kubeconfig").display()
        ),
    )
    .unwrap();
    let o = ferry(&["provision", "--image", s(&img), "--config", s(&node)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!o.stdout.contains("SECRET") && !o.stderr.contains("SECRET"));
    let disk = ferry::io::disk::Disk::open(&img, false).unwrap();
    let p = disk.partition("data").unwrap().clone();
    let w = tempfile::tempdir().unwrap();
    let cat = |cmd: &str| debugfs(&img, p.offset(), p.len(), cmd, w.path());
    let got = cat("cat provision/kubeconfig");
    assert_eq!(got, kc);
    let stat = cat("stat provision/kubeconfig");
    assert!(stat.contains("Mode:  0600"), "{stat}");
    // the host path itself is not in the device's node.toml
    let toml = cat("cat provision/node.toml");
    assert!(!toml.contains("kubeconfig"), "{toml}");
    for (bad, why) in [
        (
            kc.replace(
                "certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==",
                "certificate-authority: /etc/ca.pem",
            ),
            "names files on this host",
        ),
        (
            kc.replace(
                "    token: SECRET-SA-TOKEN\n",
                "    exec:\n      command: aws\n",
            ),
            "exec",
        ),
    ] {
        std::fs::write(dev.path("ferry.kubeconfig"), bad).unwrap();
        let o = ferry(&["provision", "--image", s(&img), "--config", s(&node)]);
        assert_ne!(o.code, 0);
        assert!(
            o.stderr.contains("ferry.kubeconfig") && o.stderr.contains(why),
            "{}",
            o.stderr
        );
    }
}
