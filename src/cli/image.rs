//! `ferry image build`.

use std::path::{Path, PathBuf};

use crate::board::Board;
use crate::bundle::Keyring;
use crate::error::Error;

#[allow(clippy::too_many_arguments)]
pub fn build(
    board: &str,
    bundle: &Path,
    output: &Path,
    keys: &[PathBuf],
    rings: &[PathBuf],
    threshold: usize,
    state_dir: Option<&Path>,
    quiet: bool,
) -> Result<(), Error> {
    let (b, files) = Board::load(board)?;
    let keyring = Keyring::load(keys, rings, threshold)?;
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
