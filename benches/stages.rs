//! Per-stage throughput of the install pipeline, one core each (std::time only).
//!
//!     cargo bench --bench stages            # synthetic rootfs-like data
//!     FERRY_BENCH_DATA=rootfs.img cargo bench --bench stages   # 64 MiB sampled from an image
//!
//! Each measurement runs ROUNDS times on the calling thread; the median is
//! printed. Output: one tab-separated line per stage for benches/run.sh to
//! parse (`stage<TAB>value<TAB>unit<TAB>note`), then a human summary.
//!
//! Stages, with the crates and settings ferry uses on the device:
//! - sha256: sha2 0.10 over compressed-chunk-sized buffers (the read stage
//!   hashes every compressed chunk; read-back hashes the installed bytes);
//! - zstd-decompress: 1 MiB chunks compressed at level 9 as independent frames
//!   (content size in the header, no checksum), decompressed with
//!   `zstd::bulk::Decompressor::decompress_to_buffer` into a reused buffer
//!   with WindowLogMax 20, i.e. exactly the decode stage; MB/s of output;
//! - zstd-compress (host side, `bundle create`): same frames, level 9;
//! - ed25519-verify: `Keyring::verify` (verify_strict) over a 1 KiB message
//!   and over a 128 KiB one (about the manifest of a 1 GiB bundle; ed25519
//!   hashes the whole message with SHA-512).

use std::hint::black_box;
use std::time::{Duration, Instant};

use ferry::bundle::format::SignatureEntry;
use ferry::bundle::{Keyring, SecretKey};
use sha2::{Digest as _, Sha256};

const MIB: usize = 1 << 20;
const CHUNK: usize = MIB;
const LEVEL: i32 = 9;
const DATA_MIB: usize = 64;
const ROUNDS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

/// Deterministic rootfs-like bytes (same recipe as benches/gen-rootfs.py, by
/// 4 KiB block: 30% random, 10% zero, 30% skewed 16-symbol alphabet, 30%
/// slices of a word list), used when FERRY_BENCH_DATA is not set.
fn synthetic(len: usize) -> Vec<u8> {
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let syms = b"\x00\x01\x02\x03\x04\xff\x48\x89\x8b\xe8\x24\x45\x0f\xc3\x10\x20";
    let weights = [64u32, 40, 30, 24, 18, 14, 12, 10, 9, 8, 7, 6, 5, 4, 3, 2];
    let mut table = Vec::with_capacity(256);
    for (s, w) in syms.iter().zip(weights) {
        table.extend(std::iter::repeat_n(*s, w as usize));
    }
    let letters = b"etaoinshrdlucmfwypvbgkqjxz";
    let mut dict = Vec::new();
    while dict.len() < 64 * 1024 {
        let n = 2 + (next() % 9) as usize;
        for _ in 0..n {
            dict.push(letters[(next() % letters.len() as u64) as usize]);
        }
        dict.push(b' ');
    }
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let kind = next() % 10;
        let mut block = Vec::with_capacity(4096);
        match kind {
            0..=2 => {
                while block.len() < 4096 {
                    block.extend_from_slice(&next().to_le_bytes());
                }
            }
            3 => block.resize(4096, 0),
            4..=6 => {
                while block.len() < 4096 {
                    for b in next().to_le_bytes() {
                        block.push(table[b as usize]);
                    }
                }
            }
            _ => {
                while block.len() < 4096 {
                    let k = 8 + (next() % 89) as usize;
                    let o = (next() as usize) % (dict.len() - k);
                    block.extend_from_slice(&dict[o..o + k]);
                }
            }
        }
        block.truncate(4096);
        out.extend_from_slice(&block);
    }
    out.truncate(len);
    out
}

/// FERRY_BENCH_DATA: 64 chunks of 1 MiB sampled evenly across the file (an
/// ext4 image starts with metadata; the samples see data, metadata and free
/// space in proportion). Otherwise synthetic data.
fn load_data() -> (Vec<u8>, String) {
    if let Ok(p) = std::env::var("FERRY_BENCH_DATA") {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let mut f = std::fs::File::open(&p).expect("open FERRY_BENCH_DATA");
        let len = f.metadata().expect("stat FERRY_BENCH_DATA").len() as usize;
        assert!(
            len >= DATA_MIB * MIB,
            "FERRY_BENCH_DATA is shorter than {DATA_MIB} MiB"
        );
        let step = (len / CHUNK) / DATA_MIB;
        let mut v = vec![0u8; DATA_MIB * MIB];
        for (i, c) in v.chunks_mut(CHUNK).enumerate() {
            f.seek(SeekFrom::Start((i * step * CHUNK) as u64))
                .expect("seek FERRY_BENCH_DATA");
            f.read_exact(c).expect("read FERRY_BENCH_DATA");
        }
        (v, format!("{DATA_MIB} x 1 MiB sampled from {p}"))
    } else {
        (
            synthetic(DATA_MIB * MIB),
            format!("{DATA_MIB} MiB synthetic"),
        )
    }
}

