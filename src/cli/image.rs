//! `ferry image build`.

use std::path::{Path, PathBuf};

use crate::error::Error;

#[allow(clippy::too_many_arguments)]
pub(super) fn build(
    board: &str,
    bundle: &Path,
    output: &Path,
    keys: &[PathBuf],
    rings: &[PathBuf],
    threshold: usize,
    state_dir: Option<&Path>,
    boot_files: &[String],
    quiet: bool,
) -> Result<(), Error> {
    let (b, files) = crate::io::boardfile::load(board)?;
    let boot_files = boot_files
        .iter()
        .map(|a| read_boot_file(a))
        .collect::<Result<Vec<_>, _>>()?;
    let keyring = crate::io::keyfiles::load_keyring(keys, rings, threshold)?;
    let total = std::fs::metadata(bundle).map(|m| m.len()).unwrap_or(0);
    let bar = super::progress::bar(total, "image", quiet);
    let progress: Option<Box<dyn FnMut(u64)>> = bar
        .clone()
        .map(|b| Box::new(move |n| b.inc(n)) as Box<dyn FnMut(u64)>);
    let dev = crate::io::image::build(crate::io::image::Options {
        board: &b,
        files: &files,
        bundle,
        keyring: &keyring,
        output,
        state_dir,
        boot_files: &boot_files,
        progress,
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let v = dev.slots[0]
        .release
        .as_ref()
        .map(|r| r.version.to_string())
        .unwrap_or_default();
    println!(
        "{}: board {}, {} MiB, slot a = {v}, slot b empty",
        output.display(),
        b.name,
        b.disk_size_mib
    );
    Ok(())
}

/// `FILE[:NAME]` -> (NAME, contents). NAME is a path on the FAT partition
/// (`overlays/x.dtbo`); it may not climb out of it.
fn read_boot_file(arg: &str) -> Result<(String, Vec<u8>), Error> {
    let (file, name) = match arg.rsplit_once(':') {
        Some((f, n)) if !n.is_empty() => (f, n.to_string()),
        _ => (
            arg,
            Path::new(arg)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
    };
    if name.is_empty()
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(Error::Usage(format!(
            "--boot-file {arg}: {name:?} is not a file name on the boot partition"
        )));
    }
    let data = std::fs::read(file).map_err(|e| Error::io("read boot file", file, e))?;
    Ok((name, data))
}

pub(super) fn flash(
    image: &Path,
    device: &Path,
    bmap: Option<&Path>,
    yes: bool,
    verify: bool,
    quiet: bool,
) -> Result<(), Error> {
    use std::io::IsTerminal as _;
    let t = crate::io::flash::inspect_target(device)?;
    let len = std::fs::metadata(image)
        .map_err(|e| Error::io("stat image", image, e))?
        .len();
    if t.block && !yes {
        crate::io::flash::check_target(&t, None)?;
        if !std::io::stdin().is_terminal() {
            return Err(Error::Usage(format!(
                "refusing to overwrite {} without --yes (no terminal to ask on)",
                device.display()
            )));
        }
        eprint!(
            "Write {} to {} ({} bytes)? Everything on it is destroyed. [y/N] ",
            image.display(),
            device.display(),
            t.size.unwrap_or(0)
        );
        let mut a = String::new();
        let _ = std::io::stdin().read_line(&mut a);
        if !matches!(a.trim(), "y" | "Y" | "yes") {
            return Err(Error::Usage("not confirmed".into()));
        }
    }
    let bar = super::progress::bar(len, "flash", quiet);
    let mut tick = |n: u64| {
        if let Some(b) = &bar {
            b.inc(n)
        }
    };
    let start = std::time::Instant::now();
    let r = crate::io::flash::flash(image, device, bmap, verify, &mut tick)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let secs = start.elapsed().as_secs_f64().max(1e-6);
    println!(
        "{}: {} bytes image, {} written, {} skipped (holes and zero blocks), {:.1} MB/s{}",
        device.display(),
        r.image_size,
        r.written,
        r.skipped,
        r.written as f64 / secs / 1e6,
        if r.verified {
            ", verified by read-back"
        } else {
            ", NOT verified"
        }
    );
    Ok(())
}

/// `ferry provision --from-k3os config.yaml [--image IMG]`.
pub(super) fn from_k3os(k3os: &Path, image: Option<&Path>, part: &str) -> Result<(), Error> {
    let text = std::fs::read_to_string(k3os).map_err(|e| Error::io("read k3OS config", k3os, e))?;
    let cfg_err = |detail: String| Error::Config {
        path: k3os.into(),
        detail,
    };
    let doc = crate::yaml::parse(&text).map_err(cfg_err)?;
    let (node, notes) = crate::settings::from_k3os(&doc).map_err(|e| match e {
        Error::Usage(d) => cfg_err(d),
        e => e,
    })?;
    for n in &notes {
        eprintln!("ferry: warning: {n}");
    }
    match image {
        Some(img) => {
            let s = crate::io::provision::provision(img, part, &node)?;
            println!("{}: provisioned from {}", img.display(), k3os.display());
            for (k, v) in s {
                println!("  {k} = {v}");
            }
        }
        None => print!("{}", crate::io::provision::toml_string(&node)?),
    }
    Ok(())
}

pub(super) fn provision(
    image: &Path,
    node: Option<&Path>,
    batch: Option<&Path>,
    template: Option<&Path>,
    out: Option<&Path>,
    part: &str,
) -> Result<(), Error> {
    use crate::io::provision::{self as pv, NodeConfig};
    let load = |p: &Path| -> Result<NodeConfig, Error> {
        let t = std::fs::read_to_string(p).map_err(|e| Error::io("read node config", p, e))?;
        toml::from_str(&t).map_err(|e| Error::Config {
            path: p.into(),
            detail: e.to_string(),
        })
    };
    match (node, batch, template, out) {
        (Some(n), None, _, _) => {
            let cfg = load(n)?;
            let s = pv::provision(image, part, &cfg)?;
            println!("{}: provisioned", image.display());
            for (k, v) in s {
                println!("  {k} = {v}");
            }
            Ok(())
        }
        (None, Some(b), Some(t), Some(o)) => {
            let csv = std::fs::read_to_string(b).map_err(|e| Error::io("read CSV", b, e))?;
            let reps = pv::batch(&csv, &load(t)?, image, part, o)?;
            let mut bad = 0;
            for r in &reps {
                println!(
                    "row {:>3} {:<20} {:<12} {}",
                    r.row,
                    r.hostname,
                    r.status,
                    r.error.as_deref().unwrap_or("")
                );
                bad += usize::from(r.status == "error");
            }
            println!(
                "{} rows: {} ok, {bad} failed; report in {}",
                reps.len(),
                reps.len() - bad,
                o.join("report.json").display()
            );
            if bad > 0 {
                return Err(Error::Usage(format!(
                    "{bad} row(s) failed (see the report)"
                )));
            }
            Ok(())
        }
        _ => Err(Error::Usage(
            "give --config NODE.toml, or --batch CSV --template NODE.toml --out DIR".into(),
        )),
    }
}
