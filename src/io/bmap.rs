//! bmaptool's block map (`.bmap`, format 2.x, sha256): which ranges of an
//! image hold data and their checksums. `ferry flash --bmap` writes only the
//! mapped ranges and checks each against its checksum as it reads it.
//!
//! Parsed by hand (the format is six tags and a list of ranges; an XML
//! crate would cost the host binary more than this file): comments are
//! dropped, every tag ferry relies on must be present exactly once, and the
//! file's own checksum (computed with the checksum's digits all `0`) must
//! match, as bmaptool requires.

use sha2::{Digest as _, Sha256};

use crate::bundle::Sha256Digest;

/// One mapped range, in bytes of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Range {
    pub start: u64,
    pub end: u64,
    pub sha256: Option<Sha256Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bmap {
    pub image_size: u64,
    pub block_size: u64,
    pub ranges: Vec<Range>,
}

/// Why a bmap was refused (the caller adds the file's name).
pub(crate) type BmapError = String;

fn strip_comments(s: &str) -> Result<String, BmapError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("<!--") {
        out.push_str(&rest[..i]);
        let end = rest[i..]
            .find("-->")
            .ok_or_else(|| "an unterminated comment".to_string())?;
        rest = &rest[i + end + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The text of the one `<tag>...</tag>` element.
fn element<'a>(s: &'a str, tag: &str) -> Result<&'a str, BmapError> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut found = s.match_indices(&open);
    let (i, _) = found.next().ok_or_else(|| format!("no <{tag}> element"))?;
    if found.next().is_some() {
        return Err(format!("more than one <{tag}> element"));
    }
    let body = &s[i + open.len()..];
    let j = body
        .find(&close)
        .ok_or_else(|| format!("<{tag}> is not closed"))?;
    Ok(body[..j].trim())
}

fn number(s: &str, tag: &str) -> Result<u64, BmapError> {
    let v = element(s, tag)?;
    v.parse()
        .map_err(|_| format!("<{tag}> is not a number: {v:?}"))
}

fn digest(hex: &str) -> Result<Sha256Digest, BmapError> {
    crate::bundle::Sha256Digest::parse(hex)
        .ok_or_else(|| format!("{hex:?} is not a sha256 checksum"))
}

