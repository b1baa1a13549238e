//! Node settings, as `ferry provision` writes them (`provision/node.toml`)
//! and `ferry firstboot` applies them: the model, its rules, and what it
//! becomes on the device (`render`: hostname, k3s config, SSH keys, Wi-Fi,
//! NTP, each a file with its mode). Pure: files are read and written by
//! `io::provision` (host) and `io::firstboot` (device).

#[cfg(feature = "host")]
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Error;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
    #[serde(default)]
    pub k3s: K3s,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed: Option<Feed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wifi: Option<Wifi>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ntp: Vec<String>,
    /// A kubeconfig for ferry's cluster agent (a host path, like the
    /// identity files): written to the card as `provision/kubeconfig`
    /// (0600), which the device's `[cluster] kubeconfig` names. Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct K3s {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    /// Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Feed {
    pub url: String,
    pub channel: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// Given certificate and key (PEM files on the host)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// ...or generate a key and a self-signed certificate (CN = hostname)
    /// whose fingerprint the feed server pins. (A factory CA signs given
    /// certificates outside ferry.)
    #[serde(default)]
    pub generate: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Wifi {
    pub ssid: String,
    /// Secret.
    pub psk: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

fn bad(what: impl Into<String>) -> Error {
    Error::Usage(what.into())
}

fn hostname_ok(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && h.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        && !h.starts_with('-')
        && !h.ends_with('-')
}

impl NodeConfig {
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(h) = &self.hostname {
            if !hostname_ok(h) {
                return Err(bad(format!("hostname {h:?} is not a valid host name")));
            }
        }
        match self.k3s.role.as_deref() {
            None | Some("server") => {}
            Some("agent") => {
                if self.k3s.server_url.is_none() || self.k3s.token.is_none() {
                    return Err(bad("an agent needs k3s.server_url and k3s.token"));
                }
            }
            Some(r) => return Err(bad(format!("k3s.role {r:?}: expected server or agent"))),
        }
        for l in &self.k3s.labels {
            if !l.contains('=') || l.contains(char::is_whitespace) {
                return Err(bad(format!("label {l:?}: expected key=value")));
            }
        }
        for t in &self.k3s.taints {
            let ok = t
                .split_once(':')
                .is_some_and(|(_, e)| matches!(e, "NoSchedule" | "PreferNoSchedule" | "NoExecute"));
            if !ok {
                return Err(bad(format!(
                    "taint {t:?}: expected key=value:NoSchedule|PreferNoSchedule|NoExecute"
                )));
            }
        }
        for k in &self.ssh_authorized_keys {
            if k.contains('\n')
                || !k.starts_with("ssh-") && !k.starts_with("ecdsa-") && !k.starts_with("sk-")
            {
                return Err(bad("ssh_authorized_keys: one OpenSSH public key per entry"));
            }
        }
        if let Some(u) = self.k3s.server_url.as_deref() {
            crate::net::url::Url::parse(u).map_err(|e| bad(format!("k3s.server_url: {e}")))?;
        }
        if let Some(f) = &self.feed {
            crate::net::url::Url::parse(&f.url).map_err(|e| bad(format!("feed.url: {e}")))?;
        }
        k3s_args(&self.k3s.extra_args)?;
        Ok(())
    }

    /// What was set, for logs and reports: secrets as "(set)".
    #[cfg(feature = "host")]
    pub(crate) fn summary(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        if let Some(h) = &self.hostname {
            m.insert("hostname".into(), h.clone());
        }
        if let Some(r) = &self.k3s.role {
            m.insert("k3s.role".into(), r.clone());
        }
        if let Some(u) = &self.k3s.server_url {
            m.insert("k3s.server_url".into(), u.clone());
        }
        if self.k3s.token.is_some() {
            m.insert("k3s.token".into(), "(set)".into());
        }
        if !self.k3s.labels.is_empty() {
            m.insert("k3s.labels".into(), self.k3s.labels.join(","));
        }
        if !self.k3s.taints.is_empty() {
            m.insert("k3s.taints".into(), self.k3s.taints.join(","));
        }
        if self.kubeconfig.is_some() {
            m.insert("kubeconfig".into(), "(set)".into());
        }
        if !self.ssh_authorized_keys.is_empty() {
            m.insert(
                "ssh_authorized_keys".into(),
                format!("{} key(s)", self.ssh_authorized_keys.len()),
            );
        }
        if let Some(f) = &self.feed {
            // a query may carry a token: never in a report
            let url = crate::net::url::Url::parse(&f.url)
                .map(|u| u.redacted())
                .unwrap_or_else(|_| "(invalid url)".into());
            m.insert("feed".into(), format!("{url} ({})", f.channel));
        }
        if let Some(w) = &self.wifi {
            m.insert("wifi".into(), format!("{} (psk set)", w.ssid));
        }
        if self.identity.is_some() {
            m.insert("identity".into(), "(set)".into());
        }
        if !self.ntp.is_empty() {
            m.insert("ntp".into(), self.ntp.join(","));
        }
        m
    }
}

