//! `ferry firstboot` on a directory tree: the provisioned settings become
//! the files k3s, sshd, wpa_supplicant and timesyncd read, with their
//! modes; a second run writes nothing; a change rewrites only what changed;
//! bad settings are refused with nothing written.

mod common;
use common::*;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

const NODE: &str = r#"# written by ferry provision; read by the OS on first boot
hostname = "edge-07"
ssh_authorized_keys = ["ssh-ed25519 AAAAC3Nza ops@example"]
ntp = ["ntp.example"]
[k3s]
role = "agent"
server_url = "https://10.0.0.1:6443"
token = "K10abc::server:secret"
labels = ["zone=a"]
taints = ["edge=true:NoSchedule"]
extra_args = ["--disable=traefik"]
[wifi]
ssid = "plant-3"
psk = "wpa-passphrase"
"#;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn firstboot_applies_settings_idempotently() {
    let d = tempfile::tempdir().unwrap();
    let prov = d.path().join("data/provision");
    let root = d.path().join("root");
    std::fs::create_dir_all(&prov).unwrap();
    std::fs::write(prov.join("node.toml"), NODE).unwrap();
    std::fs::write(
        prov.join("authorized_keys"),
        "ssh-ed25519 BBBB factory@line\n",
    )
    .unwrap();
    // a power cut during an earlier run left a temporary file behind
    std::fs::create_dir_all(root.join("etc/rancher/k3s")).unwrap();
    std::fs::write(root.join("etc/rancher/k3s/.config.yaml.ferry-tmp"), "torn").unwrap();
    let run = || ferry(&["firstboot", "--provision", s(&prov), "--root", s(&root)]);
    let o = run();
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains("hostname edge-07; 8 file(s) written"),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.contains("secret") && !o.stderr.contains("secret"));
    let k3s = root.join("etc/rancher/k3s/config.yaml");
    let y = std::fs::read_to_string(&k3s).unwrap();
    assert_eq!(mode(&k3s), 0o600);
    for want in [
        "node-name: \"edge-07\"",
        "server: \"https://10.0.0.1:6443\"",
        "token: \"K10abc::server:secret\"",
        "node-label:\n  - \"zone=a\"",
        "node-taint:\n  - \"edge=true:NoSchedule\"",
        "disable: \"traefik\"",
    ] {
        assert!(y.contains(want), "{want} not in {y}");
    }
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "edge-07\n"
    );
    assert_eq!(mode(&root.join("etc/hostname")), 0o644);
    assert_eq!(
        std::fs::read_to_string(root.join("etc/ferry/k3s.env")).unwrap(),
        "K3S_ROLE=agent\n"
    );
    let keys = root.join("root/.ssh/authorized_keys");
    assert_eq!(mode(&keys), 0o600);
    assert_eq!(
        std::fs::read_to_string(&keys).unwrap(),
        "ssh-ed25519 AAAAC3Nza ops@example\nssh-ed25519 BBBB factory@line\n"
    );
    assert_eq!(
        mode(&root.join("etc/wpa_supplicant/wpa_supplicant-wlan0.conf")),
        0o600
    );
    assert!(!root.join("etc/rancher/k3s/.config.yaml.ferry-tmp").exists());
    // again: nothing written, nothing touched
    let ino = std::fs::metadata(&k3s).unwrap().ino();
    let o = run();
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains("0 file(s) written; 8 unchanged"),
        "{}",
        o.stdout
    );
    assert_eq!(std::fs::metadata(&k3s).unwrap().ino(), ino);
    // a changed label rewrites the k3s config only
    std::fs::write(prov.join("node.toml"), NODE.replace("zone=a", "zone=b")).unwrap();
    let o = run();
    assert!(
        o.stdout
            .contains("1 file(s) written (etc/rancher/k3s/config.yaml); 7 unchanged"),
        "{}",
        o.stdout
    );
    // someone loosened the token file's mode: put back
    std::fs::set_permissions(&k3s, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run();
    assert!(o.stdout.contains("1 file(s) written"), "{}", o.stdout);
    assert_eq!(mode(&k3s), 0o600);
}