pub(crate) fn parse(text: &str) -> Result<Bmap, BmapError> {
    let body = strip_comments(text)?;
    let root = body
        .find("<bmap ")
        .ok_or_else(|| "no <bmap> element".to_string())?;
    let attrs = &body[root..body[root..].find('>').map_or(body.len(), |e| root + e)];
    let version = attrs
        .split("version=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .ok_or_else(|| "<bmap> has no version".to_string())?;
    let major = version.split('.').next().unwrap_or("");
    if major != "2" {
        return Err(format!(
            "format version {version} is not supported (2.x is; regenerate it with `bmaptool create`)"
        ));
    }
    let kind = element(&body, "ChecksumType")?;
    if kind != "sha256" {
        return Err(format!(
            "checksum type {kind:?} is not supported (sha256 is)"
        ));
    }
    // the file's own checksum, over the file with its digits zeroed
    let claimed = element(&body, "BmapFileChecksum")?;
    let want = digest(claimed)?;
    let zeroed = text.replacen(claimed, &"0".repeat(claimed.len()), 1);
    if Sha256Digest(Sha256::digest(zeroed.as_bytes()).into()) != want {
        return Err("its BmapFileChecksum does not match (edited or damaged)".into());
    }
    let image_size = number(&body, "ImageSize")?;
    let block_size = number(&body, "BlockSize")?;
    if block_size == 0 || block_size % 512 != 0 {
        return Err(format!("block size {block_size} is not a multiple of 512"));
    }
    let blocks = number(&body, "BlocksCount")?;
    if blocks != image_size.div_ceil(block_size) {
        return Err(format!(
            "{blocks} blocks of {block_size} bytes do not make an image of {image_size} bytes"
        ));
    }
    let mapped = number(&body, "MappedBlocksCount")?;
    let map = element(&body, "BlockMap")?;
    let mut ranges: Vec<Range> = Vec::new();
    let mut counted = 0u64;
    let mut rest = map;
    while let Some(i) = rest.find("<Range") {
        let after = &rest[i + "<Range".len()..];
        let gt = after
            .find('>')
            .ok_or_else(|| "a <Range> is not closed".to_string())?;
        let (attrs, tail) = (&after[..gt], &after[gt + 1..]);
        let end_tag = tail
            .find("</Range>")
            .ok_or_else(|| "a <Range> is not closed".to_string())?;
        let text = tail[..end_tag].trim();
        rest = &tail[end_tag + "</Range>".len()..];
        let (a, b) = match text.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (text, text),
        };
        let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) else {
            return Err(format!("range {text:?} is not first-last block numbers"));
        };
        if a > b || b >= blocks {
            return Err(format!(
                "range {text:?} is outside the image's {blocks} blocks"
            ));
        }
        if ranges.last().is_some_and(|r| r.end > a * block_size) {
            return Err(format!(
                "range {text:?} overlaps or precedes the one before it"
            ));
        }
        let sha256 = match attrs.split("chksum=\"").nth(1) {
            Some(v) => Some(digest(v.split('"').next().unwrap_or(""))?),
            None => None,
        };
        counted += b - a + 1;
        ranges.push(Range {
            start: a * block_size,
            end: ((b + 1) * block_size).min(image_size),
            sha256,
        });
    }
    if counted != mapped {
        return Err(format!(
            "MappedBlocksCount says {mapped} blocks, the ranges hold {counted}"
        ));
    }
    Ok(Bmap {
        image_size,
        block_size,
        ranges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bmap as bmaptool writes it, with its file checksum filled in.
    fn bmap(version: &str, body: &str) -> String {
        let t = format!(
            "<?xml version=\"1.0\" ?>\n<!-- a comment with <ImageSize> 1 </ImageSize> -->\n<bmap version=\"{version}\">\n{body}\n    <BmapFileChecksum> {} </BmapFileChecksum>\n</bmap>\n",
            "0".repeat(64)
        );
        let d = Sha256::digest(t.as_bytes());
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        t.replacen(&"0".repeat(64), &hex, 1)
    }

    const GOOD: &str = "<ImageSize> 8388000 </ImageSize><BlockSize> 4096 </BlockSize><BlocksCount> 2048 </BlocksCount><MappedBlocksCount> 5 </MappedBlocksCount><ChecksumType> sha256 </ChecksumType><BlockMap><Range chksum=\"c7d1a19d5a6b5eed5c21b2207f4189c0d507dc411ad9b162df97e3c2fad04404\"> 1 </Range><Range> 600-602 </Range><Range> 2047 </Range></BlockMap>";

    #[test]
    fn parses_what_bmaptool_writes() {
        let m = parse(&bmap("2.0", GOOD)).unwrap();
        assert_eq!(m.image_size, 8_388_000);
        assert_eq!(m.ranges.len(), 3);
        assert_eq!((m.ranges[0].start, m.ranges[0].end), (4096, 8192));
        assert!(m.ranges[0].sha256.is_some() && m.ranges[1].sha256.is_none());
        assert_eq!(
            (m.ranges[1].start, m.ranges[1].end),
            (600 * 4096, 603 * 4096)
        );
        // the last block is cut at the image's end
        assert_eq!(m.ranges[2].end, 8_388_000);
    }

    #[test]
    fn refuses_what_it_cannot_trust() {
        let edited = bmap("2.0", GOOD).replace("600-602", "600-601");
        assert!(parse(&edited).unwrap_err().contains("BmapFileChecksum"));
        for (version, body, why) in [
            ("1.4", GOOD.to_string(), "version 1.4"),
            ("2.0", GOOD.replace("sha256 <", "sha1 <"), "sha1"),
            ("2.0", GOOD.replace("> 5 <", "> 6 <"), "MappedBlocksCount"),
            ("2.0", GOOD.replace("600-602", "602-600"), "outside"),
            ("2.0", GOOD.replace("2047", "2048"), "outside"),
            ("2.0", GOOD.replace("600-602", "1-3"), "overlaps"),
            ("2.0", GOOD.replace("2048 <", "2047 <"), "do not make"),
            ("2.0", GOOD.replace("4096 <", "1000 <"), "multiple of 512"),
            (
                "2.0",
                GOOD.replace("<ImageSize> 8388000 </ImageSize>", ""),
                "no <ImageSize>",
            ),
            ("2.0", GOOD.replace("600-602", "six"), "not first-last"),
        ] {
            let e = parse(&bmap(version, &body)).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
    }
}