/// One file `render` produces: a path relative to the root it is applied
/// under, its permission bits, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub path: &'static str,
    pub mode: u32,
    pub content: Vec<u8>,
}

/// A YAML scalar: a JSON string is a valid YAML double-quoted scalar, with
/// every escape YAML needs (control characters included).
fn yq(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// `--key=value` / `--key value`-free `--flag` k3s arguments as config.yaml
/// entries (k3s reads every flag from its config file under the flag's
/// name); repeated keys become lists.
fn k3s_args(args: &[String]) -> Result<Vec<(String, Vec<String>)>, Error> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for a in args {
        let Some(flag) = a.strip_prefix("--") else {
            return Err(bad(format!(
                "k3s.extra_args: {a:?} is not a --flag or --flag=value"
            )));
        };
        let (k, v) = flag.split_once('=').unwrap_or((flag, "true"));
        if k.is_empty() || !k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
            return Err(bad(format!("k3s.extra_args: {a:?} is not a k3s flag")));
        }
        match out.iter_mut().find(|(n, _)| n == k) {
            Some((_, vs)) => vs.push(v.to_string()),
            None => out.push((k.to_string(), vec![v.to_string()])),
        }
    }
    Ok(out)
}

impl NodeConfig {
    /// The files the OS needs for these settings, under an `/etc`-rooted
    /// tree. `authorized_keys` adds keys from `provision/authorized_keys`.
    pub fn render(&self, authorized_keys: &str) -> Result<Vec<Generated>, Error> {
        self.validate()?;
        let mut out = Vec::new();
        if let Some(h) = &self.hostname {
            out.push(Generated {
                path: "etc/hostname",
                mode: 0o644,
                content: format!("{h}\n").into_bytes(),
            });
            out.push(Generated {
                path: "etc/hosts",
                mode: 0o644,
                content: format!(
                    "127.0.0.1\tlocalhost\n127.0.1.1\t{h}\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
                )
                .into_bytes(),
            });
        }
        // k3s: which binary mode, and its config file (token inside: 0600)
        let role = self.k3s.role.as_deref().unwrap_or("server");
        out.push(Generated {
            path: "etc/ferry/k3s.env",
            mode: 0o644,
            content: format!("K3S_ROLE={role}\n").into_bytes(),
        });
        let mut y = String::from("# generated by ferry firstboot from provision/node.toml\n");
        if let Some(h) = &self.hostname {
            y.push_str(&format!("node-name: {}\n", yq(h)));
        }
        if let Some(u) = &self.k3s.server_url {
            y.push_str(&format!("server: {}\n", yq(u)));
        }
        if let Some(t) = &self.k3s.token {
            y.push_str(&format!("token: {}\n", yq(t)));
        }
        for (key, list) in [
            ("node-label", &self.k3s.labels),
            ("node-taint", &self.k3s.taints),
        ] {
            if !list.is_empty() {
                y.push_str(&format!("{key}:\n"));
                for v in list.iter() {
                    y.push_str(&format!("  - {}\n", yq(v)));
                }
            }
        }
        for (k, vs) in k3s_args(&self.k3s.extra_args)? {
            if let [v] = vs.as_slice() {
                y.push_str(&format!("{k}: {}\n", yq(v)));
            } else {
                y.push_str(&format!("{k}:\n"));
                for v in vs {
                    y.push_str(&format!("  - {}\n", yq(&v)));
                }
            }
        }
        out.push(Generated {
            path: "etc/rancher/k3s/config.yaml",
            mode: 0o600,
            content: y.into_bytes(),
        });
        let mut keys: Vec<String> = self.ssh_authorized_keys.clone();
        keys.extend(
            authorized_keys
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
        // each key once, in order (node.toml's first)
        let mut seen = std::collections::HashSet::new();
        keys.retain(|k| seen.insert(k.clone()));
        if !keys.is_empty() {
            out.push(Generated {
                path: "root/.ssh/authorized_keys",
                mode: 0o600,
                content: (keys.join("\n") + "\n").into_bytes(),
            });
        }
        if let Some(w) = &self.wifi {
            let mut c = String::from(
                "ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev\nupdate_config=0\n",
            );
            if let Some(cc) = &w.country {
                c.push_str(&format!("country={cc}\n"));
            }
            c.push_str(&format!(
                "network={{\n\tssid={}\n\tpsk={}\n}}\n",
                yq(&w.ssid),
                yq(&w.psk)
            ));
            out.push(Generated {
                path: "etc/wpa_supplicant/wpa_supplicant-wlan0.conf",
                mode: 0o600,
                content: c.into_bytes(),
            });
        }
        if !self.ntp.is_empty() {
            out.push(Generated {
                path: "etc/systemd/timesyncd.conf.d/ferry.conf",
                mode: 0o644,
                content: format!("[Time]\nNTP={}\n", self.ntp.join(" ")).into_bytes(),
            });
            out.push(Generated {
                path: "etc/ntp.servers",
                mode: 0o644,
                content: (self.ntp.join("\n") + "\n").into_bytes(),
            });
        }
        Ok(out)
    }
}

/// A k3OS `config.yaml` (already parsed) as node settings, and what could
/// not be carried over (each a line for the user). k3OS keys with no ferry
/// counterpart are reported, never silently dropped.
pub fn from_k3os(doc: &serde_json::Value) -> Result<(NodeConfig, Vec<String>), Error> {
    use serde_json::Value;
    let top = doc
        .as_object()
        .ok_or_else(|| bad("a k3OS config.yaml is a mapping at the top"))?;
    let mut n = NodeConfig::default();
    let mut notes = Vec::new();
    let text = |v: &Value, what: &str| -> Result<String, Error> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(x) => Ok(x.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(bad(format!("{what}: expected a string"))),
        }
    };
    let list = |v: &Value, what: &str| -> Result<Vec<String>, Error> {
        match v {
            Value::Array(a) => a.iter().map(|x| text(x, what)).collect(),
            Value::Null => Ok(vec![]),
            other => Ok(vec![text(other, what)?]),
        }
    };
    for (k, v) in top {
        match k.as_str() {
            "hostname" => n.hostname = Some(text(v, "hostname")?),
            "ssh_authorized_keys" => {
                for key in list(v, "ssh_authorized_keys")? {
                    if let Some(user) = key.strip_prefix("github:") {
                        notes.push(format!(
                            "ssh_authorized_keys: \"github:{user}\" is fetched from GitHub at boot by k3OS; \
                             ferry does not fetch keys: add the keys themselves"
                        ));
                    } else {
                        n.ssh_authorized_keys.push(key);
                    }
                }
            }
            "k3os" => {
                let Some(k3os) = v.as_object() else {
                    return Err(bad("k3os: expected a mapping"));
                };
                for (k, v) in k3os {
                    match k.as_str() {
                        "server_url" => n.k3s.server_url = Some(text(v, "k3os.server_url")?),
                        "token" => n.k3s.token = Some(text(v, "k3os.token")?),
                        "ntp_servers" => n.ntp = list(v, "k3os.ntp_servers")?,
                        "taints" => n.k3s.taints = list(v, "k3os.taints")?,
                        "labels" => {
                            let Some(m) = v.as_object() else {
                                return Err(bad("k3os.labels: expected a mapping"));
                            };
                            for (lk, lv) in m {
                                n.k3s.labels.push(format!("{lk}={}", text(lv, "k3os.labels")?));
                            }
                        }
                        "k3s_args" => {
                            let mut args = list(v, "k3os.k3s_args")?.into_iter().peekable();
                            if let Some(r) = args.next_if(|a| a == "server" || a == "agent") {
                                n.k3s.role = Some(r);
                            }
                            // "--flag value" pairs become "--flag=value"
                            while let Some(a) = args.next() {
                                match args.next_if(|x| !x.starts_with('-')) {
                                    Some(val) if !a.contains('=') => {
                                        n.k3s.extra_args.push(format!("{a}={val}"))
                                    }
                                    Some(val) => {
                                        n.k3s.extra_args.push(a);
                                        notes.push(format!("k3os.k3s_args: {val:?} follows {:?} and was left out", n.k3s.extra_args.last().cloned().unwrap_or_default()));
                                    }
                                    None => n.k3s.extra_args.push(a),
                                }
                            }
                        }
                        "wifi" => {
                            let nets = v.as_array().cloned().unwrap_or_default();
                            if let Some(w) = nets.first() {
                                n.wifi = Some(Wifi {
                                    ssid: text(&w["name"], "k3os.wifi.name")?,
                                    psk: text(&w["passphrase"], "k3os.wifi.passphrase")?,
                                    country: None,
                                });
                            }
                            if nets.len() > 1 {
                                notes.push(format!(
                                    "k3os.wifi: {} networks; ferry provisions one (the first, {:?})",
                                    nets.len(),
                                    nets[0]["name"].as_str().unwrap_or("")
                                ));
                            }
                        }
                        other => notes.push(format!(
                            "k3os.{other}: not converted (no ferry equivalent; see README \"Migrating from k3OS\")"
                        )),
                    }
                }
            }
            other => notes.push(format!(
                "{other}: not converted (no ferry equivalent; see README \"Migrating from k3OS\")"
            )),
        }
    }
    // k3OS: a server URL without an explicit role means an agent
    if n.k3s.role.is_none() {
        n.k3s.role = Some(
            if n.k3s.server_url.is_some() {
                "agent"
            } else {
                "server"
            }
            .into(),
        );
    }
    n.validate()?;
    Ok((n, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeConfig {
        toml::from_str(
            r#"
hostname = "edge-01"
ssh_authorized_keys = ["ssh-ed25519 AAAA ops@example"]
ntp = ["0.pool.ntp.org", "1.pool.ntp.org"]
[k3s]
role = "agent"
server_url = "https://10.0.0.1:6443"
token = "K10::secret\"quote"
labels = ["zone=a", "tier=edge"]
taints = ["edge=true:NoSchedule"]
extra_args = ["--disable=traefik", "--disable=servicelb", "--protect-kernel-defaults"]
[wifi]
ssid = "factory"
psk = "wpa-secret"
country = "DE"
"#,
        )
        .unwrap()
    }

    fn file<'a>(g: &'a [Generated], p: &str) -> &'a Generated {
        g.iter()
            .find(|f| f.path == p)
            .unwrap_or_else(|| panic!("no {p}"))
    }

