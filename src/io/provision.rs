//! `ferry provision` (host only): personalise a flashed card or an image
//! before first boot, as k3OS's config.yaml did. The settings go into the
//! data partition (ext4, via e2fsprogs' debugfs) as `provision/node.toml`
//! (0600) with `provision/authorized_keys` (0600) and
//! `provision/identity/client.{crt,key}` (0644/0600); the OS applies them on
//! first boot (README "Provisioning"). Secrets are never logged or reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use super::disk::Disk;
use crate::error::Error;

pub use crate::settings::{Feed, Identity, K3s, NodeConfig, Wifi};

fn bad(what: impl Into<String>) -> Error {
    Error::Usage(what.into())
}

/// The device identity as PEM (certificate, key).
fn identity_pem(cfg: &NodeConfig) -> Result<Option<(String, String)>, Error> {
    let Some(id) = &cfg.identity else {
        return Ok(None);
    };
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| Error::io("read identity", p, e));
    match (&id.cert, &id.key, id.generate) {
        (Some(c), Some(k), false) => Ok(Some((read(c)?, read(k)?))),
        (None, None, true) => {
            let cn = cfg
                .hostname
                .clone()
                .unwrap_or_else(|| "ferry-device".into());
            let mut params = rcgen::CertificateParams::new(vec![cn.clone()])
                .map_err(|e| bad(format!("identity: {e}")))?;
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            let key = rcgen::KeyPair::generate().map_err(|e| bad(format!("identity key: {e}")))?;
            let cert = params
                .self_signed(&key)
                .map_err(|e| bad(format!("identity certificate: {e}")))?;
            Ok(Some((cert.pem(), key.serialize_pem())))
        }
        _ => Err(bad("identity: give cert and key, or generate = true")),
    }
}

