//! `ferry feed publish` (host only): add a bundle to a channel's index in a
//! feed directory, raise the serial, set the expiry, sign, and write the
//! bundle, the index and its signatures atomically (bundle first, signature
//! file before the index it signs is renamed into place).

use std::path::Path;

use super::{encode_sigs, FeedRelease, Index, FEED_FORMAT};
use crate::bundle::{reader, SecretKey};
use crate::error::Error;
use crate::io::store::write_durable;

pub(crate) struct Publish<'a> {
    pub feed: &'a Path,
    pub channel: &'a str,
    pub bundle: &'a Path,
    pub keys: &'a [SecretKey],
    pub now: u64,
    pub expires_in: u64,
}

pub(crate) fn publish(p: Publish) -> Result<Index, Error> {
    if !crate::bundle::manifest::safe_name(p.channel) {
        return Err(Error::Usage(format!(
            "channel {:?} is not a safe name",
            p.channel
        )));
    }
    let mut f = std::io::BufReader::new(
        std::fs::File::open(p.bundle).map_err(|e| Error::io("open bundle", p.bundle, e))?,
    );
    let b = reader::open(&mut f, None)?;
    let size = std::fs::metadata(p.bundle)
        .map_err(|e| Error::io("stat bundle", p.bundle, e))?
        .len();
    if size != b.total_len() {
        return Err(Error::Usage(format!(
            "{} is {size} bytes, its manifest says {}",
            p.bundle.display(),
            b.total_len()
        )));
    }
    let dir = p.feed.join(p.channel);
    let bdir = dir.join("bundles");
    std::fs::create_dir_all(&bdir).map_err(|e| Error::io("create feed dir", &bdir, e))?;
    let name = format!("{}-{}.ferry", b.manifest.compatible, b.manifest.version);
    let dest = bdir.join(&name);
    let tmp = bdir.join(format!(".{name}.tmp"));
    std::fs::copy(p.bundle, &tmp).map_err(|e| Error::io("copy bundle", &tmp, e))?;
    std::fs::rename(&tmp, &dest).map_err(|e| Error::io("rename", &dest, e))?;
    let ipath = dir.join("index.json");
    let mut idx = match std::fs::read(&ipath) {
        Ok(bytes) => serde_json::from_slice::<Index>(&bytes).map_err(|e| Error::Config {
            path: ipath.clone(),
            detail: e.to_string(),
        })?,
        Err(_) => Index {
            format: FEED_FORMAT,
            channel: p.channel.into(),
            serial: 0,
            created: p.now,
            expires: 0,
            releases: vec![],
            extensions: Default::default(),
        },
    };
    idx.releases
        .retain(|r| !(r.board == b.manifest.compatible && r.version == b.manifest.version));
    idx.releases.push(FeedRelease {
        version: b.manifest.version.clone(),
        board: b.manifest.compatible.clone(),
        url: format!("bundles/{name}"),
        size,
        manifest_sha256: b.manifest_digest,
        extensions: Default::default(),
    });
    idx.releases
        .sort_by(|a, b| (&a.board, &a.version).cmp(&(&b.board, &b.version)));
    idx.serial = idx.serial.checked_add(1).ok_or_else(|| {
        Error::Usage(format!(
            "the feed's serial is {} and cannot be raised: start a new feed (a new channel) and move devices to it",
            idx.serial
        ))
    })?;
    idx.created = p.now;
    idx.expires = p.now + p.expires_in;
    let bytes = serde_json::to_vec_pretty(&idx).map_err(|e| Error::Usage(e.to_string()))?;
    let sigs: Vec<_> = p
        .keys
        .iter()
        .map(|k| k.sign(crate::bundle::keys::Context::Feed, &bytes))
        .collect();
    // a reader that fetches between the two renames sees a mismatch and retries
    write_durable(&dir.join("index.json.sig"), encode_sigs(&sigs).as_bytes())?;
    write_durable(&ipath, &bytes)?;
    // served files must be world-readable (write_durable makes 0600)
    use std::os::unix::fs::PermissionsExt as _;
    for f in [&ipath, &dir.join("index.json.sig")] {
        let _ = std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644));
    }
    Ok(idx)
}