    #[test]
    fn renders_every_setting_with_its_mode() {
        let g = node()
            // a key given in both places is written once
            .render("ssh-ed25519 BBBB extra@example\n# comment\nssh-ed25519 AAAA ops@example\n")
            .unwrap();
        assert_eq!(file(&g, "etc/hostname").content, b"edge-01\n");
        let k = file(&g, "etc/rancher/k3s/config.yaml");
        assert_eq!(k.mode, 0o600);
        let y = String::from_utf8(k.content.clone()).unwrap();
        for want in [
            "node-name: \"edge-01\"\n",
            "server: \"https://10.0.0.1:6443\"\n",
            "token: \"K10::secret\\\"quote\"\n",
            "node-label:\n  - \"zone=a\"\n  - \"tier=edge\"\n",
            "node-taint:\n  - \"edge=true:NoSchedule\"\n",
            "disable:\n  - \"traefik\"\n  - \"servicelb\"\n",
            "protect-kernel-defaults: \"true\"\n",
        ] {
            assert!(y.contains(want), "{want:?} not in\n{y}");
        }
        assert_eq!(file(&g, "etc/ferry/k3s.env").content, b"K3S_ROLE=agent\n");
        let keys = file(&g, "root/.ssh/authorized_keys");
        assert_eq!(
            (keys.mode, keys.content.as_slice()),
            (
                0o600,
                &b"ssh-ed25519 AAAA ops@example\nssh-ed25519 BBBB extra@example\n"[..]
            )
        );
        let w = file(&g, "etc/wpa_supplicant/wpa_supplicant-wlan0.conf");
        assert_eq!(w.mode, 0o600);
        assert!(String::from_utf8_lossy(&w.content).contains("psk=\"wpa-secret\""));
        assert_eq!(
            file(&g, "etc/systemd/timesyncd.conf.d/ferry.conf").content,
            b"[Time]\nNTP=0.pool.ntp.org 1.pool.ntp.org\n"
        );
    }

