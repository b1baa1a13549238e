//! Board files at the edge: a board by name (embedded in the binary) or by
//! path to a `.toml` file and the boot script next to it.

use std::path::Path;

use crate::board::Board;
use crate::error::Error;

/// A board by name (embedded) or by path to a `.toml` file.
pub fn load(name_or_path: &str) -> Result<(Board, crate::board::BoardFiles), Error> {
    if let Some(b) = Board::builtin(name_or_path) {
        return b;
    }
    let p = Path::new(name_or_path);
    let text = std::fs::read_to_string(p).map_err(|e| Error::io("read board", p, e))?;
    let b = Board::parse(&text, name_or_path)?;
    let mut files = Vec::new();
    if let (Some(script), Some(dir)) = (&b.bootloader.script, p.parent()) {
        // board/<name>/boot.cmd as shipped, else next to the board file
        let candidates = [dir.join(&b.name).join(script), dir.join(script)];
        let found = candidates
            .iter()
            .find(|c| c.is_file())
            .ok_or_else(|| Error::Config {
                path: p.into(),
                detail: format!(
                    "boot script {script} not found at {} or {}",
                    candidates[0].display(),
                    candidates[1].display()
                ),
            })?;
        let s =
            std::fs::read_to_string(found).map_err(|e| Error::io("read boot script", found, e))?;
        files.push((script.clone(), s));
    }
    Ok((b, files))
}