/// Write the provisioning files into the data partition of `disk` (an
/// image file or a card). Re-running replaces them (idempotent).
pub(crate) fn provision(
    disk_path: &Path,
    data_part: &str,
    cfg: &NodeConfig,
) -> Result<BTreeMap<String, String>, Error> {
    cfg.validate()?;
    let disk = Disk::open(disk_path, true)?;
    let p = disk.partition(data_part)?.clone();
    let work = tempfile_dir()?;
    let result = (|| {
        let stage = work.join("stage");
        std::fs::create_dir_all(&stage).map_err(|e| Error::io("create", &stage, e))?;
        let mut files: Vec<(String, PathBuf, u32)> = Vec::new();
        let mut add = |name: &str, body: &[u8], mode: u32| -> Result<(), Error> {
            let f = stage.join(name.replace('/', "_"));
            std::fs::write(&f, body).map_err(|e| Error::io("write", &f, e))?;
            files.push((name.to_string(), f, mode));
            Ok(())
        };
        let toml = toml_string(cfg)?;
        add("provision/node.toml", toml.as_bytes(), 0o600)?;
        if !cfg.ssh_authorized_keys.is_empty() {
            add(
                "provision/authorized_keys",
                (cfg.ssh_authorized_keys.join("\n") + "\n").as_bytes(),
                0o600,
            )?;
        }
        if let Some(k) = &cfg.kubeconfig {
            add("provision/kubeconfig", &device_kubeconfig(k)?, 0o600)?;
        }
        if let Some((c, k)) = identity_pem(cfg)? {
            add("provision/identity/client.crt", c.as_bytes(), 0o644)?;
            add("provision/identity/client.key", k.as_bytes(), 0o600)?;
        }
        // the partition, out and back: debugfs works on a file
        let img = work.join("data.img");
        copy_out(&disk, p.offset(), p.len(), &img)?;
        let mut script =
            String::from("mkdir provision\nmkdir provision/identity\nsif provision mode 040700\n");
        for (name, src, mode) in &files {
            script.push_str(&format!("rm {name}\nwrite {} {name}\nsif {name} mode 0100{mode:o}\nsif {name} uid 0\nsif {name} gid 0\n", src.display()));
        }
        let cmd = work.join("cmds");
        std::fs::write(&cmd, script).map_err(|e| Error::io("write", &cmd, e))?;
        let out = Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&cmd)
            .arg(&img)
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    Error::Usage("debugfs not found: install e2fsprogs".into())
                }
                _ => Error::io("run debugfs", "debugfs", e),
            })?;
        if !out.status.success() {
            return Err(Error::Usage(format!(
                "debugfs failed on partition {data_part}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        // check what landed, byte for byte
        for (name, src, _) in &files {
            let got = Command::new("debugfs")
                .arg("-R")
                .arg(format!("cat {name}"))
                .arg(&img)
                .output()
                .map_err(|e| Error::io("run debugfs", "debugfs", e))?;
            let want = std::fs::read(src).map_err(|e| Error::io("read", src, e))?;
            if got.stdout != want {
                return Err(Error::Usage(format!(
                    "partition {data_part} is not an ext4 filesystem ferry can write {name} to"
                )));
            }
        }
        copy_in(&disk, p.offset(), &img)?;
        disk.sync()?;
        Ok(cfg.summary())
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// A kubeconfig for the card: it must parse as ferry reads kubeconfigs
/// (exec and auth plugins refused) and be self-contained (`*-data` fields,
/// an inline token): a path on this host means nothing on the device.
fn device_kubeconfig(p: &Path) -> Result<Vec<u8>, Error> {
    let text = std::fs::read_to_string(p).map_err(|e| Error::io("read kubeconfig", p, e))?;
    let dir = p.parent().unwrap_or(Path::new("."));
    let kc = crate::kube::kubeconfig::parse(&text, dir).map_err(|d| Error::Config {
        path: p.into(),
        detail: d,
    })?;
    if !kc.tls.ca.is_empty() || kc.tls.client_cert.is_some() || kc.token_file.is_some() {
        return Err(Error::Config {
            path: p.into(),
            detail: "it names files on this host (certificate-authority, client-certificate or tokenFile): use the *-data fields or an inline token".into(),
        });
    }
    Ok(text.into_bytes())
}

pub(crate) fn toml_string(cfg: &NodeConfig) -> Result<String, Error> {
    let mut c = cfg.clone();
    // identity source paths are host paths: the device gets the files
    c.identity = None;
    c.kubeconfig = None;
    let body = toml_ser(&c)?;
    Ok(format!(
        "# written by ferry provision; read by the OS on first boot\n{body}"
    ))
}

fn toml_ser(c: &NodeConfig) -> Result<String, Error> {
    // the toml crate's own writer: quoting and escapes as TOML defines them
    // (a control character in a label stays a valid string)
    toml::to_string(c).map_err(|e| bad(format!("node settings as TOML: {e}")))
}

fn tempfile_dir() -> Result<PathBuf, Error> {
    super::private_dir("ferry-provision")
}

const BLK: usize = 1 << 20;

fn copy_out(disk: &Disk, off: u64, len: u64, to: &Path) -> Result<(), Error> {
    use std::os::unix::fs::FileExt as _;
    let f = std::fs::File::create(to).map_err(|e| Error::io("create", to, e))?;
    f.set_len(len).map_err(|e| Error::io("size", to, e))?;
    let mut buf = vec![0u8; BLK];
    let mut pos = 0;
    while pos < len {
        let n = ((len - pos) as usize).min(BLK);
        disk.read_at(&mut buf[..n], off + pos)?;
        if buf[..n].iter().any(|&b| b != 0) {
            f.write_all_at(&buf[..n], pos)
                .map_err(|e| Error::io("write", to, e))?;
        }
        pos += n as u64;
    }
    Ok(())
}

/// Write back only the blocks that changed.
fn copy_in(disk: &Disk, off: u64, from: &Path) -> Result<(), Error> {
    use std::os::unix::fs::FileExt as _;
    let f = std::fs::File::open(from).map_err(|e| Error::io("open", from, e))?;
    let len = f.metadata().map_err(|e| Error::io("stat", from, e))?.len();
    let (mut a, mut b) = (vec![0u8; BLK], vec![0u8; BLK]);
    let mut pos = 0;
    while pos < len {
        let n = ((len - pos) as usize).min(BLK);
        f.read_exact_at(&mut a[..n], pos)
            .map_err(|e| Error::io("read", from, e))?;
        disk.read_at(&mut b[..n], off + pos)?;
        if a[..n] != b[..n] {
            disk.write_at(&a[..n], off + pos)?;
        }
        pos += n as u64;
    }
    Ok(())
}

/// One CSV row's outcome in a batch report (no secrets).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RowReport {
    pub row: usize,
    pub hostname: String,
    pub image: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub settings: BTreeMap<String, String>,
}

/// Split one CSV line (double quotes may wrap a field; "" is a quote).
/// Apply one row (column name -> value) on top of the template.
pub(crate) fn apply_row(
    template: &NodeConfig,
    row: &BTreeMap<String, String>,
) -> Result<NodeConfig, Error> {
    let mut c = template.clone();
    let list = |v: &str| {
        v.split(';')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect::<Vec<_>>()
    };
    for (k, v) in row.iter().filter(|(_, v)| !v.is_empty()) {
        match k.as_str() {
            "hostname" => c.hostname = Some(v.clone()),
            "role" => c.k3s.role = Some(v.clone()),
            "server_url" => c.k3s.server_url = Some(v.clone()),
            "token" => c.k3s.token = Some(v.clone()),
            "labels" => c.k3s.labels.extend(list(v)),
            "taints" => c.k3s.taints.extend(list(v)),
            "extra_args" => c.k3s.extra_args.extend(list(v)),
            "ssh_key" => c.ssh_authorized_keys.push(v.clone()),
            "wifi_ssid" => c.wifi.get_or_insert_with(Wifi::default).ssid = v.clone(),
            "wifi_psk" => c.wifi.get_or_insert_with(Wifi::default).psk = v.clone(),
            "feed_url" => c.feed.get_or_insert_with(Feed::default).url = v.clone(),
            "feed_channel" => c.feed.get_or_insert_with(Feed::default).channel = v.clone(),
            "ntp" => c.ntp = list(v),
            other => return Err(bad(format!("unknown column {other:?}"))),
        }
    }
    if c.hostname.is_none() {
        return Err(bad("row has no hostname"));
    }
    c.validate()?;
    Ok(c)
}

/// One personalised image per CSV row, under `out`. Rows whose inputs are
/// unchanged since the last run are skipped; a bad row is reported and the
/// others go on.
pub(crate) fn batch(
    csv: &str,
    template: &NodeConfig,
    base: &Path,
    data_part: &str,
    out: &Path,
) -> Result<Vec<RowReport>, Error> {
    use sha2::{Digest as _, Sha256};
    std::fs::create_dir_all(out).map_err(|e| Error::io("create", out, e))?;
    let md = std::fs::metadata(base).map_err(|e| Error::io("stat image", base, e))?;
    let base_id = format!("{}:{}:{:?}", base.display(), md.len(), md.modified().ok());
    // the csv crate: quoting, doubled quotes, multi-line fields; a
    // spreadsheet's byte-order mark is not part of the first column's name
    let csv = csv.strip_prefix('\u{feff}').unwrap_or(csv);
    let mut rd = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .comment(Some(b'#'))
        .trim(::csv::Trim::All)
        .from_reader(csv.as_bytes());
    let header: Vec<String> = rd
        .headers()
        .map_err(|e| bad(format!("CSV header: {e}")))?
        .iter()
        .map(String::from)
        .collect();
    if header.is_empty() {
        return Err(bad("empty CSV"));
    }
    let rows: Vec<Result<Vec<String>, String>> = rd
        .records()
        .map(|r| {
            r.map(|r| r.iter().map(String::from).collect())
                .map_err(|e| e.to_string())
        })
        .collect();
    // two rows naming one host would write one image twice: refuse both
    let mut seen: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let col = header.iter().position(|h| h == "hostname");
    for (i, r) in rows.iter().enumerate() {
        if let Some(h) = col.and_then(|c| r.as_ref().ok().and_then(|f| f.get(c).cloned())) {
            seen.entry(h).or_default().push(i + 1);
        }
    }
    let mut reports = Vec::new();
    for (i, r) in rows.into_iter().enumerate() {
        let (fields, line) = match r {
            Ok(f) => {
                let line = f.join("\u{1f}");
                (f, line)
            }
            Err(e) => (Vec::new(), format!("unreadable row: {e}")),
        };
        let row: BTreeMap<String, String> =
            header.iter().cloned().zip(fields.iter().cloned()).collect();
        let hostname = row.get("hostname").cloned().unwrap_or_default();
        let mut rep = RowReport {
            row: i + 1,
            hostname: hostname.clone(),
            image: String::new(),
            status: "error".into(),
            error: None,
            settings: BTreeMap::new(),
        };
        let r = (|| -> Result<&'static str, Error> {
            if fields.len() != header.len() {
                return Err(bad(format!(
                    "{} fields, the header has {}",
                    fields.len(),
                    header.len()
                )));
            }
            if hostname.trim().is_empty() {
                return Err(bad("row has an empty hostname"));
            }
            if let Some(dups) = seen.get(hostname.trim()).filter(|d| d.len() > 1) {
                return Err(bad(format!(
                    "hostname {hostname:?} appears in rows {dups:?}: each device needs its own"
                )));
            }
            let cfg = apply_row(template, &row)?;
            rep.settings = cfg.summary();
            let img = out.join(format!("{hostname}.img"));
            rep.image = img.display().to_string();
            let stamp_path = out.join(format!(".{hostname}.stamp"));
            let mut h = Sha256::new();
            h.update(base_id.as_bytes());
            h.update(toml_string(template)?.as_bytes());
            h.update(line.as_bytes());
            let stamp = crate::bundle::format::hex(&h.finalize());
            if img.exists()
                && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str())
            {
                return Ok("unchanged");
            }
            let tmp = out.join(format!(".{hostname}.img.tmp"));
            {
                // the image holds the join token and Wi-Fi keys: owner only
                use std::os::unix::fs::OpenOptionsExt as _;
                let _ = std::fs::remove_file(&tmp);
                std::fs::File::options()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(|e| Error::io("create", &tmp, e))?;
            }
            let res = super::flash::flash(base, &tmp, None, false, &mut |_| {})
                .and_then(|_| provision(&tmp, data_part, &cfg));
            if let Err(e) = res {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            std::fs::rename(&tmp, &img).map_err(|e| Error::io("rename", &img, e))?;
            std::fs::write(&stamp_path, stamp).map_err(|e| Error::io("write", &stamp_path, e))?;
            Ok("provisioned")
        })();
        match r {
            Ok(s) => rep.status = s.into(),
            Err(e) => rep.error = Some(e.to_string()),
        }
        reports.push(rep);
    }
    let rp = out.join("report.json");
    std::fs::write(&rp, serde_json::to_vec_pretty(&reports).unwrap_or_default())
        .map_err(|e| Error::io("write report", &rp, e))?;
    Ok(reports)
}
