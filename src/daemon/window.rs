//! Maintenance windows: "HH:MM-HH:MM" in UTC, possibly across midnight.
//! Parsed once, where the config is read, into a [`Window`].
//!
//! Never does: files, clocks, threads, processes, network.

/// A daily window in minutes after midnight UTC, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Window {
    pub start: u32,
    pub end: u32,
}

impl TryFrom<String> for Window {
    type Error = String;
    fn try_from(s: String) -> Result<Window, String> {
        let (start, end) = parse(&s)?;
        Ok(Window { start, end })
    }
}

impl Window {
    /// Is `unix_secs` inside the window?
    pub(crate) fn contains(&self, unix_secs: u64) -> bool {
        contains((self.start, self.end), unix_secs)
    }
}

pub fn parse(spec: &str) -> Result<(u32, u32), String> {
    let (a, b) = spec
        .split_once('-')
        .ok_or_else(|| format!("window {spec:?}: expected HH:MM-HH:MM"))?;
    let t = |x: &str| -> Result<u32, String> {
        let (h, m) = x
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("{x:?}: expected HH:MM"))?;
        let (h, m): (u32, u32) = (
            h.parse().map_err(|_| format!("{x:?}: bad hour"))?,
            m.parse().map_err(|_| format!("{x:?}: bad minute"))?,
        );
        if h > 23 || m > 59 {
            return Err(format!("{x:?}: out of range"));
        }
        Ok(h * 60 + m)
    };
    Ok((t(a)?, t(b)?))
}

/// Is `unix_secs` inside the window?
pub(crate) fn contains(w: (u32, u32), unix_secs: u64) -> bool {
    let m = ((unix_secs / 60) % (24 * 60)) as u32;
    let (start, end) = w;
    if start <= end {
        (start..end).contains(&m)
    } else {
        m >= start || m < end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_including_midnight() {
        let w = parse("02:00-04:30").unwrap();
        let at = |h: u64, m: u64| 86_400 * 20_000 + h * 3600 + m * 60;
        assert!(contains(w, at(2, 0)) && contains(w, at(4, 29)));
        assert!(!contains(w, at(4, 30)) && !contains(w, at(1, 59)));
        let n = parse("23:00-01:00").unwrap();
        assert!(contains(n, at(23, 30)) && contains(n, at(0, 30)) && !contains(n, at(1, 0)));
        assert!(parse("25:00-01:00").is_err() && parse("0200").is_err());
    }
}
