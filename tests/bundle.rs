//! Bundle CLI: create, verify, inspect, sign, keys, and every bad-input
//! fixture under tests/data/ with its distinct exit code and message.

mod common;
use common::*;

#[test]
fn every_fixture_fails_with_its_own_code_and_message() {
    let data = repo().join("tests/data");
    let key = repo().join("signing/dev.pub");
    let mut seen = std::collections::BTreeMap::new();
    let mut n = 0;
    for e in std::fs::read_dir(&data).unwrap() {
        let dir = e.unwrap().path();
        let Ok(expect) = std::fs::read_to_string(dir.join("expect")) else {
            continue;
        };
        let mut lines = expect.lines();
        let code: i32 = lines.next().unwrap().parse().unwrap();
        let phrase = lines.next().unwrap();
        if (30..40).contains(&code) {
            continue; // policy refusals are install-time: tests/slots.rs
        }
        let o = ferry(&[
            "bundle",
            "verify",
            "--key",
            s(&key),
            s(&dir.join("bundle.ferry")),
        ]);
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(o.code, code, "{name}: {}{}", o.stdout, o.stderr);
        let text = if code == 0 { &o.stdout } else { &o.stderr };
        assert!(text.contains(phrase), "{name}: {text:?} lacks {phrase:?}");
        if code != 0 {
            assert_eq!(
                o.stderr.lines().count(),
                1,
                "{name}: one clear line, got {:?}",
                o.stderr
            );
            assert!(!o.stderr.contains("panicked"), "{name}");
            if let Some(prev) = seen.insert(code, name.clone()) {
                // distinct codes per failure class; a class may hold several
                // fixtures: truncations (15), manifest rule breaches (16),
                // altered signed bytes or signatures (19)
                assert!(
                    [15, 16, 19].contains(&code),
                    "{name} and {prev} share exit code {code}"
                );
            }
        }
        n += 1;
    }
    assert!(n >= 18, "only {n} fixtures found");
}

#[test]
fn threshold_needs_distinct_trusted_signers() {
    let data = repo().join("tests/data");
    let dev = repo().join("signing/dev.pub");
    let other = data.join("keys/other.pub");
    let one = data.join("good/bundle.ferry");
    let two = data.join("two-signatures/bundle.ferry");
    let both = |bundle: &std::path::Path| {
        ferry(&[
            "bundle",
            "verify",
            "--key",
            s(&dev),
            "--key",
            s(&other),
            "--threshold",
            "2",
            s(bundle),
        ])
    };
    let o = both(&one);
    assert_eq!(o.code, 18, "{}", o.stderr);
    assert!(o.stderr.contains("1 valid, 2 required"));
    let o = both(&two);
    assert_eq!(o.code, 0, "{}", o.stderr);
    // a keyring directory works the same way
    let ring = tempfile::tempdir().unwrap();
    std::fs::copy(&dev, ring.path().join("dev.pub")).unwrap();
    std::fs::copy(&other, ring.path().join("other.pub")).unwrap();
    ok(&[
        "bundle",
        "verify",
        "--keyring",
        s(ring.path()),
        "--threshold",
        "2",
        s(&two),
    ]);
}

