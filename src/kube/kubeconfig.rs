//! Where the API server is and how to authenticate to it: a kubeconfig file
//! (as k3s writes `/etc/rancher/k3s/k3s.yaml`) or the in-cluster service
//! account. Parsing is pure; only [`load`] and [`in_cluster`] touch files
//! and the environment. No network I/O here.
//!
//! There is no YAML crate: [`parse`] reads the block-style subset that k3s
//! and `kubectl config` write — `key: value` mappings nested by indentation,
//! `- ` sequences of mappings, plain or quoted single-line scalars, `#`
//! comment lines. Flow collections (`{}` / `[]`) are kept as opaque text,
//! multi-line scalars, anchors and tags are not supported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::net::http::TlsOptions;
use crate::net::url::Url;

/// The default service-account mount inside a pod.
pub(crate) const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A resolved connection to one API server.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    pub server: Url,
    pub tls: TlsOptions,
    /// A bearer token given inline.
    pub token: Option<String>,
    /// A bearer token re-read before every request (service-account tokens rotate).
    pub token_file: Option<PathBuf>,
}

/// One `- ` item of a top-level sequence, flattened: `cluster.server` -> value.
type Item = BTreeMap<String, String>;

#[derive(Debug, Default)]
struct Doc {
    top: BTreeMap<String, String>,
    lists: BTreeMap<String, Vec<Item>>,
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    let q = |c: char| v.len() >= 2 && v.starts_with(c) && v.ends_with(c);
    if q('"') {
        v[1..v.len() - 1]
            .replace("\\\"", "\"")
            .replace("\\\\", "\\")
    } else if q('\'') {
        v[1..v.len() - 1].replace("''", "'")
    } else {
        v.to_string()
    }
}

/// Split `key: value` (value may be empty); `None` if the line is not a mapping entry.
fn entry(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_suffix(':') {
        return Some((rest.trim(), ""));
    }
    let i = s.find(": ")?;
    Some((s[..i].trim(), s[i + 2..].trim()))
}

fn parse_doc(text: &str) -> Result<Doc, String> {
    let mut doc = Doc::default();
    let mut section: Option<String> = None;
    // Inside a sequence item: the item's own indentation and its open nested keys.
    let mut item_indent: Option<usize> = None;
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let body = line.trim_start();
        if body.is_empty() || body.starts_with('#') || body == "---" {
            continue;
        }
        let mut indent = line.len() - body.len();
        if line[..indent].contains('\t') {
            return Err(format!("line {}: tab indentation", n + 1));
        }
        let mut body = body;
        if let Some(rest) = body
            .strip_prefix("- ")
            .or(if body == "-" { Some("") } else { None })
        {
            let list = section
                .as_ref()
                .ok_or_else(|| format!("line {}: sequence outside a section", n + 1))?;
            doc.lists.entry(list.clone()).or_default().push(Item::new());
            indent += 2;
            item_indent = Some(indent);
            stack.clear();
            body = rest.trim_start();
            if body.is_empty() {
                continue;
            }
        } else if indent == 0 {
            item_indent = None;
            stack.clear();
            let (k, v) =
                entry(body).ok_or_else(|| format!("line {}: expected `key: value`", n + 1))?;
            if v.is_empty() {
                section = Some(k.to_string());
            } else {
                section = None;
                doc.top.insert(k.to_string(), unquote(v));
            }
            continue;
        }
        if item_indent.is_none_or(|b| indent < b) {
            // Nested mappings outside sequences (e.g. `preferences:`) are not needed.
            continue;
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let (k, v) = entry(body).ok_or_else(|| format!("line {}: expected `key: value`", n + 1))?;
        if v.is_empty() {
            stack.push((indent, k.to_string()));
            continue;
        }
        let mut path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
        path.push(k);
        let list = section
            .as_ref()
            .and_then(|s| doc.lists.get_mut(s))
            .and_then(|l| l.last_mut());
        if let Some(item) = list {
            item.insert(path.join("."), unquote(v));
        }
    }
    Ok(doc)
}

pub(crate) use crate::bundle::pem::base64_decode;

