//! Cluster-aware reboots against a fake Kubernetes API server in this file:
//! HTTPS with a test CA (rcgen), client-certificate auth from a k3s.yaml or a
//! bearer token, nodes with merge-patch, pods with PodDisruptionBudget
//! refusals (429) and lingering termination, evictions, Leases with
//! resourceVersion and 409 conflicts, events.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ferry::kube::{after_boot, coordinate_reboot, kubeconfig, BootOutcome, Kube, RebootOptions};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};

// ---------------------------------------------------------------- fake API server

struct Pod {
    obj: Value,
    /// Evictions still answered with 429 (u32::MAX: a budget that never allows it).
    refuse: u32,
    /// GETs still answered with the terminating pod after its eviction.
    linger: u32,
    evicted: bool,
}

#[derive(Default)]
struct State {
    nodes: BTreeMap<String, Value>,
    pods: Vec<Pod>,
    leases: BTreeMap<String, Value>,
    rv: u64,
    events: Vec<Value>,
    evictions: Vec<String>,
    token: String,
    /// Every request: (method, path).
    calls: Vec<(String, String)>,
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message, "code": code}),
    )
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// A strategic merge patch of a node's status, as the API server does it
/// for `conditions` (patchMergeKey `type`): each patched condition replaces
/// the one of its type, the others stay. (A JSON merge patch, `merge`,
/// replaces the whole list instead.)
fn strategic_status(node: &mut Value, patch: &Value) {
    let mut rest = patch.clone();
    let conds = rest["status"]
        .as_object_mut()
        .and_then(|s| s.remove("conditions"))
        .and_then(|c| c.as_array().cloned())
        .unwrap_or_default();
    merge(node, &rest);
    let list = node["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut list: Vec<Value> = list
        .into_iter()
        .filter(|c| !conds.iter().any(|p| p["type"] == c["type"]))
        .collect();
    list.extend(conds);
    node["status"]["conditions"] = json!(list);
}

impl State {
    fn route(&mut self, method: &str, path: &str, query: &str, body: Value) -> (u16, Value) {
        let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method, seg.as_slice()) {
            ("GET", ["api", "v1", "nodes"]) => (
                200,
                json!({"kind": "NodeList", "items": self.nodes.values().cloned().collect::<Vec<_>>()}),
            ),
            ("GET", ["apis", "coordination.k8s.io", "v1", "namespaces", ns, "leases"]) => {
                let prefix = format!("{ns}/");
                let items: Vec<Value> = self
                    .leases
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .map(|(_, v)| v.clone())
                    .collect();
                (200, json!({"kind": "LeaseList", "items": items}))
            }
            ("GET", ["api", "v1", "nodes", n]) => match self.nodes.get(*n) {
                Some(node) => (200, node.clone()),
                None => status(404, "NotFound", &format!("nodes \"{n}\" not found")),
            },
            ("PATCH-STRATEGIC", ["api", "v1", "nodes", n, "status"]) => {
                match self.nodes.get_mut(*n) {
                    Some(node) => {
                        strategic_status(node, &body);
                        (200, node.clone())
                    }
                    None => status(404, "NotFound", &format!("nodes \"{n}\" not found")),
                }
            }
            ("PATCH", ["api", "v1", "nodes", n, "status"]) => match self.nodes.get_mut(*n) {
                Some(node) => {
                    merge(node, &body);
                    (200, node.clone())
                }
                None => status(404, "NotFound", &format!("nodes \"{n}\" not found")),
            },
            ("PATCH", ["api", "v1", "nodes", n]) => match self.nodes.get_mut(*n) {
                Some(node) => {
                    merge(node, &body);
                    (200, node.clone())
                }
                None => status(404, "NotFound", &format!("nodes \"{n}\" not found")),
            },
            ("GET", ["api", "v1", "pods"]) => {
                let node = query
                    .strip_prefix("fieldSelector=spec.nodeName%3D")
                    .unwrap_or("?");
                let items: Vec<Value> = self
                    .pods
                    .iter()
                    .filter(|p| p.obj["spec"]["nodeName"] == node && !(p.evicted && p.linger == 0))
                    .map(|p| p.obj.clone())
                    .collect();
                (200, json!({"kind": "PodList", "items": items}))
            }
            ("GET", ["api", "v1", "namespaces", ns, "pods", name]) => match self.pod(ns, name) {
                Some(p) if p.evicted && p.linger > 0 => {
                    p.linger -= 1;
                    let mut o = p.obj.clone();
                    o["metadata"]["deletionTimestamp"] = json!("2024-05-01T10:00:00Z");
                    (200, o)
                }
                Some(p) if !p.evicted => (200, p.obj.clone()),
                _ => status(404, "NotFound", &format!("pods \"{name}\" not found")),
            },
            ("POST", ["api", "v1", "namespaces", ns, "pods", name, "eviction"]) => {
                assert_eq!(body["apiVersion"], "policy/v1");
                let id = format!("{ns}/{name}");
                match self.pod(ns, name) {
                    Some(p) if p.evicted => status(404, "NotFound", "gone"),
                    Some(p) if p.refuse > 0 => {
                        if p.refuse != u32::MAX {
                            p.refuse -= 1;
                        }
                        // as the API server answers: the budget is named in the causes
                        let (code, mut st) = status(
                            429,
                            "TooManyRequests",
                            "Cannot evict pod as it would violate the pod's disruption budget.",
                        );
                        st["details"] = json!({"causes": [{"reason": "DisruptionBudget",
                            "message": format!("The disruption budget {name}-pdb needs 1 healthy pods and has 1 currently")}]});
                        (code, st)
                    }
                    Some(p) => {
                        p.evicted = true;
                        self.evictions.push(id);
                        (201, json!({"kind": "Status", "status": "Success"}))
                    }
                    None => status(404, "NotFound", "no such pod"),
                }
            }
            ("POST", ["api", "v1", "namespaces", _, "events"]) => {
                self.events.push(body.clone());
                (201, body)
            }
            ("POST", ["apis", "coordination.k8s.io", "v1", "namespaces", ns, "leases"]) => {
                let key = format!("{ns}/{}", body["metadata"]["name"].as_str().unwrap_or(""));
                if self.leases.contains_key(&key) {
                    return status(409, "AlreadyExists", "leases already exists");
                }
                self.store_lease(key, body)
            }
            ("GET", ["apis", "coordination.k8s.io", "v1", "namespaces", ns, "leases", name]) => {
                match self.leases.get(&format!("{ns}/{name}")) {
                    Some(l) => (200, l.clone()),
                    None => status(404, "NotFound", "leases not found"),
                }
            }
            ("PUT", ["apis", "coordination.k8s.io", "v1", "namespaces", ns, "leases", name]) => {
                let key = format!("{ns}/{name}");
                let Some(cur) = self.leases.get(&key) else {
                    return status(404, "NotFound", "leases not found");
                };
                if cur["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"] {
                    return status(409, "Conflict", "the object has been modified; please apply your changes to the latest version");
                }
                self.store_lease(key, body)
            }
            _ => status(
                404,
                "NotFound",
                &format!("{method} {path}: no route in the fake"),
            ),
        }
    }

    fn store_lease(&mut self, key: String, mut l: Value) -> (u16, Value) {
        self.rv += 1;
        l["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.leases.insert(key, l.clone());
        (200, l)
    }

    fn pod(&mut self, ns: &str, name: &str) -> Option<&mut Pod> {
        self.pods
            .iter_mut()
            .find(|p| p.obj["metadata"]["namespace"] == ns && p.obj["metadata"]["name"] == name)
    }

    fn holder(&self, slot: u32) -> Option<String> {
        let l = self
            .leases
            .get(&format!("kube-system/ferry-reboot-{slot}"))?;
        l["spec"]["holderIdentity"].as_str().map(String::from)
    }
}

async fn handle(
    st: Arc<Mutex<State>>,
    client_cert: bool,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let ctype = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let (code, out) = {
        let mut s = st.lock().expect("fake state lock");
        s.calls.push((method.clone(), path.clone()));
        if !client_cert && auth != Some(format!("Bearer {}", s.token)) {
            status(401, "Unauthorized", "Unauthorized")
        } else if method == "PATCH" && ctype == "application/strategic-merge-patch+json" {
            s.route("PATCH-STRATEGIC", &path, &query, body)
        } else if method == "PATCH" && ctype != "application/merge-patch+json" {
            status(415, "UnsupportedMediaType", &ctype)
        } else {
            s.route(&method, &path, &query, body)
        }
    };
    let resp = hyper::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(out.to_string())));
    Ok(resp.expect("valid response"))
}

