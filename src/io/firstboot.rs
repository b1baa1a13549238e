//! `ferry firstboot`: apply the provisioned node settings on the device,
//! k3OS-style, before k3s starts. Reads `provision/node.toml` (and
//! `provision/authorized_keys`) from the data partition, renders the files
//! (`settings::NodeConfig::render`) and writes each one that differs under
//! the root, atomically (temporary file with its mode, fsync, rename, fsync
//! of the directory): a power cut leaves the old or the new file, never a
//! torn one, and a second run with the same settings writes nothing.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use tracing::info;

use crate::error::Error;
use crate::settings::{Generated, NodeConfig};

/// What a run did.
#[derive(Debug, Default)]
pub struct Applied {
    pub written: Vec<String>,
    pub unchanged: Vec<String>,
    pub hostname: Option<String>,
}

fn read_opt(p: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(p) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", p, e)),
    }
}

/// Write `g` under `root` unless it is already there with the same bytes
/// and mode. Returns whether it wrote.
fn put(root: &Path, g: &Generated) -> Result<bool, Error> {
    let path = root.join(g.path);
    if let Ok(md) = std::fs::metadata(&path) {
        if md.permissions().mode() & 0o7777 == g.mode
            && std::fs::read(&path).is_ok_and(|b| b == g.content)
        {
            return Ok(false);
        }
    }
    let dir = path.parent().unwrap_or(root);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| Error::io("create directory", dir, e))?;
    let tmp = dir.join(format!(
        ".{}.ferry-tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(g.mode)
        .open(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    // the umask may have narrowed the mode: set it exactly
    f.set_permissions(std::fs::Permissions::from_mode(g.mode))
        .map_err(|e| Error::io("chmod", &tmp, e))?;
    f.write_all(&g.content)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync directory", dir, e))?;
    Ok(true)
}

/// Apply the settings in `provision` (a directory holding `node.toml`)
/// under `root`. Without a `node.toml` there is nothing to do (an image
/// that was never provisioned boots as a bare server).
pub fn apply(provision: &Path, root: &Path, set_hostname: bool) -> Result<Applied, Error> {
    let node_path = provision.join("node.toml");
    let Some(text) = read_opt(&node_path)? else {
        info!(path = %node_path.display(), "no provisioned settings; nothing to apply");
        return Ok(Applied::default());
    };
    let node: NodeConfig = toml::from_str(&text).map_err(|e| Error::Config {
        path: node_path.clone(),
        detail: e.to_string(),
    })?;
    let keys = read_opt(&provision.join("authorized_keys"))?.unwrap_or_default();
    let files = node.render(&keys).map_err(|e| match e {
        Error::Usage(d) => Error::Config {
            path: node_path.clone(),
            detail: d,
        },
        e => e,
    })?;
    let mut out = Applied {
        hostname: node.hostname.clone(),
        ..Applied::default()
    };
    for g in &files {
        if put(root, g)? {
            info!(path = g.path, mode = format!("{:o}", g.mode), "written");
            out.written.push(g.path.to_string());
        } else {
            out.unchanged.push(g.path.to_string());
        }
    }
    if let (true, Some(h)) = (set_hostname, &node.hostname) {
        nix::unistd::sethostname(h).map_err(|e| Error::io("set host name", h, e.into()))?;
    }
    Ok(out)
}
