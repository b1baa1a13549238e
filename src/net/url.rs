//! The URL subset ferry speaks: `http(s)://host[:port]/path`. Pure.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with '/'.
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!(
                "{s:?}: only http:// and https:// URLs are supported"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("credentials in URLs are not supported (use a client certificate)".into());
        }
        let (host, port) = if let Some(h) = authority.strip_prefix('[') {
            let end = h.find(']').ok_or("unclosed IPv6 literal")?;
            let port = h[end + 1..]
                .strip_prefix(':')
                .map(|p| p.parse::<u16>().map_err(|_| "bad port"))
                .transpose()?;
            (h[..end].to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    Some(p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?),
                ),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() || path.contains(char::is_whitespace) {
            return Err(format!("{s:?} is not a valid URL"));
        }
        Ok(Url {
            https,
            port: port.unwrap_or(if https { 443 } else { 80 }),
            host,
            path: path.to_string(),
        })
    }

    /// For logs: never includes a query string (it may carry a token).
    /// Resolve a reference (a redirect's `Location`, a feed's relative
    /// bundle URL) against this URL: absolute, host-relative (`/x`) or
    /// relative to this URL's directory.
    pub(crate) fn join(&self, reference: &str) -> Result<Url, String> {
        if reference.contains("://") {
            return Url::parse(reference);
        }
        let scheme = if self.https { "https" } else { "http" };
        let path = if reference.starts_with('/') {
            reference.to_string()
        } else {
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
            format!("{}{reference}", if dir.is_empty() { "/" } else { dir })
        };
        Url::parse(&format!(
            "{scheme}://{}{}",
            self.authority(),
            remove_dot_segments(&path)
        ))
    }

    pub(crate) fn redacted(&self) -> String {
        let path = self.path.split('?').next().unwrap_or("/");
        format!(
            "{}://{}:{}{}",
            if self.https { "https" } else { "http" },
            self.host,
            self.port,
            path
        )
    }

    pub(crate) fn authority(&self) -> String {
        authority(&self.host, self.port)
    }
}

/// `host:port`, an IPv6 literal in brackets.
pub(crate) fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// RFC 3986 §5.2.4 for a path (a query is kept as it is).
fn remove_dot_segments(path: &str) -> String {
    let (p, q) = match path.find('?') {
        Some(i) => (&path[..i], &path[i..]),
        None => (path, ""),
    };
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = p.split('/').skip(1).collect();
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        match *seg {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}{q}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_supported_subset() {
        let u = Url::parse("https://feed.example:8443/stable/index.json?x=1").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (true, "feed.example", 8443, "/stable/index.json?x=1")
        );
        assert_eq!(u.redacted(), "https://feed.example:8443/stable/index.json");
        assert_eq!(Url::parse("http://10.0.2.2").unwrap().port, 80);
        let v6 = Url::parse("https://[::1]:6443/readyz").unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.authority()),
            ("::1", "[::1]:6443".to_string())
        );
        assert!(Url::parse("ftp://x/").is_err());
        assert!(Url::parse("https://user:pw@x/").is_err());
        assert!(Url::parse("https://x:99999/").is_err());
    }

    #[test]
    fn join_resolves_redirects_and_relative_urls() {
        let u = Url::parse("https://feed.example:8443/stable/bundles/a.ferry?sig=x").unwrap();
        assert_eq!(u.join("b.ferry").unwrap().path, "/stable/bundles/b.ferry");
        assert_eq!(u.join("/cdn/c.ferry").unwrap().path, "/cdn/c.ferry");
        assert_eq!(u.join("../../m/./d.ferry").unwrap().path, "/m/d.ferry");
        assert_eq!(u.join("../../../../x").unwrap().path, "/x");
        assert_eq!(u.join("/cdn/c.ferry").unwrap().port, 8443);
        let abs = u.join("http://other.example/x").unwrap();
        assert!(!abs.https);
        assert_eq!(abs.host, "other.example");
    }
}
