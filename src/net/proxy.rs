//! Proxies from the environment, as curl and Go read them: `https_proxy` /
//! `HTTPS_PROXY` for https URLs, `http_proxy` / `HTTP_PROXY` for plain http
//! (the upper-case `HTTP_PROXY` is ignored when `REQUEST_METHOD` is set, the
//! CGI "httpoxy" rule), `no_proxy` / `NO_PROXY` for the exceptions. Pure:
//! the environment is passed in.
//!
//! An https URL goes through an `http://` proxy as a `CONNECT` tunnel, so
//! TLS (and the feed's trust roots and pins) still runs end to end with the
//! server; the proxy sees only the host name.

use super::url::Url;

/// One proxy: `http://[user:password@]host[:port]` (port 1080 when absent,
/// as curl does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Proxy {
    pub host: String,
    pub port: u16,
    /// `Proxy-Authorization` value (Basic), if the URL carried credentials.
    pub authorization: Option<String>,
}

impl Proxy {
    pub(crate) fn authority(&self) -> String {
        super::url::authority(&self.host, self.port)
    }

    /// For logs and errors: never the credentials.
    pub(crate) fn redacted(&self) -> String {
        format!("http://{}", self.authority())
    }
}

/// One `no_proxy` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Exception {
    All,
    /// A host name: itself and its subdomains (a leading `.` or `*.` is
    /// the same), optionally one port only.
    Domain(String, Option<u16>),
    /// An address, or a network in CIDR notation.
    Net(core::net::IpAddr, u8),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Proxies {
    http: Option<Proxy>,
    https: Option<Proxy>,
    exceptions: Vec<Exception>,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hex(b[i + 1]) << 4 | hex(b[i + 2]));
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_proxy(var: &str, v: &str) -> Result<Proxy, String> {
    let rest = if let Some(r) = v.strip_prefix("http://") {
        r
    } else if v.contains("://") {
        return Err(format!(
            "{var}: only http:// proxies are supported (https URLs are tunnelled through them with CONNECT)"
        ));
    } else {
        v
    };
    let authority = rest.split('/').next().unwrap_or("");
    let (auth, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let with_scheme = format!("http://{hostport}/");
    let u = Url::parse(&with_scheme).map_err(|e| format!("{var}: {e}"))?;
    let explicit_port = if hostport.starts_with('[') {
        hostport.contains("]:")
    } else {
        hostport.contains(':')
    };
    Ok(Proxy {
        host: u.host,
        port: if explicit_port { u.port } else { 1080 },
        authorization: auth.map(|a| {
            let (user, pass) = a.split_once(':').unwrap_or((a, ""));
            format!(
                "Basic {}",
                crate::bundle::pem::base64_encode(
                    format!("{}:{}", percent_decode(user), percent_decode(pass)).as_bytes()
                )
            )
        }),
    })
}

fn parse_exception(e: &str) -> Option<Exception> {
    let e = e.trim();
    if e.is_empty() {
        return None;
    }
    if e == "*" {
        return Some(Exception::All);
    }
    if let Some((a, bits)) = e.split_once('/') {
        let ip: core::net::IpAddr = a.parse().ok()?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits: u8 = bits.parse().ok().filter(|&b| b <= max)?;
        return Some(Exception::Net(ip, bits));
    }
    let bare = e.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<core::net::IpAddr>() {
        return Some(Exception::Net(ip, if ip.is_ipv4() { 32 } else { 128 }));
    }
    let (host, port) = match e.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()),
        None => (e, None),
    };
    let host = host.trim_start_matches("*.").trim_start_matches('.');
    Some(Exception::Domain(host.to_ascii_lowercase(), port))
}

