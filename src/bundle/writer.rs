//! Building and signing bundles (host side only). Each input is cut into
//! `chunk_size` blocks, each compressed as an independent zstd frame, so a
//! device can authenticate, decompress and resume chunk by chunk. Compressed
//! data is spooled to a temporary file next to the output, then the signed
//! manifest is written first and the payloads copied after it; the output
//! appears atomically (rename) only when complete.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::format::{encode_signatures, Header, FORMAT_VERSION, MAX_MANIFEST};
use super::keys::SecretKey;
use super::manifest::{
    chunk_root, safe_name, Chunk, Compression, Manifest, Payload, Sha256Digest, MANIFEST_FORMAT,
};
use crate::error::{BundleError, Error};

/// One input file and where it goes.
#[derive(Debug, Clone)]
pub(crate) struct Input {
    pub name: String,
    pub target: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub compatible: String,
    pub version: semver::Version,
    pub min_installed_version: Option<semver::Version>,
    pub created: u64,
    pub chunk_size: u32,
    pub level: i32,
}

fn window_log(chunk_size: u32) -> u32 {
    // a frame never needs a window larger than its content
    chunk_size.trailing_zeros().max(10)
}

/// Build a bundle at `output`. `progress` gets input bytes consumed.
pub(crate) fn create(
    inputs: &[Input],
    opts: &Options,
    keys: &[SecretKey],
    output: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<Manifest, Error> {
    if keys.is_empty() {
        return Err(Error::Usage(
            "at least one --key is required to sign a bundle".into(),
        ));
    }
    for i in inputs {
        if !safe_name(&i.name) || !safe_name(&i.target) {
            return Err(Error::Usage(format!(
                "payload name/target {:?}/{:?} is not safe",
                i.name, i.target
            )));
        }
    }
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let fname = output
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let spool_path = dir.join(format!(".{fname}.payloads.tmp"));
    let out_tmp = dir.join(format!(".{fname}.tmp"));
    let result = (|| {
        let mut spool = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&spool_path)
            .map_err(|e| Error::io("create", &spool_path, e))?;
        let mut payloads = Vec::new();
        {
            let mut w = BufWriter::with_capacity(1 << 20, &mut spool);
            for inp in inputs {
                payloads.push(compress_one(inp, opts, &mut w, &spool_path, progress)?);
            }
            w.flush().map_err(|e| Error::io("write", &spool_path, e))?;
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            version: opts.version.clone(),
            compatible: opts.compatible.clone(),
            min_installed_version: opts.min_installed_version.clone(),
            created: opts.created,
            chunk_size: opts.chunk_size,
            payloads,
            requires: vec![],
            extensions: Default::default(),
        };
        manifest.validate().map_err(Error::Bundle)?;
        let mbytes = manifest.to_bytes();
        if mbytes.len() > MAX_MANIFEST as usize {
            return Err(BundleError::ManifestTooLarge {
                len: mbytes.len() as u64,
                max: MAX_MANIFEST.into(),
            }
            .into());
        }
        let sigs: Vec<_> = keys
            .iter()
            .map(|k| k.sign(super::keys::Context::Bundle, &mbytes))
            .collect();
        let sbytes = encode_signatures(&sigs);
        let header = Header {
            format: FORMAT_VERSION,
            manifest_len: mbytes.len() as u32,
            sigs_len: sbytes.len() as u32,
        };
        let out = File::create(&out_tmp).map_err(|e| Error::io("create", &out_tmp, e))?;
        let mut w = BufWriter::with_capacity(1 << 20, out);
        let werr = |e| Error::io("write", &out_tmp, e);
        w.write_all(&header.encode()).map_err(werr)?;
        w.write_all(&mbytes).map_err(werr)?;
        w.write_all(&sbytes).map_err(werr)?;
        spool
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("seek", &spool_path, e))?;
        std::io::copy(&mut spool, &mut w).map_err(werr)?;
        let out = w.into_inner().map_err(|e| werr(e.into_error()))?;
        out.sync_all().map_err(werr)?;
        std::fs::rename(&out_tmp, output).map_err(|e| Error::io("rename", output, e))?;
        Ok(manifest)
    })();
    let _ = std::fs::remove_file(&spool_path);
    if result.is_err() {
        let _ = std::fs::remove_file(&out_tmp);
    }
    result
}