struct Fake {
    state: Arc<Mutex<State>>,
    port: u16,
    dir: tempfile::TempDir,
    ca_pem: String,
    client: (String, String),
}

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let byte = |i: usize| u32::from(c.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            out.push(if i <= c.len() {
                A[(n >> (18 - 6 * i)) as usize & 63] as char
            } else {
                '='
            });
        }
    }
    out
}

impl Fake {
    async fn start() -> Fake {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "k3s-server-ca");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let srv_key = rcgen::KeyPair::generate().unwrap();
        let srv =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .unwrap()
                .signed_by(&srv_key, &ca, &ca_key)
                .unwrap();
        let cli_key = rcgen::KeyPair::generate().unwrap();
        let mut cli_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        cli_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:admin");
        let cli = cli_params.signed_by(&cli_key, &ca, &ca_key).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(srv_key.serialize_der()));
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![CertificateDer::from(srv.der().to_vec())], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            token: "sa-token-1".into(),
            ..State::default()
        }));
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, st) = (acceptor.clone(), st.clone());
                let _ = tcp.set_nodelay(true);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let client_cert = tls.get_ref().1.peer_certificates().is_some();
                    let svc =
                        hyper::service::service_fn(move |req| handle(st.clone(), client_cert, req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Fake {
            state,
            port,
            dir: tempfile::tempdir().unwrap(),
            ca_pem: ca.pem(),
            client: (cli.pem(), cli_key.serialize_pem()),
        }
    }

    /// A k3s.yaml exactly as k3s writes it (with the server address rewritten to the fake).
    fn k3s_yaml(&self, with_user_cert: bool) -> String {
        let user = if with_user_cert {
            format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                b64(self.client.0.as_bytes()),
                b64(self.client.1.as_bytes())
            )
        } else {
            // a user with no credentials at all: anonymous
            "    {}\n".to_string()
        };
        format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://127.0.0.1:{}\n  name: default\n\
             contexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\n\
             kind: Config\npreferences: {{}}\nusers:\n- name: default\n  user:\n{user}",
            b64(self.ca_pem.as_bytes()),
            self.port
        )
    }

    fn kube(&self) -> Kube {
        let path = self.dir.path().join("k3s.yaml");
        std::fs::write(&path, self.k3s_yaml(true)).unwrap();
        Kube::new(&kubeconfig::load(&path).unwrap()).unwrap()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    fn add_node(&self, name: &str) {
        let node = json!({"metadata": {"name": name, "annotations": {}}, "spec": {}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        self.with(|s| s.nodes.insert(name.into(), node));
    }

    fn add_pod(&self, node: &str, name: &str, owner: &str, refuse: u32, linger: u32) {
        let mut obj = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": name}},
            "spec": {"nodeName": node},
            "status": {"phase": "Running"}
        });
        // as the API has it: a controller's pods carry `controller: true`; a
        // bare pod (owner "") has no owner at all
        if !owner.is_empty() {
            obj["metadata"]["ownerReferences"] =
                json!([{"kind": owner, "name": "x", "controller": owner != "Node"}]);
        }
        if owner == "Node" {
            obj["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "hash"});
        }
        self.with(|s| {
            s.pods.push(Pod {
                obj,
                refuse,
                linger,
                evicted: false,
            })
        });
    }

    fn node(&self, name: &str) -> Value {
        self.with(|s| s.nodes[name].clone())
    }
}

fn opts(node: &str, concurrency: u32) -> RebootOptions {
    RebootOptions {
        concurrency,
        lease_seconds: 300,
        drain_timeout: Duration::from_secs(5),
        lock_timeout: Duration::from_secs(10),
        ready_timeout: Duration::from_secs(5),
        poll: Duration::from_millis(5),
        ..RebootOptions::new(node)
    }
}

/// The messages of the `FerryRebootWaiting` Events posted so far.
fn waiting_events(fake: &Fake) -> Vec<String> {
    fake.with(|s| {
        s.events
            .iter()
            .filter(|e| e["reason"] == "FerryRebootWaiting")
            .map(|e| {
                assert_eq!(e["type"], "Warning");
                e["message"].as_str().unwrap_or_default().to_string()
            })
            .collect()
    })
}

/// The node's `OSUpdate` condition.
fn os_condition(node: &Value) -> Value {
    node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "OSUpdate").cloned())
        .unwrap_or_default()
}