    #[test]
    fn converts_the_k3os_example_config() {
        let doc = crate::yaml::parse(
            r#"
ssh_authorized_keys:
- ssh-rsa AAAAB3Nza ops@example
- "github:ibuildthecloud"
write_files:
- content: hello
  path: /etc/local.d/example.start
hostname: myhost
run_cmd:
- "echo hello, run command"
k3os:
  modules: [kvm, nvme]
  ntp_servers:
  - 0.us.pool.ntp.org
  wifi:
  - name: home
    passphrase: mypassword
  - name: nothome
    passphrase: somethingelse
  password: rancher
  server_url: https://someserver:6443
  token: TOKEN_VALUE
  labels:
    region: us-west-1
  k3s_args:
  - agent
  - "--node-ip"
  - 10.0.0.5
  - "--disable-apiserver-lb"
  taints:
  - key1=value1:NoSchedule
"#,
        )
        .unwrap();
        let (n, notes) = from_k3os(&doc).unwrap();
        assert_eq!(n.hostname.as_deref(), Some("myhost"));
        assert_eq!(n.ssh_authorized_keys, ["ssh-rsa AAAAB3Nza ops@example"]);
        assert_eq!(n.k3s.role.as_deref(), Some("agent"));
        assert_eq!(n.k3s.server_url.as_deref(), Some("https://someserver:6443"));
        assert_eq!(n.k3s.token.as_deref(), Some("TOKEN_VALUE"));
        assert_eq!(n.k3s.labels, ["region=us-west-1"]);
        assert_eq!(n.k3s.taints, ["key1=value1:NoSchedule"]);
        assert_eq!(
            n.k3s.extra_args,
            ["--node-ip=10.0.0.5", "--disable-apiserver-lb"]
        );
        assert_eq!(n.ntp, ["0.us.pool.ntp.org"]);
        assert_eq!(n.wifi.as_ref().map(|w| w.ssid.as_str()), Some("home"));
        let all = notes.join("\n");
        for want in [
            "github:ibuildthecloud",
            "write_files",
            "run_cmd",
            "k3os.modules",
            "k3os.password",
            "2 networks",
        ] {
            assert!(all.contains(want), "{want} not in\n{all}");
        }
        // an agent without a token is refused, as any node.toml
        let mut d = doc.clone();
        d["k3os"].as_object_mut().unwrap().remove("token");
        assert!(from_k3os(&d).is_err());
    }

    #[test]
    fn a_bare_server_gets_a_server_config_and_bad_args_are_refused() {
        let n = NodeConfig::default();
        let g = n.render("").unwrap();
        assert_eq!(file(&g, "etc/ferry/k3s.env").content, b"K3S_ROLE=server\n");
        assert!(g
            .iter()
            .all(|f| f.path != "etc/hostname" && f.path != "root/.ssh/authorized_keys"));
        let mut n = node();
        n.k3s.extra_args = vec!["disable traefik".into()];
        assert!(n
            .render("")
            .unwrap_err()
            .to_string()
            .contains("not a --flag"));
        let mut n = node();
        n.k3s.extra_args = vec!["--dis able=x".into()];
        assert!(n.render("").is_err());
    }
}
