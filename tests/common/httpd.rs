//! A loopback HTTPS file server for the daemon tests: a test CA and server
//! certificate made with rcgen, Range requests, byte accounting, and faults
//! on demand (drop the connection after N bytes, stall, serve other bytes).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Debug)]
pub enum Fault {
    /// Close the connection after this many body bytes.
    DropAfter(u64),
    /// Send this many body bytes, then go silent.
    StallAfter(u64),
    /// Serve these bytes instead of the file.
    Replace(Vec<u8>),
    /// One body byte every 100 ms (slow retrieval: never idle, never done).
    Trickle,
    /// Answer a range request with 200 and the whole body.
    IgnoreRange,
    /// Answer 302 with this `Location`.
    Redirect(String),
    /// Answer 503 with `Retry-After` in seconds.
    Busy(u64),
}

#[derive(Default)]
pub struct State {
    pub served: AtomicU64,
    /// (path, range start) of every request.
    pub requests: Mutex<Vec<(String, u64)>>,
    /// Faults by path, consumed one per request.
    pub faults: Mutex<HashMap<String, Vec<Fault>>>,
    /// Path overrides: serve this file for that path.
    pub overrides: Mutex<HashMap<String, PathBuf>>,
}

pub struct Server {
    pub port: u16,
    pub ca_pem: String,
    pub state: Arc<State>,
    _rt: tokio::runtime::Runtime,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!(
            "https://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }
    pub fn fault(&self, path: &str, f: Fault) {
        self.state
            .faults
            .lock()
            .unwrap()
            .entry(format!("/{}", path.trim_start_matches('/')))
            .or_default()
            .push(f);
    }
    pub fn served(&self) -> u64 {
        self.state.served.load(Ordering::SeqCst)
    }
    pub fn requests(&self) -> Vec<(String, u64)> {
        self.state.requests.lock().unwrap().clone()
    }
}

/// Serve `root` over HTTPS (or plain HTTP) on 127.0.0.1.
pub fn serve(root: PathBuf, tls: bool) -> Server {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ferry test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let state = Arc::new(State::default());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let st = state.clone();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (st, root, acceptor) = (st.clone(), root.clone(), acceptor.clone());
            tokio::spawn(async move {
                if tls {
                    if let Ok(s) = acceptor.accept(tcp).await {
                        let _ = handle(s, &root, &st).await;
                    }
                } else {
                    let _ = handle(tcp, &root, &st).await;
                }
            });
        }
    });
    Server {
        port,
        ca_pem: ca.pem(),
        state,
        _rt: rt,
    }
}

async fn handle<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    root: &std::path::Path,
    st: &State,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await? == 0 || head.len() > 16384 {
            return Ok(());
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    let from: u64 = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("range: bytes=")
                .map(|r| r.trim_end_matches('-').trim().to_string())
        })
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    st.requests.lock().unwrap().push((path.clone(), from));
    let fault = st.faults.lock().unwrap().get_mut(&path).and_then(|v| {
        if v.is_empty() {
            None
        } else {
            Some(v.remove(0))
        }
    });
    if let Some(Fault::Busy(after)) = &fault {
        let head = format!("HTTP/1.1 503 Service Unavailable\r\nretry-after: {after}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        s.write_all(head.as_bytes()).await?;
        return s.shutdown().await;
    }
    if let Some(Fault::Redirect(to)) = &fault {
        let head = format!("HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        s.write_all(head.as_bytes()).await?;
        return s.shutdown().await;
    }
    let file = st
        .overrides
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or_else(|| root.join(path.trim_start_matches('/')));
    let Ok(mut data) = std::fs::read(&file) else {
        s.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await?;
        return s.shutdown().await;
    };
    if let Some(Fault::Replace(other)) = &fault {
        data = other.clone();
    }
    let total = data.len() as u64;
    let from = if let Some(Fault::IgnoreRange) = fault {
        0
    } else {
        from.min(total)
    };
    let body = &data[from as usize..];
    let head = if from > 0 {
        format!("HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\ncontent-range: bytes {from}-{}/{total}\r\nconnection: close\r\n\r\n", body.len(), total.saturating_sub(1))
    } else {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
    };
    s.write_all(head.as_bytes()).await?;
    let limit = match fault {
        Some(Fault::DropAfter(n)) | Some(Fault::StallAfter(n)) => n.min(body.len() as u64) as usize,
        _ => body.len(),
    };
    if let Some(Fault::Trickle) = fault {
        // bounded: at most 60 s of trickling, then the connection closes
        for byte in body.iter().take(600) {
            if s.write_all(std::slice::from_ref(byte)).await.is_err() || s.flush().await.is_err() {
                return Ok(());
            }
            st.served.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        return s.shutdown().await;
    }
    for piece in body[..limit].chunks(64 << 10) {
        s.write_all(piece).await?;
        st.served.fetch_add(piece.len() as u64, Ordering::SeqCst);
    }
    s.flush().await?;
    if let Some(Fault::StallAfter(_)) = fault {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    }
    s.shutdown().await
}