/// `coordinate_reboot` where it must reboot.
async fn reboots(kube: &Kube, o: &RebootOptions) {
    let mut rebooted = false;
    coordinate_reboot(kube, o, || {
        rebooted = true;
        Ok(())
    })
    .await
    .unwrap();
    assert!(rebooted, "no reboot");
}

/// `coordinate_reboot` where it must not reboot (`why` if it does): its error.
async fn refused(kube: &Kube, o: &RebootOptions, why: &str) -> String {
    coordinate_reboot(kube, o, || panic!("{why}"))
        .await
        .unwrap_err()
        .to_string()
}

fn committed() -> BootOutcome {
    BootOutcome::Committed {
        version: "1.2.0".into(),
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn a_k3s_yaml_reaches_the_api_with_its_client_certificate() {
    let fake = Fake::start().await;
    fake.add_node("pi-1");
    let node = fake.kube().get("/api/v1/nodes/pi-1").await.unwrap();
    assert_eq!(node["metadata"]["name"], "pi-1");

    // Without the client certificate the server refuses: it really was presented.
    let path = fake.dir.path().join("anon.yaml");
    std::fs::write(&path, fake.k3s_yaml(false)).unwrap();
    let anon = Kube::new(&kubeconfig::load(&path).unwrap()).unwrap();
    let e = anon
        .get("/api/v1/nodes/pi-1")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("GET /api/v1/nodes/pi-1: HTTP 401"), "{e}");
}

#[tokio::test]
async fn in_cluster_config_sends_the_current_service_account_token() {
    let fake = Fake::start().await;
    fake.add_node("pi-1");
    let sa = tempfile::tempdir().unwrap();
    std::fs::write(sa.path().join("ca.crt"), &fake.ca_pem).unwrap();
    std::fs::write(sa.path().join("token"), "sa-token-1\n").unwrap();
    let cfg = kubeconfig::in_cluster_at(
        sa.path(),
        Some("127.0.0.1".into()),
        Some(fake.port.to_string()),
    )
    .unwrap();
    let kube = Kube::new(&cfg).unwrap();
    kube.get("/api/v1/nodes/pi-1").await.unwrap();
    // The kubelet rotated the token: the next request uses the new file content.
    std::fs::write(sa.path().join("token"), "sa-token-2").unwrap();
    let e = kube
        .get("/api/v1/nodes/pi-1")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("HTTP 401"), "{e}");
    fake.with(|s| s.token = "sa-token-2".into());
    kube.get("/api/v1/nodes/pi-1").await.unwrap();
}

#[tokio::test]
async fn drain_evicts_workloads_and_skips_daemonset_mirror_and_finished_pods() {
    let fake = Fake::start().await;
    fake.add_node("pi-1");
    fake.add_node("pi-2");
    fake.add_pod("pi-1", "web-1", "ReplicaSet", 2, 2); // two PDB refusals, then terminates slowly
    fake.add_pod("pi-1", "web-2", "ReplicaSet", 0, 0);
    fake.add_pod("pi-1", "svclb", "DaemonSet", 0, 0);
    fake.add_pod("pi-1", "kube-vip", "Node", 0, 0); // a static pod's mirror
    fake.add_pod("pi-1", "job-x", "Job", 0, 0);
    fake.add_pod("pi-2", "web-3", "ReplicaSet", 0, 0);
    fake.with(|s| s.pods[4].obj["status"]["phase"] = json!("Succeeded"));
    let kube = fake.kube();

    let mut seen = None;
    coordinate_reboot(&kube, &opts("pi-1", 1), || {
        seen = Some(fake.with(|s| (s.nodes["pi-1"].clone(), s.evictions.clone(), s.holder(0))));
        Ok(())
    })
    .await
    .unwrap();
    let (node, evicted, holder) = seen.expect("reboot was called");
    assert_eq!(node["spec"]["unschedulable"], true);
    assert_eq!(
        node["metadata"]["annotations"]["ferry.k3os.io/status"],
        "rebooting"
    );
    assert_eq!(evicted, ["default/web-2", "default/web-1"]);
    let os = node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "OSUpdate").cloned())
        .expect("OSUpdate condition before the reboot");
    assert_eq!(
        (os["status"].as_str(), os["reason"].as_str()),
        (Some("True"), Some("RebootPending"))
    );
    assert_eq!(holder.as_deref(), Some("pi-1"));
    fake.with(|s| {
        assert!(
            !s.pods.iter().any(|p| p.evicted && p.linger > 0),
            "reboot before evicted pods were gone"
        )
    });

    let beta = RebootOptions {
        channel: Some("beta".into()),
        ..opts("pi-1", 1)
    };
    let before = fake.with(|s| s.calls.len());
    after_boot(&kube, &beta, &committed()).await.unwrap();
    // the Ready node's one read answers "is this news" and "is the cordon ours"
    let node_reads = fake.with(|s| {
        s.calls[before..]
            .iter()
            .filter(|(m, p)| m == "GET" && p == "/api/v1/nodes/pi-1")
            .count()
    });
    assert_eq!(node_reads, 1, "after_boot read the node {node_reads} times");
    let node = fake.node("pi-1");
    assert_eq!(node["spec"]["unschedulable"], false);
    let ann = &node["metadata"]["annotations"];
    assert_eq!(
        (
            ann["ferry.k3os.io/status"].as_str(),
            ann["ferry.k3os.io/version"].as_str()
        ),
        (Some("committed"), Some("1.2.0"))
    );
    assert!(ann.get("ferry.k3os.io/cordoned").is_none());
    // what kubectl shows: `get nodes -L ferry.k3os.io/version`, `describe node`
    assert_eq!(node["metadata"]["labels"]["ferry.k3os.io/version"], "1.2.0");
    assert_eq!(node["metadata"]["labels"]["ferry.k3os.io/channel"], "beta");
    let conds = node["status"]["conditions"].as_array().unwrap();
    let os = conds
        .iter()
        .find(|c| c["type"] == "OSUpdate")
        .expect("OSUpdate condition");
    assert_eq!(
        (os["status"].as_str(), os["reason"].as_str()),
        (Some("False"), Some("UpToDate"))
    );
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True"),
        "the kubelet's Ready condition was dropped: {conds:?}"
    );
    fake.with(|s| {
        assert_eq!(s.holder(0), None);
        let reasons: Vec<&str> = s
            .events
            .iter()
            .filter_map(|e| e["reason"].as_str())
            .collect();
        // the budget held the drain up for a while: said once, as it began
        assert_eq!(
            reasons,
            [
                "FerryDraining",
                "FerryRebootWaiting",
                "FerryRebooting",
                "FerryCommitted"
            ]
        );
        assert_eq!(s.evictions.len(), 2, "pi-2's pod and the skipped ones stay");
    });
}