/// Pick the entry named `name`, or the only entry when no name is given.
fn named<'a>(list: &'a [Item], name: Option<&String>, what: &str) -> Result<&'a Item, String> {
    match name {
        Some(n) => list
            .iter()
            .find(|i| i.get("name") == Some(n))
            .ok_or_else(|| format!("no {what} named {n:?}")),
        None if list.len() == 1 => Ok(&list[0]),
        None => Err(format!(
            "{} {what}s and no current-context to choose one",
            list.len()
        )),
    }
}

/// Resolve a kubeconfig's current context to a server, trust roots and
/// credentials. Relative file references resolve against `base_dir`.
pub(crate) fn parse(text: &str, base_dir: &Path) -> Result<KubeConfig, String> {
    let doc = parse_doc(text)?;
    let empty = Vec::new();
    let list = |k: &str| doc.lists.get(k).unwrap_or(&empty);
    let (cluster_name, user_name) = match doc.top.get("current-context").filter(|c| !c.is_empty()) {
        Some(cc) => {
            let ctx = named(list("contexts"), Some(cc), "context")?;
            (
                ctx.get("context.cluster").cloned(),
                ctx.get("context.user").cloned(),
            )
        }
        None => (None, None),
    };
    let cluster = named(list("clusters"), cluster_name.as_ref(), "cluster")?;
    let server = cluster
        .get("cluster.server")
        .ok_or("cluster has no server")?;
    let server = Url::parse(server)?;
    if !server.https {
        return Err("plain http API servers are not supported".into());
    }
    if cluster
        .get("cluster.insecure-skip-tls-verify")
        .is_some_and(|v| v == "true")
    {
        return Err("insecure-skip-tls-verify is not supported".into());
    }
    let file = |p: &String| base_dir.join(p);
    let mut tls = TlsOptions::default();
    if let Some(ca) = cluster.get("cluster.certificate-authority-data") {
        tls.ca_pem
            .push(base64_decode(ca).map_err(|e| format!("certificate-authority-data: {e}"))?);
    } else if let Some(ca) = cluster.get("cluster.certificate-authority") {
        tls.ca.push(file(ca));
    } else {
        return Err(
            "cluster has no certificate-authority(-data); system roots are not used".into(),
        );
    }
    let mut token = None;
    // A kubeconfig without users (or without a matching one) means anonymous access.
    let users = list("users");
    if !users.is_empty() || user_name.is_some() {
        let user = named(users, user_name.as_ref(), "user")?;
        let data = |k: &str| {
            user.get(k)
                .map(|v| base64_decode(v).map_err(|e| format!("{k}: {e}")))
                .transpose()
        };
        match (
            data("user.client-certificate-data")?,
            data("user.client-key-data")?,
        ) {
            (Some(c), Some(k)) => tls.client_pem = Some((c, k)),
            (None, None) => {}
            _ => return Err("client-certificate-data and client-key-data go together".into()),
        }
        tls.client_cert = user.get("user.client-certificate").map(file);
        tls.client_key = user.get("user.client-key").map(file);
        token = user.get("user.token").cloned();
    }
    Ok(KubeConfig {
        server,
        tls,
        token,
        token_file: None,
    })
}

/// Read and resolve a kubeconfig file.
pub fn load(path: &Path) -> Result<KubeConfig, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read kubeconfig", path, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, dir).map_err(|detail| Error::Config {
        path: path.to_path_buf(),
        detail,
    })
}

/// The in-cluster configuration: `KUBERNETES_SERVICE_HOST`/`_PORT` and the
/// mounted service account.
pub(crate) fn in_cluster() -> Result<KubeConfig, Error> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    in_cluster_at(
        Path::new(SERVICE_ACCOUNT_DIR),
        env("KUBERNETES_SERVICE_HOST"),
        env("KUBERNETES_SERVICE_PORT"),
    )
}

