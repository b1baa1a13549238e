//! Where the API server is and how to authenticate to it: a kubeconfig file
//! (as k3s writes `/etc/rancher/k3s/k3s.yaml`) or the in-cluster service
//! account. Parsing is pure; only [`load`] and [`in_cluster`] touch files
//! and the environment. No network I/O here.
//!
//! [`parse`] reads any kubeconfig kubectl accepts (block or flow YAML,
//! JSON) through `crate::yaml` and serde; exec and auth-provider plugins
//! and basic auth are refused with a message saying so.

use std::path::{Path, PathBuf};

use serde::Deserialize;

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

pub(crate) use crate::bundle::pem::base64_decode;

#[derive(Debug, Deserialize)]
struct KubeFile {
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(default)]
    users: Vec<NamedUser>,
    #[serde(rename = "current-context", default)]
    current_context: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NamedCluster {
    name: String,
    cluster: Cluster,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    server: String,
    #[serde(default)]
    certificate_authority: Option<String>,
    #[serde(default)]
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
}

#[derive(Debug, Deserialize)]
struct NamedContext {
    name: String,
    context: Context,
}

#[derive(Debug, Deserialize)]
struct Context {
    cluster: String,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: User,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    client_certificate: Option<String>,
    client_certificate_data: Option<String>,
    client_key: Option<String>,
    client_key_data: Option<String>,
    exec: Option<serde_json::Value>,
    auth_provider: Option<serde_json::Value>,
    username: Option<String>,
}

/// Pick the entry named `name`, or the only entry when no name is given.
fn named<'a, T>(
    list: &'a [T],
    name: Option<&str>,
    what: &str,
    name_of: impl Fn(&T) -> &str,
) -> Result<&'a T, String> {
    match name {
        Some(n) => list
            .iter()
            .find(|i| name_of(i) == n)
            .ok_or_else(|| format!("no {what} named {n:?}")),
        None if list.len() == 1 => Ok(&list[0]),
        None => Err(format!(
            "{} {what}s and no current-context to choose one",
            list.len()
        )),
    }
}

/// Resolve a kubeconfig's current context to a server, trust roots and
/// credentials. Any YAML style kubectl accepts (block, flow, JSON), through
/// a YAML parser; credential plugins are refused with the reason. Relative
/// file references resolve against `base_dir`.
pub fn parse(text: &str, base_dir: &Path) -> Result<KubeConfig, String> {
    let doc = crate::yaml::parse(text)?;
    let f: KubeFile = serde_json::from_value(doc).map_err(|e| format!("not a kubeconfig: {e}"))?;
    let (cluster_name, user_name) = match f.current_context.as_deref().filter(|c| !c.is_empty()) {
        Some(cc) => {
            let ctx = named(&f.contexts, Some(cc), "context", |c| &c.name)?;
            (
                Some(ctx.context.cluster.as_str()),
                ctx.context.user.as_deref(),
            )
        }
        None => (None, None),
    };
    let cluster = &named(&f.clusters, cluster_name, "cluster", |c| &c.name)?.cluster;
    let server = Url::parse(&cluster.server)?;
    if !server.https {
        return Err("plain http API servers are not supported".into());
    }
    if cluster.insecure_skip_tls_verify {
        return Err("insecure-skip-tls-verify is not supported".into());
    }
    let file = |p: &str| base_dir.join(p);
    let mut tls = TlsOptions::default();
    if let Some(ca) = &cluster.certificate_authority_data {
        tls.ca_pem
            .push(base64_decode(ca).map_err(|e| format!("certificate-authority-data: {e}"))?);
    } else if let Some(ca) = &cluster.certificate_authority {
        tls.ca.push(file(ca));
    } else {
        return Err(
            "cluster has no certificate-authority(-data); system roots are not used".into(),
        );
    }
    let mut token = None;
    let mut token_file = None;
    // A kubeconfig without users (or without a matching one) means anonymous access.
    if !f.users.is_empty() || user_name.is_some() {
        let nu = named(&f.users, user_name, "user", |u| &u.name)?;
        let user = &nu.user;
        if let Some(exec) = &user.exec {
            return Err(format!(
                "user {:?} gets its credentials from an exec plugin ({}): ferry runs no credential \
                 plugins; give it a kubeconfig with a client certificate or a token",
                nu.name,
                exec.get("command").and_then(|c| c.as_str()).unwrap_or("?")
            ));
        }
        if user.auth_provider.is_some() {
            return Err(format!(
                "user {:?} uses an auth-provider: not supported; use a client certificate or a token",
                nu.name
            ));
        }
        if user.username.is_some() {
            return Err(format!(
                "user {:?} uses basic authentication: not supported; use a client certificate or a token",
                nu.name
            ));
        }
        let data = |k: &str, v: &Option<String>| {
            v.as_ref()
                .map(|v| base64_decode(v).map_err(|e| format!("{k}: {e}")))
                .transpose()
        };
        match (
            data("client-certificate-data", &user.client_certificate_data)?,
            data("client-key-data", &user.client_key_data)?,
        ) {
            (Some(c), Some(k)) => tls.client_pem = Some((c, k)),
            (None, None) => {}
            _ => return Err("client-certificate-data and client-key-data go together".into()),
        }
        tls.client_cert = user.client_certificate.as_deref().map(file);
        tls.client_key = user.client_key.as_deref().map(file);
        token = user.token.clone();
        token_file = user.token_file.as_deref().map(file);
    }
    Ok(KubeConfig {
        server,
        tls,
        token,
        token_file,
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
    fn json_and_flow_style_kubeconfigs_and_plugins() {
        let json = r#"{"apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.1:6443", "certificate-authority-data": "Q0EK"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
            "users": [{"name": "u", "user": {"token": "t0k"}}]}"#;
        let c = parse(json, Path::new("/")).unwrap();
        assert_eq!((c.server.port, c.token.as_deref()), (6443, Some("t0k")));
        let flow = "clusters: [{name: c, cluster: {server: 'https://h:1', certificate-authority: ca.crt}}]\nusers: [{name: u, user: {tokenFile: tok}}]\n";
        let c = parse(flow, Path::new("/etc/k")).unwrap();
        assert_eq!(c.tls.ca, vec![PathBuf::from("/etc/k/ca.crt")]);
        assert_eq!(c.token_file, Some(PathBuf::from("/etc/k/tok")));
        let exec = K3S.replace(
            "    client-certificate-data: Q0VSVAo=\n    client-key-data: S0VZCg==\n",
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: aws-iam-authenticator\n",
        );
        let e = parse(&exec, Path::new("/")).unwrap_err();
        assert!(e.contains("exec plugin (aws-iam-authenticator)"), "{e}");
        let basic = K3S.replace(
            "    client-certificate-data: Q0VSVAo=\n    client-key-data: S0VZCg==\n",
            "    username: admin\n    password: x\n",
        );
        assert!(parse(&basic, Path::new("/"))
            .unwrap_err()
            .contains("basic authentication"));
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