/// `kubectl drain` semantics: a pod no controller would recreate, or one
/// with emptyDir data, is refused before anything is evicted (the node is
/// returned to service, the lock released) unless the operator allows it;
/// a pod matching a blocking selector blocks the reboot.
#[tokio::test]
async fn drain_refuses_unmanaged_and_local_data_pods_unless_allowed() {
    let fake = Fake::start().await;
    fake.add_node("pi-1");
    fake.add_pod("pi-1", "web-1", "ReplicaSet", 0, 0);
    fake.add_pod("pi-1", "debug-shell", "", 0, 0);
    fake.add_pod("pi-1", "cache-0", "StatefulSet", 0, 0);
    fake.with(|s| s.pods[2].obj["spec"]["volumes"] = json!([{"name": "scratch", "emptyDir": {}}]));
    let kube = fake.kube();
    let e = coordinate_reboot(&kube, &opts("pi-1", 1), || {
        panic!("rebooted over a refusal")
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("no controller would recreate: default/debug-shell"),
        "{e}"
    );
    assert!(e.contains("emptyDir data: default/cache-0"), "{e}");
    assert!(!e.contains("web-1"), "{e}");
    fake.with(|s| {
        assert!(
            s.evictions.is_empty(),
            "evicted before refusing: {:?}",
            s.evictions
        );
        assert_eq!(s.holder(0), None);
    });
    assert_eq!(fake.node("pi-1")["spec"]["unschedulable"], false);
    // a blocking selector: nothing happens while such a pod runs there
    let blocked = RebootOptions {
        drain: ferry::kube::drain::DrainPolicy {
            unmanaged: true,
            emptydir: true,
            blocking: vec!["app=cache-0".into()],
        },
        ..opts("pi-1", 1)
    };
    let e = refused(&kube, &blocked, "rebooted over a blocking pod").await;
    assert!(
        e.contains("blocking pods on the node: default/cache-0 (selector app=cache-0)"),
        "{e}"
    );
    // allowed: both are evicted and the node reboots
    let allowed = RebootOptions {
        drain: ferry::kube::drain::DrainPolicy {
            unmanaged: true,
            emptydir: true,
            blocking: vec!["app=absent".into()],
        },
        ..opts("pi-1", 1)
    };
    reboots(&kube, &allowed).await;
    fake.with(|s| assert_eq!(s.evictions.len(), 3, "{:?}", s.evictions));
}

#[tokio::test]
async fn a_budget_that_never_allows_eviction_times_out_and_returns_the_node() {
    let fake = Fake::start().await;
    fake.add_node("pi-1");
    fake.add_pod("pi-1", "db-0", "StatefulSet", u32::MAX, 0);
    fake.add_pod("pi-1", "web-1", "ReplicaSet", 0, 0);
    let kube = fake.kube();
    let o = RebootOptions {
        drain_timeout: Duration::from_millis(150),
        ..opts("pi-1", 1)
    };
    let start = Instant::now();
    let mut rebooted = false;
    let e = coordinate_reboot(&kube, &o, || {
        rebooted = true;
        Ok(())
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(!rebooted);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "bounded by the drain timeout"
    );
    assert!(
        e.contains("timed out") && e.contains("default/db-0") && e.contains("PodDisruptionBudget"),
        "{e}"
    );
    assert!(
        e.contains("refused by PodDisruptionBudget default/db-0-pdb (The disruption budget db-0-pdb needs 1 healthy pods"),
        "{e}"
    );
    assert!(!e.contains("web-1"), "{e}");
    // reported, not hung: one Event naming the budget however often the
    // eviction was retried, and the condition says what the node waits on
    let waiting = waiting_events(&fake);
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert!(
        waiting[0].contains("drain waiting to evict pod default/db-0: refused by PodDisruptionBudget default/db-0-pdb")
            && waiting[0].contains("(since 20"),
        "{waiting:?}"
    );
    fake.with(|s| {
        assert!(
            s.calls
                .iter()
                .filter(|(m, p)| m == "POST" && p.ends_with("db-0/eviction"))
                .count()
                > 2
        )
    });
    let node = fake.node("pi-1");
    assert_eq!(node["spec"]["unschedulable"], false);
    assert_eq!(
        node["metadata"]["annotations"]["ferry.k3os.io/status"],
        "reboot-failed"
    );
    fake.with(|s| assert_eq!(s.holder(0), None));
}

/// Two nodes race for slots; each records its "down" interval from the reboot
/// call to after_boot. Returns the intervals in reboot order.
async fn race_two_nodes(
    fake: &Fake,
    concurrency: u32,
    both_down: Option<Arc<tokio::sync::Barrier>>,
) -> Vec<(String, Instant, Instant)> {
    race_with_clocks(
        fake,
        concurrency,
        both_down,
        [SystemTime::now, SystemTime::now],
    )
    .await
}

fn an_hour_ahead() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3600)
}

fn an_hour_behind() -> SystemTime {
    SystemTime::now() - Duration::from_secs(3600)
}