/// [`in_cluster`] with the service-account directory and environment given.
pub fn in_cluster_at(
    dir: &Path,
    host: Option<String>,
    port: Option<String>,
) -> Result<KubeConfig, Error> {
    let usage = |d: &str| Error::Usage(format!("not running in a Kubernetes pod: {d}"));
    let host = host.ok_or_else(|| usage("KUBERNETES_SERVICE_HOST is not set"))?;
    let port = port.ok_or_else(|| usage("KUBERNETES_SERVICE_PORT is not set"))?;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let server = Url::parse(&format!("https://{host}:{port}/")).map_err(|e| usage(&e))?;
    let (ca, token) = (dir.join("ca.crt"), dir.join("token"));
    for p in [&ca, &token] {
        std::fs::metadata(p).map_err(|e| Error::io("read service account", p, e))?;
    }
    let tls = TlsOptions {
        ca: vec![ca],
        ..TlsOptions::default()
    };
    Ok(KubeConfig {
        server,
        tls,
        token: None,
        token_file: Some(token),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const K3S: &str = "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0EK
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Q0VSVAo=
    client-key-data: S0VZCg==
";

    #[test]
    fn base64_round_trips_known_vectors() {
        for (enc, dec) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg", "foob"),
            ("Zm9v\nYmFy", "foobar"),
        ] {
            assert_eq!(base64_decode(enc).unwrap(), dec.as_bytes(), "{enc}");
        }
        assert_eq!(base64_decode("/+8=").unwrap(), [0xff, 0xef]);
        for bad in ["Z", "Zm9v!", "Zg=", "Z===", "Zm9vY"] {
            assert!(base64_decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_what_k3s_writes() {
        let c = parse(K3S, Path::new("/etc")).unwrap();
        assert_eq!(c.server.authority(), "127.0.0.1:6443");
        assert_eq!(c.tls.ca_pem, vec![b"CA\n".to_vec()]);
        assert_eq!(
            c.tls.client_pem,
            Some((b"CERT\n".to_vec(), b"KEY\n".to_vec()))
        );
        assert_eq!(c.token, None);
    }

    #[test]
    fn resolves_the_current_context_among_several() {
        let text = "# two clusters, kubectl style (indented sequences, quotes)
clusters:
  - name: other
    cluster:
      server: https://10.0.0.9:6443
      certificate-authority: other-ca.pem
  - name: \"prod\"
    cluster:
      server: 'https://[fd00::1]:6443'
      certificate-authority: ca.pem
contexts:
  - name: p
    context: {cluster: x}
  - name: q
    context:
      cluster: prod
      user: admin
current-context: q
users:
  - name: admin
    user:
      token: abc.def
";
        let c = parse(text, Path::new("/k")).unwrap();
        assert_eq!(c.server.host, "fd00::1");
        assert_eq!(c.tls.ca, vec![PathBuf::from("/k/ca.pem")]);
        assert_eq!(c.token.as_deref(), Some("abc.def"));
        assert!(c.tls.client_pem.is_none());
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let http = K3S.replace("https://127.0.0.1", "http://127.0.0.1");
        assert!(parse(&http, Path::new("/"))
            .unwrap_err()
            .contains("plain http"));
        let no_ca = K3S.replace(
            "certificate-authority-data: Q0EK\n",
            "insecure-skip-tls-verify: true\n",
        );
        assert!(parse(&no_ca, Path::new("/")).is_err());
        let wrong_ctx = K3S.replace("current-context: default", "current-context: gone");
        assert!(parse(&wrong_ctx, Path::new("/"))
            .unwrap_err()
            .contains("gone"));
        let half = K3S.replace("    client-key-data: S0VZCg==\n", "");
        assert!(parse(&half, Path::new("/"))
            .unwrap_err()
            .contains("go together"));
        assert!(parse("clusters:\nnot yaml at all\n", Path::new("/")).is_err());
    }

    #[test]
    fn in_cluster_uses_the_service_account_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(in_cluster_at(dir.path(), Some("10.43.0.1".into()), Some("443".into())).is_err());
        std::fs::write(dir.path().join("ca.crt"), "x").unwrap();
        std::fs::write(dir.path().join("token"), "t").unwrap();
        let c = in_cluster_at(dir.path(), Some("10.43.0.1".into()), Some("443".into())).unwrap();
        assert_eq!(c.server.authority(), "10.43.0.1:443");
        assert_eq!(c.token_file, Some(dir.path().join("token")));
        assert_eq!(c.tls.ca, vec![dir.path().join("ca.crt")]);
        let v6 = in_cluster_at(dir.path(), Some("fd00::1".into()), Some("443".into())).unwrap();
        assert_eq!(v6.server.authority(), "[fd00::1]:443");
        assert!(in_cluster_at(dir.path(), None, Some("443".into())).is_err());
    }
}