fn line(stage: &str, value: f64, unit: &str, note: &str) {
    println!("{stage}\t{value:.1}\t{unit}\t{note}");
}

fn main() {
    // `cargo bench` passes --bench; a filter argument is not supported.
    let (data, source) = load_data();
    let total = data.len();

    // zstd compress, level 9, independent 1 MiB frames (as `bundle create`).
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut times = Vec::new();
    for r in 0..ROUNDS.min(3) {
        let mut comp = zstd::bulk::Compressor::new(LEVEL).unwrap();
        comp.include_checksum(false).unwrap();
        comp.include_contentsize(true).unwrap();
        let t = Instant::now();
        let f: Vec<Vec<u8>> = data
            .chunks(CHUNK)
            .map(|c| comp.compress(c).unwrap())
            .collect();
        times.push(mbps(total, t.elapsed()));
        if r == 0 {
            frames = f;
        }
    }
    let zsize: usize = frames.iter().map(Vec::len).sum();
    let ratio = total as f64 / zsize as f64;
    let compress = median(times);

    // zstd decompress into a reused buffer, as the decode stage does.
    let mut dec = zstd::bulk::Decompressor::new().unwrap();
    dec.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(20))
        .unwrap();
    let mut out = vec![0u8; CHUNK];
    let mut times = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for f in &frames {
            let n = dec.decompress_to_buffer(&f[..], &mut out[..]).unwrap();
            black_box(&out[..n]);
        }
        times.push(mbps(total, t.elapsed()));
    }
    let decompress = median(times);

    // SHA-256 over the installed bytes in 1 MiB updates (read-back) and over
    // the compressed frames (the read stage's per-chunk digests).
    let mut times = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let mut h = Sha256::new();
        for c in data.chunks(CHUNK) {
            h.update(c);
        }
        black_box(h.finalize());
        times.push(mbps(total, t.elapsed()));
    }
    let sha = median(times);
    let mut times = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for f in &frames {
            black_box(Sha256::digest(&f[..]));
        }
        times.push(mbps(zsize, t.elapsed()));
    }
    let sha_frames = median(times);

    // ed25519 through ferry's Keyring (verify_strict, threshold 1).
    let key = SecretKey::from_seed("bench", [7u8; 32]);
    let ring = Keyring::new(vec![key.public()], 1);
    let mut ed = Vec::new();
    for msg_len in [1024usize, 128 * 1024] {
        let msg: Vec<u8> = (0..msg_len).map(|i| (i * 31 % 251) as u8).collect();
        let sigs: Vec<SignatureEntry> = vec![key.sign(ferry::bundle::keys::Context::Bundle, &msg)];
        let iters = if msg_len <= 1024 { 2000 } else { 500 };
        let mut times = Vec::new();
        for _ in 0..ROUNDS {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(
                    ring.verify(ferry::bundle::keys::Context::Bundle, black_box(&msg), &sigs)
                        .unwrap(),
                );
            }
            times.push(iters as f64 / t.elapsed().as_secs_f64());
        }
        ed.push((msg_len, median(times)));
    }

    let note = format!("{source}, ratio {ratio:.2}");
    line("sha256", sha, "MB/s", "installed bytes, 1 MiB updates");
    line(
        "sha256-frames",
        sha_frames,
        "MB/s",
        "compressed frames, one digest each",
    );
    line(
        "zstd-decompress",
        decompress,
        "MB/s",
        &format!("output bytes; level {LEVEL}, 1 MiB frames; {note}"),
    );
    line(
        "zstd-compress",
        compress,
        "MB/s",
        &format!("input bytes; level {LEVEL}, 1 MiB frames (host side)"),
    );
    for (len, ops) in &ed {
        line(
            &format!("ed25519-verify-{}k", len / 1024),
            *ops,
            "ops/s",
            "Keyring::verify, verify_strict",
        );
    }
    eprintln!(
        "data: {note}; {ROUNDS} rounds (compress {}), medians, one thread",
        ROUNDS.min(3)
    );
}