#[test]
fn firstboot_refuses_bad_settings_and_skips_when_unprovisioned() {
    let d = tempfile::tempdir().unwrap();
    let prov = d.path().join("provision");
    let root = d.path().join("root");
    std::fs::create_dir_all(&prov).unwrap();
    // never provisioned: a bare server, nothing to do
    let o = ferry(&["firstboot", "--provision", s(&prov), "--root", s(&root)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!root.exists());
    for (bad, why) in [
        (
            NODE.replace("token = \"K10abc::server:secret\"\n", ""),
            "an agent needs",
        ),
        (
            NODE.replace("--disable=traefik", "disable traefik"),
            "not a --flag",
        ),
        (
            NODE.replace("hostname = \"edge-07\"", "hostname = \"edge_07!\""),
            "not a valid host name",
        ),
        (NODE.replace("[wifi]", "[wifi\n"), "node.toml"),
    ] {
        std::fs::write(prov.join("node.toml"), &bad).unwrap();
        let o = ferry(&["firstboot", "--provision", s(&prov), "--root", s(&root)]);
        assert_ne!(o.code, 0, "{why}");
        assert!(o.stderr.contains(why), "{why}: {}", o.stderr);
        assert!(o.stderr.contains("node.toml"), "{}", o.stderr);
        assert!(!root.exists(), "{why}: something was written");
    }
}

/// A k3OS user's migration: `ferry provision --from-k3os config.yaml`
/// prints the node.toml (what has no ferry equivalent is warned about on
/// stderr, never dropped silently), and `ferry firstboot` applies it.
#[test]
fn k3os_config_migrates_and_applies() {
    let d = tempfile::tempdir().unwrap();
    let k3os = d.path().join("config.yaml");
    std::fs::write(
        &k3os,
        "hostname: pi-12\nssh_authorized_keys:\n- ssh-ed25519 AAAA admin@x\n- github:someone\nrun_cmd:\n- echo hi\nk3os:\n  server_url: https://10.1.1.1:6443\n  token: \"K10xyz\"\n  labels: {zone: lab, rack: \"3\"}\n  k3s_args: [agent, --node-ip, 10.1.1.12]\n  ntp_servers: [time.lab]\n  dns_nameservers: [1.1.1.1]\n",
    )
    .unwrap();
    let o = ferry(&["provision", "--from-k3os", s(&k3os)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for want in ["github:someone", "run_cmd", "k3os.dns_nameservers"] {
        assert!(o.stderr.contains(want), "{want}: {}", o.stderr);
    }
    let prov = d.path().join("provision");
    std::fs::create_dir_all(&prov).unwrap();
    std::fs::write(prov.join("node.toml"), &o.stdout).unwrap();
    let root = d.path().join("root");
    let o = ferry(&["firstboot", "--provision", s(&prov), "--root", s(&root)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let y = std::fs::read_to_string(root.join("etc/rancher/k3s/config.yaml")).unwrap();
    for want in [
        "node-name: \"pi-12\"",
        "server: \"https://10.1.1.1:6443\"",
        "token: \"K10xyz\"",
        "  - \"zone=lab\"",
        "  - \"rack=3\"",
        "node-ip: \"10.1.1.12\"",
    ] {
        assert!(y.contains(want), "{want} not in {y}");
    }
    assert_eq!(
        std::fs::read_to_string(root.join("etc/ferry/k3s.env")).unwrap(),
        "K3S_ROLE=agent\n"
    );
    // not YAML, or YAML that is not a k3OS config: a clear error naming the file
    std::fs::write(&k3os, "k3os: [1, 2\n").unwrap();
    let o = ferry(&["provision", "--from-k3os", s(&k3os)]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("config.yaml"), "{}", o.stderr);
}

/// `ferry grow-data` on a card bigger than the image: the data partition
/// (the last) grows to the end in whole MiB, nothing else moves, a second
/// run changes nothing, and the backup table at the new end is the same
/// table: with the primary damaged (a cut mid-write), ferry reads the
/// backup, as firmware and the kernel do.
#[test]
fn grow_data_fills_the_card_once_and_the_backup_table_agrees() {
    use ferry::io::disk::Disk;
    let dev = Device::new();
    let img = dev.path("disk.img");
    let before = Disk::open(&img, false).unwrap();
    let old: Vec<_> = [
        "boot", "kernel_a", "rootfs_a", "k3s_a", "kernel_b", "rootfs_b", "k3s_b", "data",
    ]
    .iter()
    .map(|n| before.partition(n).unwrap().clone())
    .collect();
    let len0 = std::fs::metadata(&img).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(len0 + (64 << 20) + 4096).unwrap();
    drop(f);
    let o = dev.run(&["grow-data", "--table-only"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("(table rewritten)"), "{}", o.stdout);
    let after = Disk::open(&img, false).unwrap();
    for p in &old[..7] {
        assert_eq!(after.partition(&p.name).unwrap(), p, "{} moved", p.name);
    }
    let data = after.partition("data").unwrap().clone();
    assert_eq!(data.first_lba, old[7].first_lba);
    let last_usable = (len0 + (64 << 20) + 4096) / 512 - 1 - 33;
    assert_eq!(data.len() % (1 << 20), 0, "whole MiB");
    assert!(
        data.last_lba <= last_usable && data.last_lba + 2048 > last_usable,
        "up to the backup table: {data:?}, last usable {last_usable}"
    );
    assert!(data.len() >= old[7].len() + (64 << 20));
    // again: nothing to do
    let o = dev.run(&["grow-data", "--table-only"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!o.stdout.contains("rewritten"), "{}", o.stdout);
    // the primary torn: the backup is read, and it is the grown table
    let good = std::fs::read(&img).unwrap();
    let mut bytes = good.clone();
    bytes[1024 + 60] ^= 0xff; // an entry byte: the table CRC fails
    std::fs::write(&img, &bytes).unwrap();
    assert!(
        ferry::board::gpt::parse(&bytes[..34 * 512]).is_err(),
        "the primary is torn"
    );
    let torn = Disk::open(&img, false).unwrap();
    assert_eq!(torn.partition("data").unwrap(), &data);
    assert_eq!(dev.run(&["status", "--json"]).code, 0);
    // the next run writes the primary again, from the backup
    let o = dev.run(&["grow-data", "--table-only"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("(table rewritten)"), "{}", o.stdout);
    let fixed = std::fs::read(&img).unwrap();
    assert!(
        fixed[..34 * 512] == good[..34 * 512],
        "the primary as it was"
    );
    assert!(fixed == good, "and nothing else changed");
}