#[test]
fn create_verify_inspect_sign_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    ok(&["key", "generate", "k1", "--dir", s(p)]);
    ok(&["key", "generate", "k2", "--dir", s(p)]);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(p.join("k1.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let again = ferry(&["key", "generate", "k1", "--dir", s(p)]);
    assert_ne!(again.code, 0);
    assert!(
        again.stderr.contains("refusing to overwrite"),
        "{}",
        again.stderr
    );

    let rootfs = payload(5, 3_000_000);
    std::fs::write(p.join("rootfs"), &rootfs).unwrap();
    std::fs::write(p.join("kernel"), payload(6, 100_000)).unwrap();
    std::fs::write(p.join("extra"), b"hello").unwrap();
    ok(&[
        "bundle",
        "create",
        "--board",
        "qemu-aarch64-virt",
        "--version",
        "2.1.0-rc.1",
        "--rootfs",
        s(&p.join("rootfs")),
        "--kernel",
        s(&p.join("kernel")),
        "--payload",
        &format!("notes:notes:{}", s(&p.join("extra"))),
        "--key",
        s(&p.join("k1.key")),
        "--min-installed-version",
        "2.0.0",
        "-o",
        s(&p.join("b.ferry")),
    ]);
    let v = ok(&[
        "bundle",
        "verify",
        "--key",
        s(&p.join("k1.pub")),
        s(&p.join("b.ferry")),
    ]);
    assert!(
        v.contains(&format!("{} bytes installed", 3_000_000 + 100_000 + 5)),
        "{v}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&ok(&["bundle", "inspect", "--json", s(&p.join("b.ferry"))])).unwrap();
    assert_eq!(j["manifest"]["version"], "2.1.0-rc.1");
    assert_eq!(j["manifest"]["min_installed_version"], "2.0.0");
    assert_eq!(j["manifest"]["payloads"][0]["name"], "kernel");
    assert_eq!(
        j["manifest"]["payloads"][1]["chunks"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        j["bundle_size"].as_u64().unwrap(),
        std::fs::metadata(p.join("b.ferry")).unwrap().len()
    );
    // the second key holder adds a signature; threshold 2 then holds
    let (k1, k2, b) = (p.join("k1.pub"), p.join("k2.pub"), p.join("b.ferry"));
    let two = [
        "bundle",
        "verify",
        "--key",
        s(&k1),
        "--key",
        s(&k2),
        "--threshold",
        "2",
        s(&b),
    ];
    assert_eq!(ferry(&two).code, 18);
    // a co-signer is shown what it signs and must confirm (no terminal: --yes)
    let o = ferry(&["bundle", "sign", "--key", s(&p.join("k2.key")), s(&b)]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("without --yes"), "{}", o.stderr);
    assert!(o.stderr.contains("manifest "), "{}", o.stderr);
    let o = ferry(&[
        "bundle",
        "sign",
        "--yes",
        "--key",
        s(&p.join("k2.key")),
        s(&b),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains("every payload checks out"),
        "{}",
        o.stderr
    );
    ok(&two);
    // a bundle whose payload was altered is not signed, whatever the holder says
    let bad = repo().join("tests/data/flipped-payload-byte/bundle.ferry");
    let copy = p.join("bad.ferry");
    std::fs::copy(&bad, &copy).unwrap();
    let o = ferry(&[
        "bundle",
        "sign",
        "--yes",
        "--key",
        s(&p.join("k2.key")),
        s(&copy),
    ]);
    assert_eq!(o.code, 20, "{}", o.stderr);
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&bad).unwrap());
    // a key that signed nothing here is not trusted
    let o = ferry(&[
        "bundle",
        "verify",
        "--key",
        s(&p.join("k2.pub")),
        "--key",
        s(&repo().join("signing/dev.pub")),
        "--threshold",
        "2",
        s(&p.join("b.ferry")),
    ]);
    assert_eq!(o.code, 18);
}

#[test]
fn flipping_any_byte_is_caught() {
    // Every region: header, manifest, signatures, each payload. Sampled
    // positions across the whole file; never a pass, never a panic.
    let good = std::fs::read(repo().join("tests/data/good/bundle.ferry")).unwrap();
    let d = tempfile::tempdir().unwrap();
    let key = repo().join("signing/dev.pub");
    let step = (good.len() / 60).max(1);
    let mut tried = 0;
    for pos in (0..good.len())
        .step_by(step)
        .chain([8, 12, 16, 20, good.len() - 1])
    {
        let mut b = good.clone();
        b[pos] ^= 0x01;
        let f = d.path().join("x.ferry");
        std::fs::write(&f, &b).unwrap();
        let o = ferry(&["bundle", "verify", "-q", "--key", s(&key), s(&f)]);
        assert!(
            o.code >= 10 && o.code < 30,
            "byte {pos}: exit {} {}",
            o.code,
            o.stderr
        );
        tried += 1;
    }
    assert!(tried > 60);
}

/// Keys from OpenSSL work as they are, ferry's keys export to what OpenSSL
/// reads, and a signer outside ferry (here `openssl pkeyutl`, standing in
/// for an HSM or KMS) adds a threshold signature through `--sign-command`.
#[test]
fn openssl_keys_and_an_external_signer() {
    use std::process::Command;
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let sh = |c: &str| {
        let o = Command::new("sh")
            .arg("-c")
            .arg(c)
            .current_dir(p)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{c}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    sh("openssl genpkey -algorithm ed25519 -out root.pem && openssl pkey -in root.pem -pubout -out root.pub.pem");
    sh("openssl genpkey -algorithm ed25519 -out hsm.pem && openssl pkey -in hsm.pem -pubout -out hsm.pub.pem");
    std::fs::write(p.join("k"), payload(1, 100_000)).unwrap();
    std::fs::write(p.join("r"), payload(2, 300_000)).unwrap();
    std::fs::write(p.join("s"), payload(3, 10_000)).unwrap();
    let b = p.join("b.ferry");
    ok(&[
        "bundle",
        "create",
        "-q",
        "--board",
        "qemu-aarch64-virt",
        "--version",
        "1.0.0",
        "--kernel",
        s(&p.join("k")),
        "--rootfs",
        s(&p.join("r")),
        "--k3s",
        s(&p.join("s")),
        "--key",
        s(&p.join("root.pem")),
        "-o",
        s(&b),
    ]);
    ok(&[
        "bundle",
        "verify",
        "--key",
        s(&p.join("root.pub.pem")),
        s(&b),
    ]);
    // ferry's export is what openssl derives
    let exported = ok(&["key", "export", s(&p.join("root.pub.pem"))]);
    assert_eq!(
        exported,
        std::fs::read_to_string(p.join("root.pub.pem")).unwrap()
    );
    ok(&["key", "generate", "own", "--dir", s(p)]);
    let pem = ok(&["key", "export", s(&p.join("own.key"))]);
    std::fs::write(p.join("own.pem"), pem).unwrap();
    let from_openssl = sh("openssl pkey -in own.pem -pubout");
    let ours = ok(&["key", "export", s(&p.join("own.pub"))]);
    assert_eq!(from_openssl, ours);
    // the HSM stand-in signs what ferry gives it on stdin
    let cmd = format!(
        "f=$(mktemp) && cat > $f && openssl pkeyutl -sign -inkey {} -rawin -in $f; r=$?; rm -f $f; exit $r",
        p.join("hsm.pem").display()
    );
    let (rp, hp) = (p.join("root.pub.pem"), p.join("hsm.pub.pem"));
    let two = [
        "bundle",
        "verify",
        "--key",
        s(&rp),
        "--key",
        s(&hp),
        "--threshold",
        "2",
        s(&b),
    ];
    assert_eq!(ferry(&two).code, 18);
    ok(&[
        "bundle",
        "sign",
        "--yes",
        "--sign-command",
        &cmd,
        "--signer",
        s(&p.join("hsm.pub.pem")),
        s(&b),
    ]);
    ok(&two);
    // a signer that signs with another key than it claims is caught
    let o = ferry(&[
        "bundle",
        "sign",
        "--yes",
        "--sign-command",
        &cmd,
        "--signer",
        s(&p.join("root.pub.pem")),
        s(&b),
    ]);
    assert_eq!(o.code, 50, "{}", o.stderr);
    assert!(o.stderr.contains("does not verify"), "{}", o.stderr);
}
