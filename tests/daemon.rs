//! The daemon end to end in-process: a loopback HTTPS feed with a test CA,
//! a disk image, `ferry daemon --once` passes. Happy path, network drop with
//! Range resume (no byte downloaded twice beyond the chunks in flight), a
//! restart mid-download, expired / replayed / tampered feeds, wrong CA and
//! plain http, and a trial whose health never passes.

mod common;
use common::httpd::{serve, Fault};
use common::*;
use common::{feed, publish, Feed};

/// A device with a feed that lists 1.1.0 (seed 3).
fn published_1_1_0() -> (Device, Feed, std::path::PathBuf) {
    let dev = Device::new();
    let f = feed(&dev);
    let b = dev.bundle("1.1.0", 3, "v2.ferry", &[]);
    publish(&dev, &f, &b, &[]);
    (dev, f, b)
}

/// Where each request for `path` started (its Range, 0 without one).
fn range_starts(f: &Feed, path: &str) -> Vec<u64> {
    f.server
        .requests()
        .into_iter()
        .filter(|(p, _)| p == path)
        .map(|(_, r)| r)
        .collect()
}

fn bundle_path(_f: &Feed, version: &str) -> String {
    format!("/stable/bundles/qemu-aarch64-virt-{version}.ferry")
}

#[test]
fn feed_update_trial_commit() {
    let dev = Device::new();
    let f = feed(&dev);
    let b = dev.bundle("1.1.0", 2, "v2.ferry", &[]);
    publish(&dev, &f, &b, &[]);
    let o = dev.run(&["daemon", "--once"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(dev.path("state/reboot-requested").exists());
    let st = dev.status();
    assert_eq!(
        (st["state"].as_str(), st["slots"]["b"]["version"].as_str()),
        (Some("installed"), Some("1.1.0")),
        "{st}"
    );
    let size = std::fs::metadata(&b).unwrap().len();
    assert_eq!(
        f.server.served(),
        size + std::fs::metadata(f.root.path().join("stable/index.json"))
            .unwrap()
            .len()
            + std::fs::metadata(f.root.path().join("stable/index.json.sig"))
                .unwrap()
                .len()
    );
    dev.boot("b", "boot-2");
    std::fs::write(dev.path("healthy"), "").unwrap();
    std::fs::remove_file(dev.path("state/reboot-requested")).unwrap();
    let o = dev.run(&["daemon", "--once"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let st = dev.status();
    assert_eq!(st["last"]["result"], "committed", "{st}");
    assert_eq!(st["slots"]["b"]["status"], "good");
    // nothing newer: a further pass installs nothing
    assert_eq!(dev.run(&["daemon", "--once"]).code, 0);
    assert!(!dev.path("state/reboot-requested").exists());
}

/// `ferry install URL` (no daemon) over a link that keeps dropping: after
/// the configured attempts it ends with the network's exit code (61, not a
/// storage error), the slot out of the boot order and the install resumable.
#[test]
fn install_url_that_keeps_dropping_is_a_network_error() {
    let (dev, f, b) = published_1_1_0();
    let size = std::fs::metadata(&b).unwrap().len();
    let path = bundle_path(&f, "1.1.0");
    for _ in 0..4 {
        f.server.fault(&path, Fault::DropAfter(size / 8));
    }
    let o = dev.run(&["install", "--no-reboot", &f.server.url(&path)]);
    assert_eq!(o.code, 61, "{}", o.stderr);
    let st = dev.status();
    assert_eq!(st["state"], "installing", "{st}");
    assert_eq!(st["boot"]["order"], serde_json::json!(["a"]));
    // the link heals: the same command resumes and finishes
    let o = dev.run(&["install", "--no-reboot", &f.server.url(&path)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("resumed at"), "{}", o.stdout);
    assert!(dev.holds("rootfs_b", "rootfs-3"));
}

/// Slow retrieval (Uptane): an index that arrives one byte every 100 ms is
/// never idle long enough to time out, but falls below the minimum rate and
/// is abandoned; a server that answers a range request with the whole body
/// is skipped to the offset instead of failing every later attempt.
#[test]
fn slow_retrieval_and_a_server_that_ignores_range() {
    let (dev, f, b) = published_1_1_0();
    f.server.fault("/stable/index.json", Fault::Trickle);
    let t = std::time::Instant::now();
    let o = dev.run(&["daemon", "--once"]);
    assert_eq!(o.code, 61, "{}", o.stderr);
    assert!(o.stderr.contains("minimum rate"), "{}", o.stderr);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    // a drop mid-bundle, then a server that ignores Range on the resume
    let size = std::fs::metadata(&b).unwrap().len();
    let path = bundle_path(&f, "1.1.0");
    f.server.fault(&path, Fault::DropAfter(size / 2));
    f.server.fault(&path, Fault::IgnoreRange);
    let o = dev.run(&["daemon", "--once"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains("ignored the range request"),
        "{}",
        o.stderr
    );
    let reqs = range_starts(&f, &path);
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(reqs[1] > 0, "{reqs:?}");
    assert_eq!(dev.status()["state"], "installed");
    assert!(dev.holds("rootfs_b", "rootfs-3"));
}

/// CDNs and object stores redirect: followed (bounded), and what arrives is
/// still pinned by the feed's manifest digest.
#[test]
fn redirects_are_followed_and_the_pin_still_holds() {
    let (dev, f, b) = published_1_1_0();
    let other = dev.bundle("1.1.0", 4, "other.ferry", &[]);
    std::fs::create_dir_all(f.root.path().join("mirror")).unwrap();
    std::fs::copy(&b, f.root.path().join("mirror/v2.ferry")).unwrap();
    std::fs::copy(&other, f.root.path().join("mirror/other.ferry")).unwrap();
    // a loop of redirects ends
    let idx = "/stable/index.json";
    for _ in 0..7 {
        f.server.fault(idx, Fault::Redirect(idx.into()));
    }
    let o = dev.run(&["daemon", "--once"]);
    assert_eq!(o.code, 61, "{}", o.stderr);
    assert!(o.stderr.contains("redirects"), "{}", o.stderr);
    let path = bundle_path(&f, "1.1.0");
    // to another bundle: the pin refuses it
    f.server
        .fault(&path, Fault::Redirect("/mirror/other.ferry".into()));
    let o = dev.run(&["daemon", "--once"]);
    assert_eq!(o.code, 60, "{}", o.stderr);
    assert!(
        o.stderr.contains("not the one the feed lists"),
        "{}",
        o.stderr
    );
    // to the same bytes elsewhere (relative location): installed
    f.server
        .fault(&path, Fault::Redirect("../../mirror/v2.ferry".into()));
    let o = dev.run(&["daemon", "--once"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(f
        .server
        .requests()
        .iter()
        .any(|(p, _)| p == "/mirror/v2.ferry"));
    assert_eq!(dev.status()["state"], "installed");
}

/// A rollback whose reboot never happened (a failed reboot, a crash): the
/// daemon's first act is that reboot, before any poll.
#[test]
fn daemon_finishes_a_pending_rollback_first() {
    let (dev, _f, b) = published_1_1_0();
    assert_eq!(dev.run(&["install", s(&b)]).code, 0);
    dev.boot("b", "boot-2");
    // no `healthy` file: the gate fails; reboot = "record" stands in for a reboot that failed
    assert_eq!(dev.run(&["check"]).code, 0);
    assert_eq!(dev.status()["state"], "reboot-pending");
    std::fs::remove_file(dev.path("state/reboot-requested")).unwrap();
    let o = dev.run(&["daemon", "--once"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("waiting for its reboot"), "{}", o.stderr);
    assert!(dev.path("state/reboot-requested").exists());
    assert_eq!(dev.status()["state"], "reboot-pending");
}

/// A busy server's `Retry-After` is honoured (longer than the back-off).
#[test]
fn retry_after_is_honoured() {
    let (dev, f, _b) = published_1_1_0();
    let path = bundle_path(&f, "1.1.0");
    f.server.fault(&path, Fault::Busy(2));
    let t = std::time::Instant::now();
    let o = dev.run(&["daemon", "--once"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("asks to retry after 2 s"), "{}", o.stderr);
    assert!(
        t.elapsed() >= std::time::Duration::from_secs(2),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(dev.status()["state"], "installed");
}

#[test]
fn network_drop_resumes_with_range() {
    let (dev, f, b) = published_1_1_0();
    let size = std::fs::metadata(&b).unwrap().len();
    let path = bundle_path(&f, "1.1.0");
    f.server.fault(&path, Fault::DropAfter(size * 45 / 100));
    f.server.fault(&path, Fault::StallAfter(size / 10));
    let before = f.server.served();
    let o = dev.run(&["daemon", "--once"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("will resume"), "{}", o.stderr);
    let reqs = range_starts(&f, &path);
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(reqs[0], 0);
    assert!(
        reqs[1] > 0 && reqs[2] > reqs[1],
        "resumed with ranges: {reqs:?}"
    );
    let bundle_bytes = f.server.served()
        - before
        - std::fs::metadata(f.root.path().join("stable/index.json"))
            .unwrap()
            .len()
        - std::fs::metadata(f.root.path().join("stable/index.json.sig"))
            .unwrap()
            .len();
    // at most the chunks in flight (pipeline depth) are fetched twice: 256 KiB chunks here
    let overlap = bundle_bytes - size;
    assert!(overlap <= 10 * 262_144, "downloaded {overlap} bytes twice");
    let st = dev.status();
    assert_eq!(st["state"], "installed", "{st}");
    assert!(dev.holds("rootfs_b", "rootfs-3"));
}

/// The durable resume point (what the next process starts from) advances
/// every few MiB whatever the chunk size: with 1 MiB chunks and one attempt
/// per run, a link that drops ~11 MiB into a 14 MiB rootfs costs the next
/// run what came after the last 8 MiB window, not the whole payload.
#[test]
fn resume_point_advances_every_few_mib() {
    let dev = Device::new();
    let f = feed(&dev);
    let cfg = std::fs::read_to_string(&dev.config).unwrap();
    std::fs::write(&dev.config, cfg.replace("attempts = 4", "attempts = 1")).unwrap();
    let b = dev.bundle_sized(
        "1.1.0",
        3,
        "v2.ferry",
        14 << 20,
        &["--chunk-size", "1048576"],
    );
    publish(&dev, &f, &b, &[]);
    let size = std::fs::metadata(&b).unwrap().len();
    let path = bundle_path(&f, "1.1.0");
    f.server.fault(&path, Fault::DropAfter(size * 80 / 100));
    let o = dev.run(&["daemon", "--once"]);
    assert_eq!(o.code, 61, "{}", o.stderr);
    assert_eq!(dev.status()["state"], "installing");
    let o = dev.run(&["daemon", "--once"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let reqs = range_starts(&f, &path);
    // the first run's download, then the second run's header and resume
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    // the resume starts past the first 8 MiB (57%) of the rootfs, which is
    // nearly all of the bundle
    assert!(reqs[2] > size / 2, "resumed at {reqs:?} of {size}");
    assert!(dev.holds("rootfs_b", "rootfs-3"));
}

#[test]
fn restart_mid_download_resumes_from_durable_chunk() {
    let dev = Device::new();
    let f = feed(&dev);
    let b = dev.bundle("1.1.0", 4, "v2.ferry", &[]);
    publish(&dev, &f, &b, &[]);
    // a power cut after ~20 durable writes: mid-rootfs
    let o = dev.run_env(&["daemon", "--once"], &[("FERRY_CRASH_AT", "22")]);
    assert_ne!(o.code, 0);
    dev.boot("a", "boot-2");
    let st = dev.status();
    assert_eq!(st["state"], "installing", "{st}");
    assert!(st["resume"]["chunk"].is_u64(), "{st}");
    let path = bundle_path(&f, "1.1.0");
    let n = f.server.requests().len();
    let o = dev.run(&["daemon", "--once"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let later: Vec<u64> = f.server.requests()[n..]
        .iter()
        .filter(|(p, _)| *p == path)
        .map(|(_, r)| *r)
        .collect();
    assert!(
        later.iter().any(|&r| r > 0),
        "no range request after restart: {later:?}"
    );
    assert_eq!(dev.status()["state"], "installed");
}

#[test]
fn bad_feeds_are_refused_and_nothing_is_installed() {
    let dev = Device::new();
    let f = feed(&dev);
    let b = dev.bundle("1.1.0", 5, "v2.ferry", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // expired: published long ago with a short life
    publish(
        &dev,
        &f,
        &b,
        &["--now", &(now - 7200).to_string(), "--expires-in", "3600"],
    );
    let o = dev.run(&["daemon", "--once"]);
    assert_eq!(o.code, 60, "{}", o.stderr);
    assert!(o.stderr.contains("expired"), "{}", o.stderr);
    // tampered: bytes changed after signing
    publish(&dev, &f, &b, &[]);
    let idx = f.root.path().join("stable/index.json");
    let good = std::fs::read(&idx).unwrap();
    let good_sig = std::fs::read(f.root.path().join("stable/index.json.sig")).unwrap();
    std::fs::write(
        &idx,
        String::from_utf8(good.clone())
            .unwrap()
            .replace("1.1.0", "1.1.1"),
    )
    .unwrap();
    let o = dev.run(&["daemon", "--once"]);
    assert_eq!(o.code, 60);
    assert!(o.stderr.contains("not trusted"), "{}", o.stderr);
    // unsigned
    std::fs::write(&idx, &good).unwrap();
    std::fs::write(f.root.path().join("stable/index.json.sig"), "").unwrap();
    let o = dev.run(&["daemon", "--once"]);
    assert!(o.stderr.contains("not signed"), "{}", o.stderr);
    // replay: the device has seen serial 3; the old serial-2 index comes back
    std::fs::write(f.root.path().join("stable/index.json.sig"), &good_sig).unwrap();
    let b2 = dev.bundle("1.0.1", 6, "v101.ferry", &[]);
    publish(&dev, &f, &b2, &[]); // serial 3
                                 // keep the install from happening: pause by removing the bundle files
    let bundles = f.root.path().join("stable/bundles");
    let hidden = f.root.path().join("hidden");
    std::fs::rename(&bundles, &hidden).unwrap();
    let o = dev.run(&["daemon", "--once"]);
    assert_ne!(o.code, 0); // the bundle is missing: a network error, but serial 3 was seen
    std::fs::rename(&hidden, &bundles).unwrap();
    std::fs::write(&idx, &good).unwrap();
    std::fs::write(f.root.path().join("stable/index.json.sig"), &good_sig).unwrap();
    let o = dev.run(&["daemon", "--once"]);
    assert_eq!(o.code, 60, "{}", o.stderr);
    assert!(
        o.stderr.contains("replay or rollback refused"),
        "{}",
        o.stderr
    );
    // the missing bundle failed before a byte was written: B untouched
    assert_eq!(dev.status()["slots"]["b"]["status"], "empty");
    assert_eq!(dev.status()["boot"]["next"], "a");
}

#[test]
fn tls_trust_is_enforced() {
    let dev = Device::new();
    let f = feed(&dev);
    let b = dev.bundle("1.1.0", 7, "v2.ferry", &[]);
    publish(&dev, &f, &b, &[]);
    // another CA
    let other = serve(f.root.path().to_path_buf(), true);
    std::fs::write(dev.path("ca.pem"), &other.ca_pem).unwrap();
    let o = dev.run(&["daemon", "--once"]);
    assert_eq!(o.code, 61, "{}", o.stderr);
    assert!(o.stderr.contains("TLS"), "{}", o.stderr);
    // plain http without allow_http
    let plain = serve(f.root.path().to_path_buf(), false);
    let cfg = std::fs::read_to_string(&dev.config).unwrap().replace(
        &f.server.url(""),
        &format!("http://127.0.0.1:{}/", plain.port),
    );
    std::fs::write(&dev.config, &cfg).unwrap();
    let o = dev.run(&["daemon", "--once"]);
    assert!(o.stderr.contains("plain http"), "{}", o.stderr);
    std::fs::write(
        &dev.config,
        cfg.replace("attempts = 4", "attempts = 4\nallow_http = true"),
    )
    .unwrap();
    let o = dev.run(&["daemon", "--once"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(dev.status()["state"], "installed");
}

#[test]
fn trial_that_never_gets_healthy_rolls_back() {
    let dev = Device::new();
    let f = feed(&dev);
    let b = dev.bundle("1.1.0", 8, "v2.ferry", &[]);
    publish(&dev, &f, &b, &[]);
    assert_eq!(dev.run(&["daemon", "--once"]).code, 0);
    dev.boot("b", "boot-2");
    std::fs::remove_file(dev.path("state/reboot-requested")).unwrap();
    let o = dev.run(&["daemon", "--once"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        dev.path("state/reboot-requested").exists(),
        "rollback must reboot"
    );
    let st = dev.status();
    assert_eq!(st["last"]["result"], "rolled-back", "{st}");
    assert_eq!(st["boot"]["order"], serde_json::json!(["a"]));
    // back on A, the feed still offers 1.1.0, which failed here: it is not
    // installed again (no reboot loop); a fixed 1.1.1 is
    dev.boot("a", "boot-3");
    std::fs::remove_file(dev.path("state/reboot-requested")).unwrap();
    let o = dev.run(&["daemon", "--once"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        !dev.path("state/reboot-requested").exists(),
        "the failed release was installed again"
    );
    assert_eq!(dev.status()["state"], "idle");
    let fixed = dev.bundle("1.1.1", 9, "v3.ferry", &[]);
    publish(&dev, &f, &fixed, &[]);
    assert_eq!(dev.run(&["daemon", "--once"]).code, 0);
    assert_eq!(dev.status()["slots"]["b"]["version"], "1.1.1");
}

/// One plain HTTP/1.1 GET; the whole answer, head and body.
fn scrape(port: u16, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn control_socket_is_root_only_and_answers() {
    use std::os::unix::fs::PermissionsExt as _;
    let dev = Device::new();
    let f = feed(&dev);
    // a long poll interval: the daemon sits idle after its first pass
    // and the Prometheus endpoint on a free port
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = std::fs::read_to_string(&dev.config)
        .unwrap()
        .replace("poll_interval_s = 1", "poll_interval_s = 3600")
        .replace(
            "[daemon]\n",
            &format!("[daemon]\nmetrics = \"127.0.0.1:{port}\"\n"),
        );
    assert!(cfg.contains("metrics = "), "{cfg}");
    std::fs::write(&dev.config, cfg).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["--config", s(&dev.config), "daemon"])
        .env("FERRY_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let sock = dev.path("ferry.sock");
    let mut waited = 0;
    while !sock.exists() && waited < 100 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        waited += 1;
        if let Ok(Some(st)) = child.try_wait() {
            panic!("daemon exited: {st}");
        }
    }
    let _k = Kill(child);
    assert!(sock.exists(), "no control socket");
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // the state record is private too
    assert_eq!(
        std::fs::metadata(dev.path("state/state.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let o = dev.run(&["ctl", "status"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["status"]["booted"], "a", "{v}");
    // one status view: the socket's is the CLI's, plus the daemon's `paused`
    let mut from_socket = v["status"].clone();
    assert_eq!(from_socket["paused"], false);
    from_socket.as_object_mut().unwrap().remove("paused");
    assert_eq!(from_socket, dev.status());
    let o = dev.run(&["ctl", "pause"]);
    assert!(o.stdout.contains("\"paused\": true"), "{}", o.stdout);
    let text = scrape(port, "/metrics");
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    for line in [
        "ferry_info{board=\"qemu-aarch64-virt\",slot=\"a\",version=\"1.0.0\"} 1",
        "ferry_state{state=\"idle\"} 1",
        "ferry_paused 1",
        "ferry_reboots_deferred_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    assert!(scrape(port, "/other").starts_with("HTTP/1.1 404"));
    let o = dev.run(&["ctl", "bogus"]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("unknown command"), "{}", o.stderr);
    // an install handed to the running daemon ends with the daemon's outcome
    // as its exit code: here the bundle is not there (network, 61)
    let o = dev.run(&["install", &f.server.url("stable/bundles/missing.ferry")]);
    assert_eq!(o.code, 61, "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("the running daemon"), "{}", o.stderr);
    // a bundle that is there: installed by the daemon, reported as done
    let b = dev.bundle("1.1.0", 2, "v2.ferry", &[]);
    std::fs::copy(&b, f.root.path().join("v2.ferry")).unwrap();
    let o = dev.run(&["install", &f.server.url("v2.ferry")]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("installed 1.1.0 into slot b"),
        "{}",
        o.stdout
    );
    // another user cannot even connect (given a config it can read)
    let public = std::env::temp_dir().join(format!("ferry-ctl-{}.toml", std::process::id()));
    std::fs::copy(&dev.config, &public).unwrap();
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_ferry"),
            "--config",
            s(&public),
            "ctl",
            "status",
        ])
        .output();
    let _ = std::fs::remove_file(&public);
    if let Ok(out) = out {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a non-root peer got an answer");
        assert!(err.contains("connect to the daemon"), "{err}");
    }
}

/// `feed publish` lists only a bundle that verifies in full: by default
/// against the feed's own keys, or against `--trust` / `--keyring`.
#[test]
fn publish_verifies_the_bundle_it_lists() {
    let dev = Device::new();
    let f = feed(&dev);
    ok(&["key", "generate", "release", "--dir", s(dev.dir.path())]);
    let b = dev.bundle(
        "1.1.0",
        2,
        "v2.ferry",
        &["--key", s(&dev.path("release.key"))],
    );
    // signed by dev.key and release.key: fine by default
    publish(&dev, &f, &b, &[]);
    // a bundle signed only by a key the feed does not trust
    let other = dev.path("other.ferry");
    std::fs::copy(&b, &other).unwrap();
    ok(&[
        "bundle",
        "sign",
        "--yes",
        "--replace",
        "--key",
        s(&dev.path("release.key")),
        s(&other),
    ]);
    let index = f.root.path().join("stable/index.json");
    let before = std::fs::read(&index).unwrap();
    let o = try_publish(&dev, &f, &other, &[]);
    assert_eq!(o.code, 18, "{}", o.stderr);
    assert_eq!(std::fs::read(&index).unwrap(), before, "the index changed");
    // trusted explicitly (the release key is a separate role): listed
    let o = try_publish(&dev, &f, &other, &["--trust", s(&dev.path("release.pub"))]);
    assert_eq!(o.code, 0, "{}", o.stderr);
}

/// A CONNECT proxy on loopback that records each request line; `refuse`
/// answers 403 instead of tunnelling.
fn connect_proxy(refuse: bool) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead as _, Write as _};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut r = std::io::BufReader::new(c.try_clone().unwrap());
            let mut first = String::new();
            r.read_line(&mut first).unwrap();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
            }
            log.lock().unwrap().push(first.trim().to_string());
            if refuse {
                let _ = c.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n");
                continue;
            }
            let target = first.split_whitespace().nth(1).unwrap().to_string();
            let up = std::net::TcpStream::connect(target).unwrap();
            c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .unwrap();
            let (mut a, mut b) = (up.try_clone().unwrap(), c.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut b, &mut a);
                let _ = a.shutdown(std::net::Shutdown::Write);
            });
            let (mut up, mut c) = (up, c);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut up, &mut c);
                let _ = c.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (port, seen)
}

/// `HTTPS_PROXY` tunnels the feed and the bundle through CONNECT (TLS and
/// the pins still end to end), `NO_PROXY` exempts a host, and a proxy that
/// refuses is a network error (61) that names it, without its credentials.
#[test]
fn proxies_from_the_environment() {
    let (dev, f, _b) = published_1_1_0();
    let (port, seen) = connect_proxy(false);
    let proxy = format!("http://ferry:s3cret@127.0.0.1:{port}");
    let o = dev.run_env(
        &["daemon", "--once"],
        &[("HTTPS_PROXY", &proxy), ("NO_PROXY", "example.com")],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(dev.status()["state"], "installed");
    let lines = seen.lock().unwrap().clone();
    let want = format!("CONNECT 127.0.0.1:{} HTTP/1.1", f.server.port);
    assert!(
        lines.len() >= 2 && lines.iter().all(|l| *l == want),
        "{lines:?}"
    );
    // exempted: straight to the server
    let dev2 = Device::new();
    let f2 = feed(&dev2);
    let b2 = dev2.bundle("1.1.0", 3, "v2.ferry", &[]);
    publish(&dev2, &f2, &b2, &[]);
    let before = seen.lock().unwrap().len();
    let o = dev2.run_env(
        &["daemon", "--once"],
        &[
            ("https_proxy", &proxy),
            ("no_proxy", "localhost,127.0.0.0/8"),
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        seen.lock().unwrap().len(),
        before,
        "an exempted host went through the proxy"
    );
    // a proxy that refuses the tunnel
    let (port, _) = connect_proxy(true);
    let dev3 = Device::new();
    let f3 = feed(&dev3);
    let b3 = dev3.bundle("1.1.0", 3, "v2.ferry", &[]);
    publish(&dev3, &f3, &b3, &[]);
    let o = dev3.run_env(
        &["daemon", "--once"],
        &[(
            "HTTPS_PROXY",
            &format!("http://ferry:s3cret@127.0.0.1:{port}"),
        )],
    );
    assert_eq!(o.code, 61, "{}", o.stderr);
    assert!(o.stderr.contains("refused the tunnel"), "{}", o.stderr);
    assert!(!o.stderr.contains("s3cret"), "{}", o.stderr);
    assert_eq!(dev3.status()["state"], "idle");
}

/// What an init expects of a supervised daemon: READY=1, WATCHDOG=1 and
/// STOPPING=1 on `$NOTIFY_SOCKET`; a hardware watchdog fed, then closed
/// with the magic `V` when the daemon is stopped (SIGTERM), so a stop does
/// not reset the board; the reboot into an update handed to the init's
/// command (which stops the daemon, as an init does); and plain log lines
/// (no colour codes, no timestamps) when stderr is not a terminal.
#[test]
fn init_integration_notify_watchdog_reboot_and_plain_logs() {
    let (dev, _f, _b) = published_1_1_0();
    let wd = dev.path("watchdog");
    std::fs::write(&wd, b"").unwrap();
    let mark = dev.path("init-rebooted");
    let cfg = std::fs::read_to_string(&dev.config).unwrap();
    let cfg = cfg
        .replace(
            "reboot = \"record\"\n",
            &format!(
                "reboot_command = [\"sh\", \"-c\", \"touch {} && kill -TERM $PPID\"]\nreboot_deadline_s = 600\n",
                mark.display()
            ),
        )
        .replace(
            "[daemon]\n",
            &format!("[daemon]\nwatchdog = \"{}\"\n", wd.display()),
        );
    std::fs::write(&dev.config, cfg).unwrap();
    let sock_path = dev.path("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    // read as systemd does, all along (the queue holds only a few messages)
    let reader = std::thread::spawn(move || {
        let mut msgs = Vec::new();
        let mut buf = [0u8; 256];
        sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        while let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            let stop = m == "STOPPING=1";
            msgs.push(m);
            if stop {
                break;
            }
        }
        msgs
    });
    // `timeout -s KILL`: should the stop not work, the test fails instead of
    // ever reaching the direct reboot(2) after the deadline
    let o = std::process::Command::new("timeout")
        .args(["-s", "KILL", "60", env!("CARGO_BIN_EXE_ferry")])
        .args(["--config", s(&dev.config), "daemon", "--once"])
        .env("FERRY_LOG", "info")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(
        mark.exists(),
        "the init's reboot command did not run: {stderr}"
    );
    assert_eq!(dev.status()["state"], "installed");
    let fed = std::fs::read(&wd).unwrap();
    assert!(fed.len() >= 2, "watchdog never fed: {fed:?}");
    assert_eq!(fed.last(), Some(&b'V'), "no magic close: {fed:?}");
    let msgs = reader.join().unwrap();
    for want in ["READY=1", "WATCHDOG=1", "STOPPING=1"] {
        assert!(msgs.iter().any(|m| m == want), "no {want}: {msgs:?}");
    }
    assert_eq!(
        msgs.last().map(String::as_str),
        Some("STOPPING=1"),
        "{msgs:?}"
    );
    assert!(!stderr.contains('\u{1b}'), "colour codes: {stderr}");
    // a notify socket nobody reads (its queue fills after a few messages)
    // never blocks the daemon: the installed update's reboot and the stop
    // still happen
    let deaf_path = dev.path("deaf.sock");
    let _deaf = std::os::unix::net::UnixDatagram::bind(&deaf_path).unwrap();
    let filler = std::os::unix::net::UnixDatagram::unbound().unwrap();
    filler.set_nonblocking(true).unwrap();
    let mut queued = 0;
    while filler.send_to(b"X=1", &deaf_path).is_ok() {
        queued += 1;
        assert!(queued < 100_000);
    }
    std::fs::remove_file(&mark).unwrap();
    let o = std::process::Command::new("timeout")
        .args(["-s", "KILL", "60", env!("CARGO_BIN_EXE_ferry")])
        .args(["--config", s(&dev.config), "daemon", "--once"])
        .env("NOTIFY_SOCKET", &deaf_path)
        .env("WATCHDOG_USEC", "20000")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(mark.exists());
    let first = stderr.lines().next().unwrap_or("");
    assert!(
        first.trim_start().starts_with("INFO") || first.trim_start().starts_with("WARN"),
        "a timestamp or other prefix: {first:?}"
    );
}