fn in_net(ip: core::net::IpAddr, net: core::net::IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (core::net::IpAddr::V4(a), core::net::IpAddr::V4(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(bits))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (core::net::IpAddr::V6(a), core::net::IpAddr::V6(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(bits))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl Proxies {
    /// Read the proxy variables through `get` (the lower-case name first).
    pub(crate) fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Proxies, String> {
        let var = |lower: &str, upper: &str| {
            get(lower)
                .map(|v| (lower.to_string(), v))
                .or_else(|| get(upper).map(|v| (upper.to_string(), v)))
                .filter(|(_, v)| !v.trim().is_empty())
        };
        let https = var("https_proxy", "HTTPS_PROXY")
            .map(|(n, v)| parse_proxy(&n, v.trim()))
            .transpose()?;
        let cgi = get("REQUEST_METHOD").is_some();
        let http = match get("http_proxy") {
            Some(v) if !v.trim().is_empty() => Some(parse_proxy("http_proxy", v.trim())?),
            _ if !cgi => get("HTTP_PROXY")
                .filter(|v| !v.trim().is_empty())
                .map(|v| parse_proxy("HTTP_PROXY", v.trim()))
                .transpose()?,
            _ => None,
        };
        let exceptions = var("no_proxy", "NO_PROXY")
            .map(|(_, v)| v.split(',').filter_map(parse_exception).collect())
            .unwrap_or_default();
        Ok(Proxies {
            http,
            https,
            exceptions,
        })
    }

    /// The proxy to reach `url` through, if any.
    pub(crate) fn for_url(&self, url: &Url) -> Option<&Proxy> {
        let p = if url.https {
            self.https.as_ref()
        } else {
            self.http.as_ref()
        }?;
        let host = url.host.to_ascii_lowercase();
        let ip = host.parse::<core::net::IpAddr>().ok();
        let excepted = self.exceptions.iter().any(|e| match e {
            Exception::All => true,
            Exception::Net(n, bits) => ip.is_some_and(|ip| in_net(ip, *n, *bits)),
            Exception::Domain(d, port) => {
                (host == *d || host.ends_with(&format!(".{d}")))
                    && port.is_none_or(|p| p == url.port)
            }
        });
        (!excepted).then_some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Proxies, String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Proxies::from_env(move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    fn via(p: &Proxies, url: &str) -> Option<String> {
        p.for_url(&Url::parse(url).unwrap()).map(|p| p.authority())
    }

    #[test]
    fn picks_the_proxy_by_scheme_and_honours_no_proxy() {
        let p = env(&[
            ("HTTPS_PROXY", "http://proxy.corp:3128"),
            ("http_proxy", "proxy.corp"),
            (
                "NO_PROXY",
                "localhost, .internal,10.0.0.0/8, example.org:8443,[::1]",
            ),
        ])
        .unwrap();
        assert_eq!(
            via(&p, "https://feed.example.com/x").as_deref(),
            Some("proxy.corp:3128")
        );
        assert_eq!(
            via(&p, "http://feed.example.com/x").as_deref(),
            Some("proxy.corp:1080")
        );
        for direct in [
            "https://localhost/x",
            "https://a.b.internal/x",
            "https://internal/x",
            "https://10.1.2.3/x",
            "https://example.org:8443/x",
            "https://[::1]/x",
        ] {
            assert_eq!(via(&p, direct), None, "{direct}");
        }
        for proxied in [
            "https://notinternal/x",
            "https://11.0.0.1/x",
            "https://example.org/x",
            "https://sub.example.org:443/x",
        ] {
            assert!(via(&p, proxied).is_some(), "{proxied}");
        }
        assert_eq!(
            via(
                &env(&[("https_proxy", "http://p:1"), ("no_proxy", "*")]).unwrap(),
                "https://x/"
            ),
            None
        );
        assert_eq!(via(&env(&[]).unwrap(), "https://x/"), None);
    }

    #[test]
    fn credentials_become_basic_auth_and_cgi_ignores_http_proxy() {
        let p = env(&[("https_proxy", "http://us%40er:p%3Ass@[fd00::1]:8080/")]).unwrap();
        let x = p.for_url(&Url::parse("https://x/").unwrap()).unwrap();
        assert_eq!(x.authority(), "[fd00::1]:8080");
        // base64("us@er:p:ss")
        assert_eq!(x.authorization.as_deref(), Some("Basic dXNAZXI6cDpzcw=="));
        assert!(!x.redacted().contains("us"));
        let cgi = env(&[("REQUEST_METHOD", "GET"), ("HTTP_PROXY", "http://evil:1")]).unwrap();
        assert_eq!(via(&cgi, "http://x/"), None);
        assert!(env(&[("https_proxy", "socks5://p:1")])
            .unwrap_err()
            .contains("only http://"));
    }
}
