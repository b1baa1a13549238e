//! `ferry bundle create | verify | inspect`.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use crate::bundle::format::hex;
use crate::bundle::reader::{self, DigestSink};
use crate::error::Error;

fn open_file(path: &Path) -> Result<BufReader<File>, Error> {
    let f = File::open(path).map_err(|e| Error::io("open bundle", path, e))?;
    Ok(BufReader::with_capacity(64 << 10, f))
}

pub(super) fn verify(
    path: &Path,
    keys: &[PathBuf],
    keyrings: &[PathBuf],
    threshold: usize,
    quiet: bool,
) -> Result<(), Error> {
    let ring = crate::io::keyfiles::load_keyring(keys, keyrings, threshold)?;
    let mut sink = DigestSink::default();
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let bar = super::progress::bar(len, "verify", quiet);
    if let Some(b) = bar.clone() {
        sink.progress = Some(Box::new(move |n| b.inc(n)));
    }
    let b = reader::verify(open_file(path)?, &ring, &mut sink)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let signers: Vec<String> = b.signers.iter().map(|k| hex(k)).collect();
    println!(
        "ok: {} {} for {}, {} payloads, {} bytes installed, signed by {}",
        path.display(),
        b.manifest.version,
        b.manifest.compatible,
        b.manifest.payloads.len(),
        sink.bytes,
        signers.join(",")
    );
    Ok(())
}

pub(super) fn inspect(path: &Path, json: bool) -> Result<(), Error> {
    let b = reader::open(&mut open_file(path)?, None)?;
    let m = &b.manifest;
    if json {
        let v = serde_json::json!({
            "manifest_sha256": b.manifest_digest.to_string(),
            "signatures": b.signature_ids.iter().map(|k| hex(k)).collect::<Vec<_>>(),
            "bundle_size": b.total_len(),
            "manifest": m,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    println!("bundle     {}", path.display());
    println!("format     {}", b.header.format);
    println!("version    {}", m.version);
    println!("compatible {}", m.compatible);
    if let Some(v) = &m.min_installed_version {
        println!("min-installed {v}");
    }
    println!("created    {}", m.created);
    println!("manifest   sha256:{}", b.manifest_digest);
    println!(
        "signatures {}",
        b.signature_ids
            .iter()
            .map(|k| hex(k))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("chunk-size {}", m.chunk_size);
    for p in &m.payloads {
        println!(
            "payload    {:<10} target={:<8} {} -> {} bytes, {} chunks, installed sha256:{}",
            p.name,
            p.target,
            p.size,
            p.installed_size,
            p.chunks.len(),
            p.installed_sha256
        );
    }
    println!("unverified: use `ferry bundle verify` to check signatures and payloads");
    Ok(())
}

#[cfg(feature = "host")]
pub(super) struct CreateArgs {
    pub board: String,
    pub version: String,
    pub min_installed: Option<String>,
    pub payloads: Vec<crate::bundle::writer::Input>,
    pub keys: Vec<PathBuf>,
    pub output: PathBuf,
    pub chunk_size: u32,
    pub level: i32,
    pub created: Option<u64>,
}

#[cfg(feature = "host")]
pub(super) fn create(a: CreateArgs, quiet: bool) -> Result<(), Error> {
    use crate::bundle::writer;
    let version = semver::Version::parse(&a.version)
        .map_err(|e| Error::Usage(format!("--version {:?} is not semver: {e}", a.version)))?;
    let min_installed_version = a
        .min_installed
        .as_deref()
        .map(semver::Version::parse)
        .transpose()
        .map_err(|e| Error::Usage(format!("--min-installed-version is not semver: {e}")))?;
    let keys = a
        .keys
        .iter()
        .map(|k| crate::io::keyfiles::read_secret(k))
        .collect::<Result<Vec<_>, _>>()?;
    let total: u64 = a
        .payloads
        .iter()
        .filter_map(|p| std::fs::metadata(&p.path).ok())
        .map(|m| m.len())
        .sum();
    let created = a.created.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    let opts = writer::Options {
        compatible: a.board,
        version,
        min_installed_version,
        created,
        chunk_size: a.chunk_size,
        level: a.level,
    };
    let bar = super::progress::bar(total, "compress", quiet);
    let mut tick = |n: u64| {
        if let Some(b) = &bar {
            b.inc(n)
        }
    };
    let m = writer::create(&a.payloads, &opts, &keys, &a.output, &mut tick)?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let size = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    println!(
        "{}: {} for {}, {} payloads, {} bytes",
        a.output.display(),
        m.version,
        m.compatible,
        m.payloads.len(),
        size
    );
    Ok(())
}

#[cfg(feature = "host")]
/// Before a key holder adds a signature: the manifest must obey its rules
/// and every chunk and payload digest must hold (the bundle is read whole,
/// unauthenticated), and what is being signed is shown; on a terminal the
/// holder confirms, without one `--yes` is required.
pub(super) fn review_for_signing(file: &Path, yes: bool) -> Result<(), Error> {
    use std::io::IsTerminal as _;
    let f = std::fs::File::open(file).map_err(|e| Error::io("open bundle", file, e))?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let b = crate::bundle::reader::open(&mut r, None)?;
    let mut sink = crate::bundle::reader::DigestSink::default();
    crate::bundle::reader::stream(r, &b, Default::default(), true, &mut sink)?;
    let m = &b.manifest;
    eprintln!("bundle   {}", file.display());
    eprintln!("version  {}", m.version);
    eprintln!("board    {}", m.compatible);
    eprintln!("manifest {}", b.manifest_digest);
    for p in &m.payloads {
        eprintln!(
            "payload  {} -> {} ({} bytes, sha256 {})",
            p.name, p.target, p.installed_size, p.installed_sha256
        );
    }
    eprintln!(
        "signed   by {} key(s) so far; every payload checks out",
        b.signature_ids.len()
    );
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(
            "refusing to sign without --yes (no terminal to confirm on)".into(),
        ));
    }
    eprint!("Sign this bundle? [y/N] ");
    let mut a = String::new();
    let _ = std::io::stdin().read_line(&mut a);
    if !matches!(a.trim(), "y" | "Y" | "yes") {
        return Err(Error::Usage("not confirmed".into()));
    }
    Ok(())
}

#[cfg(feature = "host")]
/// `feed publish` lists only a bundle that verifies in full against `ring`.
pub(super) fn verify_for_publish(file: &Path, ring: &crate::bundle::Keyring) -> Result<(), Error> {
    let f = std::fs::File::open(file).map_err(|e| Error::io("open bundle", file, e))?;
    let mut sink = crate::bundle::reader::DigestSink::default();
    crate::bundle::reader::verify(
        std::io::BufReader::with_capacity(1 << 20, f),
        ring,
        &mut sink,
    )?;
    Ok(())
}