async fn race_with_clocks(
    fake: &Fake,
    concurrency: u32,
    both_down: Option<Arc<tokio::sync::Barrier>>,
    walls: [fn() -> SystemTime; 2],
) -> Vec<(String, Instant, Instant)> {
    let kube = Arc::new(fake.kube());
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (node, wall) in ["pi-1", "pi-2"].into_iter().zip(walls) {
        fake.add_node(node);
        fake.add_pod(node, &format!("web-{node}"), "ReplicaSet", 1, 1);
        let (kube, log, barrier) = (kube.clone(), log.clone(), both_down.clone());
        tasks.push(tokio::spawn(async move {
            let o = RebootOptions {
                wall,
                ..opts(node, concurrency)
            };
            let mut down = None;
            coordinate_reboot(&kube, &o, || {
                down = Some(Instant::now());
                Ok(())
            })
            .await
            .unwrap();
            if let Some(b) = barrier {
                tokio::time::timeout(Duration::from_secs(5), b.wait())
                    .await
                    .expect("both nodes down at once");
            } else {
                tokio::time::sleep(Duration::from_millis(30)).await; // "rebooting"
            }
            let up = Instant::now();
            after_boot(&kube, &o, &committed()).await.unwrap();
            log.lock()
                .unwrap()
                .push((node.to_string(), down.expect("rebooted"), up));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut v = log.lock().unwrap().clone();
    v.sort_by_key(|(_, down, _)| *down);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slot_means_two_nodes_never_reboot_at_once() {
    let fake = Fake::start().await;
    let v = race_two_nodes(&fake, 1, None).await;
    assert_eq!(v.len(), 2, "both nodes rebooted eventually");
    let (first_up, second_down) = (v[0].2, v[1].1);
    assert!(second_down > first_up, "overlapping reboots: {v:?}");
    fake.with(|s| {
        assert_eq!(s.holder(0), None);
        assert!(!s.leases.contains_key("kube-system/ferry-reboot-1"));
        assert_eq!(
            s.nodes
                .values()
                .filter(|n| n["spec"]["unschedulable"] == true)
                .count(),
            0
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_slots_let_two_nodes_reboot_together() {
    let fake = Fake::start().await;
    let v = race_two_nodes(&fake, 2, Some(Arc::new(tokio::sync::Barrier::new(2)))).await;
    assert_eq!(v.len(), 2);
    assert!(
        v[1].1 < v[0].2,
        "the second went down while the first was down: {v:?}"
    );
    fake.with(|s| assert_eq!((s.holder(0), s.holder(1)), (None, None)));
}

/// Clocks an hour apart (a board without a real-time clock before NTP):
/// the two nodes race for one slot with conflicts and still never go down
/// together; and a node whose clock runs an hour ahead does not take a live
/// lease of a node that is down, whatever the renew time written in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clocks_an_hour_apart_never_share_a_slot() {
    for walls in [
        [an_hour_ahead as fn() -> SystemTime, SystemTime::now],
        [SystemTime::now, an_hour_behind],
    ] {
        let fake = Fake::start().await;
        let v = race_with_clocks(&fake, 1, None, walls).await;
        assert_eq!(v.len(), 2);
        assert!(v[1].1 > v[0].2, "overlapping reboots: {v:?}");
    }
    // pi-1 (on time) is down holding the slot; pi-2 runs an hour ahead
    let fake = Fake::start().await;
    fake.add_node("pi-1");
    fake.add_node("pi-2");
    let kube = fake.kube();
    coordinate_reboot(&kube, &opts("pi-1", 1), || Ok(()))
        .await
        .unwrap();
    let ahead = RebootOptions {
        wall: an_hour_ahead,
        lock_timeout: Duration::from_millis(300),
        ..opts("pi-2", 1)
    };
    let e = refused(&kube, &ahead, "two nodes down at once").await;
    assert!(
        e.contains("no reboot slot free") && e.contains("pi-1"),
        "{e}"
    );
    fake.with(|s| assert_eq!(s.holder(0).as_deref(), Some("pi-1")));
}

/// A Lease whose record nobody changes for a whole lease duration (its
/// holder died) is taken over, timed on the taker's own clock; one that
/// its holder keeps renewing is not.
#[tokio::test]
async fn an_expired_lease_of_a_dead_node_is_taken_over() {
    let fake = Fake::start().await;
    fake.add_node("pi-1");
    let dead = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "ferry-reboot-0", "namespace": "kube-system"},
        "spec": {"holderIdentity": "pi-dead", "leaseDurationSeconds": 1, "renewTime": "2099-01-01T00:00:00.000000Z", "leaseTransitions": 3}
    });
    fake.with(|s| s.store_lease("kube-system/ferry-reboot-0".into(), dead));
    let kube = fake.kube();
    let mut lease = None;
    let t = Instant::now();
    coordinate_reboot(&kube, &opts("pi-1", 1), || {
        lease = fake.with(|s| s.leases.get("kube-system/ferry-reboot-0").cloned());
        Ok(())
    })
    .await
    .unwrap();
    let lease = lease.expect("reboot was called");
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "taken before a lease duration passed"
    );
    assert_eq!(lease["spec"]["holderIdentity"], "pi-1");
    assert_eq!(lease["spec"]["leaseTransitions"], 4);
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 300);
}

#[tokio::test]
async fn a_live_lease_of_another_node_blocks_until_the_lock_timeout() {
    let fake = Fake::start().await;
    fake.add_node("pi-1");
    fake.add_pod("pi-1", "web-1", "ReplicaSet", 0, 0);
    let now = ferry::kube::lock::micro_time(ferry::kube::lock::since_epoch(SystemTime::now()));
    let live = json!({"metadata": {"name": "ferry-reboot-0"}, "spec": {"holderIdentity": "pi-9", "leaseDurationSeconds": 3600, "renewTime": now}});
    fake.with(|s| s.store_lease("kube-system/ferry-reboot-0".into(), live));
    let kube = fake.kube();
    let o = RebootOptions {
        lock_timeout: Duration::from_millis(100),
        ..opts("pi-1", 1)
    };
    let e = refused(&kube, &o, "must not reboot without the lock").await;
    assert!(
        e.contains("no reboot slot free") && e.contains("pi-9"),
        "{e}"
    );
    let waiting = waiting_events(&fake);
    assert_eq!(waiting.len(), 1, "one Event for many polls: {waiting:?}");
    assert!(
        waiting[0].contains("waiting for a free reboot slot") && waiting[0].contains("pi-9"),
        "{waiting:?}"
    );
    let cond = os_condition(&fake.node("pi-1"));
    assert_eq!(cond["reason"], "RebootPending", "{cond}");
    assert_eq!(cond["message"].as_str(), Some(waiting[0].as_str()));
    // the same wait in the next round: still the same since, no new Event
    let e2 = refused(&kube, &o, "must not reboot without the lock").await;
    assert!(e2.contains("pi-9"), "{e2}");
    assert_eq!(waiting_events(&fake).len(), 1);
    fake.with(|s| {
        assert!(s.evictions.is_empty());
        assert_eq!(
            s.nodes["pi-1"]["spec"].get("unschedulable"),
            None,
            "never cordoned"
        );
        assert_eq!(s.holder(0).as_deref(), Some("pi-9"));
    });
}

#[tokio::test]
async fn a_node_that_does_not_come_back_ready_keeps_its_slot() {
    let fake = Fake::start().await;
    fake.add_node("pi-1");
    let kube = fake.kube();
    let o = RebootOptions {
        ready_timeout: Duration::from_millis(50),
        ..opts("pi-1", 1)
    };
    coordinate_reboot(&kube, &o, || Ok(())).await.unwrap();
    fake.with(|s| {
        s.nodes.get_mut("pi-1").unwrap()["status"]["conditions"][0]["status"] = json!("False")
    });
    let e = after_boot(
        &kube,
        &o,
        &BootOutcome::RolledBack {
            version: "1.1.0".into(),
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("not Ready"), "{e}");
    fake.with(|s| {
        assert_eq!(s.holder(0).as_deref(), Some("pi-1"));
        assert_eq!(s.nodes["pi-1"]["spec"]["unschedulable"], true);
    });
    // Ready again: the retry (after_boot is idempotent) finishes the job.
    fake.with(|s| {
        s.nodes.get_mut("pi-1").unwrap()["status"]["conditions"][0]["status"] = json!("True")
    });
    after_boot(
        &kube,
        &o,
        &BootOutcome::RolledBack {
            version: "1.1.0".into(),
        },
    )
    .await
    .unwrap();
    let node = fake.node("pi-1");
    assert_eq!(
        node["metadata"]["annotations"]["ferry.k3os.io/status"],
        "rolled-back"
    );
    fake.with(|s| assert_eq!(s.holder(0), None));
}

// ---------------------------------------------------------------- the daemon with the cluster

fn cluster_device(fake: &Fake, node: &str) -> (common::Device, common::Feed) {
    let dev = common::Device::new();
    let f = common::feed(&dev);
    let b = dev.bundle("1.1.0", 2, "v2.ferry", &[]);
    common::publish(&dev, &f, &b, &[]);
    std::fs::write(dev.path("k3s.yaml"), fake.k3s_yaml(true)).unwrap();
    let cfg = std::fs::read_to_string(&dev.config).unwrap();
    std::fs::write(
        &dev.config,
        format!(
            "{cfg}[cluster]\nkubeconfig = \"{}\"\nnode = \"{node}\"\nlease_seconds = 60\ndrain_timeout_s = 5\nlock_timeout_s = 2\nready_timeout_s = 5\n",
            dev.path("k3s.yaml").display()
        ),
    )
    .unwrap();
    (dev, f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reboots_holding_the_lock_drained_then_gives_both_back() {
    let fake = Fake::start().await;
    fake.add_node("edge-1");
    fake.add_pod("edge-1", "web-1", "ReplicaSet", 1, 0);
    fake.add_pod("edge-1", "agent-1", "DaemonSet", 0, 0);
    let (dev, feed) = tokio::task::block_in_place(|| cluster_device(&fake, "edge-1"));
    let o = tokio::task::block_in_place(|| dev.run(&["daemon", "--once"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(dev.path("state/reboot-requested").exists(), "no reboot");
    fake.with(|s| {
        assert_eq!(
            s.holder(0).as_deref(),
            Some("edge-1"),
            "rebooted without the lock"
        );
        assert_eq!(
            s.nodes["edge-1"]["spec"]["unschedulable"], true,
            "rebooted uncordoned"
        );
        assert_eq!(
            s.evictions,
            vec!["default/web-1".to_string()],
            "drain: only the workload pod"
        );
        assert!(
            s.nodes["edge-1"]["metadata"]["annotations"]["ferry.k3os.io/reboot-required"]
                .is_string(),
            "a pending reboot is announced"
        );
    });
    // the trial boot passes health: uncordoned, lock released, annotated
    dev.boot("b", "boot-2");
    std::fs::write(dev.path("healthy"), "").unwrap();
    std::fs::remove_file(dev.path("state/reboot-requested")).unwrap();
    let o = tokio::task::block_in_place(|| dev.run(&["daemon", "--once"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        tokio::task::block_in_place(|| dev.status())["last"]["result"],
        "committed"
    );
    fake.with(|s| {
        assert_eq!(s.holder(0), None, "lock not released");
        assert_ne!(
            s.nodes["edge-1"]["spec"]["unschedulable"], true,
            "still cordoned"
        );
        assert_eq!(
            s.nodes["edge-1"]["metadata"]["annotations"]["ferry.k3os.io/version"],
            "1.1.0"
        );
        assert_eq!(
            s.nodes["edge-1"]["metadata"]["annotations"].get("ferry.k3os.io/reboot-required"),
            None,
            "the reboot is done"
        );
        // an Event for every transition, in order, as `kubectl get events` lists them
        let reasons: Vec<&str> = s
            .events
            .iter()
            .filter_map(|e| e["reason"].as_str())
            .collect();
        assert_eq!(
            reasons,
            [
                "FerryInstalled",
                "FerryDraining",
                "FerryRebootWaiting",
                "FerryRebooting",
                "FerryTrial",
                "FerryCommitted"
            ],
            "{:#?}",
            s.events
        );
        assert!(s.events[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("installed 1.1.0 into slot b")));
    });
    // the feed server owns a runtime: drop it where blocking is allowed
    tokio::task::block_in_place(move || drop(feed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_does_not_reboot_while_another_node_holds_the_lock() {
    let fake = Fake::start().await;
    fake.add_node("edge-1");
    fake.add_node("edge-2");
    let now = ferry::kube::lock::micro_time(ferry::kube::lock::since_epoch(SystemTime::now()));
    let busy = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "ferry-reboot-0", "namespace": "kube-system"},
        "spec": {"holderIdentity": "edge-2", "leaseDurationSeconds": 600, "renewTime": now}
    });
    fake.with(|s| s.store_lease("kube-system/ferry-reboot-0".into(), busy));
    let (dev, feed) = tokio::task::block_in_place(|| cluster_device(&fake, "edge-1"));
    let o = tokio::task::block_in_place(|| dev.run(&["daemon", "--once"]));
    assert_eq!(o.code, 62, "{}", o.stderr);
    assert!(o.stderr.contains("edge-2"), "{}", o.stderr);
    assert!(
        !dev.path("state/reboot-requested").exists(),
        "rebooted without the lock"
    );
    // installed and waiting: the next pass reboots once the lock is free
    assert_eq!(
        tokio::task::block_in_place(|| dev.status())["state"],
        "installed"
    );
    fake.with(|s| assert_ne!(s.nodes["edge-1"]["spec"]["unschedulable"], true));
    tokio::task::block_in_place(move || drop(feed));
}

/// Push from the cluster: `kubectl label node edge-1 ferry.k3os.io/channel=beta`
/// moves the node to the beta channel within a poll (still only what beta's
/// signed feed lists); a label that is not a channel name is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_label_moves_the_node_to_another_channel() {
    let fake = Fake::start().await;
    fake.add_node("edge-1");
    let (dev, feed) = tokio::task::block_in_place(|| cluster_device(&fake, "edge-1"));
    let beta = dev.bundle("1.2.0", 5, "beta.ferry", &[]);
    let o = common::ferry(&[
        "feed",
        "publish",
        "--feed",
        common::s(feed.root.path()),
        "--channel",
        "beta",
        "--bundle",
        common::s(&beta),
        "--key",
        common::s(&dev.path("dev.key")),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    // not a channel name: ignored, the configured channel (stable) is polled
    fake.with(|s| {
        s.nodes.get_mut("edge-1").unwrap()["metadata"]["labels"] =
            json!({"ferry.k3os.io/channel": "../beta"})
    });
    let cfg = std::fs::read_to_string(&dev.config).unwrap();
    // no reboots here: the test looks at what is installed
    std::fs::write(
        &dev.config,
        cfg.replace("[daemon]\n", "[daemon]\nauto_reboot = false\n"),
    )
    .unwrap();
    let o = tokio::task::block_in_place(|| dev.run(&["daemon", "--once"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let st = tokio::task::block_in_place(|| dev.status());
    assert_eq!(st["slots"]["b"]["version"], "1.1.0", "{st}");
    // the operator's label: beta's 1.2.0 within the next poll
    tokio::task::block_in_place(|| {
        assert_eq!(dev.run(&["rollback"]).code, 0);
    });
    fake.with(|s| {
        s.nodes.get_mut("edge-1").unwrap()["metadata"]["labels"] =
            json!({"ferry.k3os.io/channel": "beta"})
    });
    let o = tokio::task::block_in_place(|| dev.run(&["daemon", "--once"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let st = tokio::task::block_in_place(|| dev.status());
    assert_eq!(st["slots"]["b"]["version"], "1.2.0", "{st}\n{}", o.stderr);
    assert!(tokio::task::block_in_place(
        || dev.holds("rootfs_b", "rootfs-5")
    ));
    fake.with(|s| {
        let n = &s.nodes["edge-1"];
        assert_eq!(n["metadata"]["labels"]["ferry.k3os.io/channel"], "beta");
        let os = os_condition(n);
        assert_eq!(os["reason"], "RebootPending", "{os}");
    });
    tokio::task::block_in_place(move || drop(feed));
}

/// `ferry fleet status`: one row per node, from the API (labels, the
/// OSUpdate condition, the status annotation, Ready, the lease holders).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_status_shows_versions_phases_and_the_lock() {
    let fake = Fake::start().await;
    fake.add_node("pi-1");
    fake.add_node("pi-2");
    let kube = fake.kube();
    let o = RebootOptions {
        channel: Some("stable".into()),
        ..opts("pi-2", 1)
    };
    after_boot(&kube, &o, &committed()).await.unwrap();
    coordinate_reboot(&kube, &opts("pi-1", 1), || Ok(()))
        .await
        .unwrap();
    let cfg = fake.dir.path().join("k3s.yaml");
    std::fs::write(&cfg, fake.k3s_yaml(true)).unwrap();
    let o = tokio::task::block_in_place(|| {
        common::ferry(&["fleet", "status", "--kubeconfig", common::s(&cfg), "--json"])
    });
    assert_eq!(o.code, 0, "{}", o.stderr);
    let rows: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(rows[0]["node"], "pi-1");
    assert_eq!(rows[0]["phase"], "RebootPending");
    assert_eq!(rows[0]["lease"], "ferry-reboot-0");
    assert_eq!(rows[0]["cordoned"], true);
    assert_eq!(rows[1]["node"], "pi-2");
    assert_eq!(rows[1]["version"], "1.2.0");
    assert_eq!(rows[1]["channel"], "stable");
    assert_eq!(rows[1]["phase"], "UpToDate");
    assert_eq!(rows[1]["last"], "committed");
    assert_eq!(rows[1]["lease"], Value::Null);
    let o = tokio::task::block_in_place(|| {
        common::ferry(&["fleet", "status", "--kubeconfig", common::s(&cfg)])
    });
    assert_eq!(o.code, 0, "{}", o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert!(lines[0].starts_with("NODE"), "{}", o.stdout);
    assert!(
        lines[1].starts_with("pi-1")
            && lines[1].contains("RebootPending")
            && lines[1].contains("ferry-reboot-0"),
        "{}",
        o.stdout
    );
}

/// The RBAC shipped for ferry's host agent (`board/kubernetes/rbac.yaml`)
/// grants every call the agent makes: a whole update cycle (lock, cordon,
/// drain, reboot, Ready, uncordon, labels, condition, events, release) runs
/// against the stand-in API, and each recorded request, mapped to its API
/// group, resource and verb as the API server authorises it, must be in the
/// ClusterRole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_rbac_grants_every_call_ferry_makes() {
    let fake = Fake::start().await;
    fake.add_node("edge-1");
    fake.add_pod("edge-1", "web-1", "ReplicaSet", 1, 0);
    let (dev, feed) = tokio::task::block_in_place(|| cluster_device(&fake, "edge-1"));
    let o = tokio::task::block_in_place(|| dev.run(&["daemon", "--once"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    dev.boot("b", "boot-2");
    std::fs::write(dev.path("healthy"), "").unwrap();
    std::fs::remove_file(dev.path("state/reboot-requested")).unwrap();
    let o = tokio::task::block_in_place(|| dev.run(&["daemon", "--once"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    tokio::task::block_in_place(move || drop(feed));
    // the ClusterRole, as (group, resource, verb)
    let text = std::fs::read_to_string(common::repo().join("board/kubernetes/rbac.yaml")).unwrap();
    let mut granted = std::collections::BTreeSet::new();
    for doc in text.split("\n---\n") {
        let d = ferry::yaml::parse(doc).unwrap();
        if d["kind"] != "ClusterRole" {
            continue;
        }
        for r in d["rules"].as_array().unwrap() {
            for g in r["apiGroups"].as_array().unwrap() {
                for res in r["resources"].as_array().unwrap() {
                    for v in r["verbs"].as_array().unwrap() {
                        granted.insert((
                            g.as_str().unwrap().to_string(),
                            res.as_str().unwrap().to_string(),
                            v.as_str().unwrap().to_string(),
                        ));
                    }
                }
            }
        }
    }
    let calls = fake.with(|s| s.calls.clone());
    assert!(calls.len() > 10, "{calls:?}");
    let mut needed = std::collections::BTreeSet::new();
    for (method, path) in &calls {
        let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (group, rest) = match seg.as_slice() {
            ["api", "v1", rest @ ..] => ("", rest),
            ["apis", g, _v, rest @ ..] => (*g, rest),
            _ => panic!("unexpected path {path}"),
        };
        let rest = match rest {
            ["namespaces", _, rest @ ..] => rest,
            r => r,
        };
        let (resource, named) = match rest {
            [res] => (res.to_string(), false),
            [res, _name] => (res.to_string(), true),
            [res, _name, sub] => (format!("{res}/{sub}"), true),
            _ => panic!("unexpected path {path}"),
        };
        let verb = match (method.as_str(), named) {
            ("GET", true) => "get",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", _) => "delete",
            (m, _) => panic!("unexpected method {m}"),
        };
        needed.insert((group.to_string(), resource, verb.to_string()));
    }
    let missing: Vec<_> = needed.difference(&granted).collect();
    assert!(missing.is_empty(), "not granted by rbac.yaml: {missing:?}");
    for must in [
        ("", "nodes/status", "patch"),
        ("", "pods/eviction", "create"),
        ("coordination.k8s.io", "leases", "update"),
    ] {
        assert!(
            needed.contains(&(must.0.to_string(), must.1.to_string(), must.2.to_string())),
            "the cycle did not exercise {must:?}"
        );
    }
}

/// A Prometheus stand-in: `GET /api/v1/alerts` answers the JSON in `alerts`
/// (as Prometheus does: `{"status": "success", "data": {"alerts": [...]}}`).
async fn prometheus(alerts: Arc<Mutex<Value>>) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let alerts = alerts.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = c.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let (code, body) = if head.starts_with("GET /api/v1/alerts ") {
                    ("200 OK", alerts.lock().unwrap().to_string())
                } else {
                    ("404 Not Found", "{}".to_string())
                };
                let r = format!("HTTP/1.1 {code}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = c.write_all(r.as_bytes()).await;
            });
        }
    });
    port
}

/// kured's blocking alerts: a firing alert (not ignored) defers the reboot
/// before a slot is taken, and so does a Prometheus that cannot be asked;
/// once only ignored alerts fire, the reboot goes ahead.
#[tokio::test]
async fn firing_alerts_defer_the_reboot_before_a_slot_is_taken() {
    let fake = Fake::start().await;
    fake.add_node("pi-1");
    let alert = |name: &str, state: &str| json!({"labels": {"alertname": name, "severity": "critical"}, "state": state});
    let alerts = Arc::new(Mutex::new(json!({"status": "success", "data": {"alerts": [
        alert("Watchdog", "firing"), alert("EtcdNoLeader", "firing"), alert("KubeJobFailed", "pending")]}})));
    let port = prometheus(alerts.clone()).await;
    let kube = fake.kube();
    let gate = ferry::kube::alerts::AlertGate {
        url: format!("http://127.0.0.1:{port}"),
        ignore: vec!["Watchdog".into()],
        ca: vec![],
    };
    let o = RebootOptions {
        alerts: Some(gate.clone()),
        ..opts("pi-1", 1)
    };
    let e = refused(&kube, &o, "must not reboot while an alert fires").await;
    assert!(e.contains("Prometheus alerts firing: EtcdNoLeader"), "{e}");
    assert!(
        !e.contains("Watchdog") && !e.contains("KubeJobFailed"),
        "{e}"
    );
    fake.with(|s| {
        assert_eq!(s.holder(0), None, "no slot taken while blocked");
        assert!(s.leases.is_empty());
        assert_ne!(s.nodes["pi-1"]["spec"]["unschedulable"], true);
    });
    let waiting = waiting_events(&fake);
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert!(waiting[0].contains("EtcdNoLeader"), "{waiting:?}");
    // a Prometheus that cannot be asked does not let the reboot through
    let down = RebootOptions {
        alerts: Some(ferry::kube::alerts::AlertGate {
            url: "http://127.0.0.1:1".into(),
            ..gate
        }),
        ..opts("pi-1", 1)
    };
    let e = refused(&kube, &down, "must not reboot blind").await;
    assert!(
        e.contains("cannot tell which alerts fire") && e.contains("127.0.0.1:1"),
        "{e}"
    );
    // the alert resolves: only the ignored heartbeat fires, the reboot happens
    *alerts.lock().unwrap() =
        json!({"status": "success", "data": {"alerts": [alert("Watchdog", "firing")]}});
    reboots(&kube, &o).await;
    fake.with(|s| assert_eq!(s.holder(0).as_deref(), Some("pi-1")));
}

/// `kubectl label node edge-1 ferry.k3os.io/target-version=1.1.0` pins the
/// node to that release although the feed has a newer one; a pin the feed
/// does not list installs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_version_label_pins_the_release_the_feed_lists() {
    let fake = Fake::start().await;
    fake.add_node("edge-1");
    let (dev, feed) = tokio::task::block_in_place(|| cluster_device(&fake, "edge-1"));
    let newer = dev.bundle("1.2.0", 5, "v3.ferry", &[]);
    tokio::task::block_in_place(|| common::publish(&dev, &feed, &newer, &[]));
    let cfg = std::fs::read_to_string(&dev.config).unwrap();
    std::fs::write(
        &dev.config,
        cfg.replace("[daemon]\n", "[daemon]\nauto_reboot = false\n"),
    )
    .unwrap();
    let label = |v: &str| {
        fake.with(|s| {
            s.nodes.get_mut("edge-1").unwrap()["metadata"]["labels"] =
                json!({"ferry.k3os.io/target-version": v})
        })
    };
    label("1.9.0");
    let o = tokio::task::block_in_place(|| dev.run(&["daemon", "--once"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let st = tokio::task::block_in_place(|| dev.status());
    assert_eq!(st["state"], "idle", "a pin the feed does not list: {st}");
    assert_eq!(st["slots"]["b"]["version"], Value::Null, "{st}");
    label("1.1.0");
    let o = tokio::task::block_in_place(|| dev.run(&["daemon", "--once"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let st = tokio::task::block_in_place(|| dev.status());
    assert_eq!(st["slots"]["b"]["version"], "1.1.0", "{st}");
    assert!(tokio::task::block_in_place(
        || dev.holds("rootfs_b", "rootfs-2")
    ));
    // waiting for its reboot: the node says so in an annotation (kured's
    // "reboot required")
    let n = fake.node("edge-1");
    assert!(
        n["metadata"]["annotations"]["ferry.k3os.io/reboot-required"].is_string(),
        "{n}"
    );
    tokio::task::block_in_place(move || drop(feed));
}