fn compress_one(
    inp: &Input,
    opts: &Options,
    w: &mut impl Write,
    spool_path: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<Payload, Error> {
    let mut f = File::open(&inp.path).map_err(|e| Error::io("open payload", &inp.path, e))?;
    let mut comp = zstd::bulk::Compressor::new(opts.level)
        .map_err(|e| Error::io("create zstd encoder", "zstd", e))?;
    comp.include_checksum(false)
        .map_err(|e| Error::io("configure zstd encoder", "zstd", e))?;
    comp.include_contentsize(true)
        .map_err(|e| Error::io("configure zstd encoder", "zstd", e))?;
    let mut buf = vec![0u8; opts.chunk_size as usize];
    let mut installed = Sha256::new();
    let mut installed_size = 0u64;
    let mut chunks = Vec::new();
    loop {
        let n = read_full(&mut f, &mut buf).map_err(|e| Error::io("read payload", &inp.path, e))?;
        if n == 0 {
            break;
        }
        installed.update(&buf[..n]);
        installed_size += n as u64;
        let z = comp
            .compress(&buf[..n])
            .map_err(|e| Error::io("compress", &inp.path, e))?;
        w.write_all(&z)
            .map_err(|e| Error::io("write", spool_path, e))?;
        chunks.push(Chunk {
            size: z.len() as u32,
            sha256: Sha256Digest::of(&z),
        });
        progress(n as u64);
        if n < buf.len() {
            break;
        }
    }
    if installed_size == 0 {
        return Err(Error::Usage(format!(
            "payload {} ({}) is empty",
            inp.name,
            inp.path.display()
        )));
    }
    Ok(Payload {
        name: inp.name.clone(),
        target: inp.target.clone(),
        compression: Compression::Zstd,
        window_log_max: window_log(opts.chunk_size),
        size: chunks.iter().map(|c| u64::from(c.size)).sum(),
        sha256: chunk_root(&chunks),
        installed_size,
        installed_sha256: Sha256Digest(installed.finalize().into()),
        chunks,
    })
}

/// Read until `buf` is full or EOF; returns bytes read.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Add a signature to an existing bundle (threshold signing by several key
/// holders), or replace all signatures. The manifest bytes are not parsed
/// or changed: what is signed is exactly what was there.
pub(crate) fn sign(
    input: &Path,
    signer: &mut super::keys::SignFn<'_>,
    replace: bool,
    output: &Path,
) -> Result<usize, Error> {
    use super::format::{parse_signatures, HEADER_LEN};
    let mut f = File::open(input).map_err(|e| Error::io("open bundle", input, e))?;
    let mut hb = [0u8; HEADER_LEN];
    f.read_exact(&mut hb)
        .map_err(|e| Error::io("read bundle", input, e))?;
    let h = Header::parse(&hb)?;
    let mut mbytes = vec![0u8; h.manifest_len as usize];
    f.read_exact(&mut mbytes)
        .map_err(|e| Error::io("read bundle", input, e))?;
    let mut sbytes = vec![0u8; h.sigs_len as usize];
    f.read_exact(&mut sbytes)
        .map_err(|e| Error::io("read bundle", input, e))?;
    let mut sigs = if replace || sbytes.is_empty() {
        Vec::new()
    } else {
        parse_signatures(&sbytes)?
    };
    let new = signer(super::keys::Context::Bundle, &mbytes)?;
    sigs.retain(|s| s.key_id != new.key_id);
    sigs.push(new);
    if sigs.len() > super::format::MAX_SIGNATURES {
        return Err(BundleError::BadSignatureBlock("too many signatures".into()).into());
    }
    let sbytes = encode_signatures(&sigs);
    let header = Header {
        sigs_len: sbytes.len() as u32,
        ..h
    };
    let fname = output
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{fname}.tmp"));
    let res = (|| {
        let mut w = BufWriter::with_capacity(
            1 << 20,
            File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?,
        );
        let werr = |e| Error::io("write", &tmp, e);
        w.write_all(&header.encode()).map_err(werr)?;
        w.write_all(&mbytes).map_err(werr)?;
        w.write_all(&sbytes).map_err(werr)?;
        std::io::copy(&mut f, &mut w).map_err(werr)?;
        w.into_inner()
            .map_err(|e| werr(e.into_error()))?
            .sync_all()
            .map_err(werr)?;
        std::fs::rename(&tmp, output).map_err(|e| Error::io("rename", output, e))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map(|_| sigs.len())
}
