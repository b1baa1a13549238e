//! A minimal Kubernetes API client over [`crate::net::http`]: JSON in, JSON
//! out, bounded response sizes, bearer token or client certificate. It knows
//! no resource types and makes no policy decisions; errors name the method,
//! API path and status. It never logs tokens.

use serde_json::Value;

use super::kubeconfig::KubeConfig;
use crate::error::Error;
use crate::net::http::Client;
use crate::net::url::Url;

/// Default cap on a response body; a pod list of a busy node fits easily.
pub(crate) const DEFAULT_MAX_BODY: usize = 4 << 20;

/// A status and parsed body of one API call (`Value::Null` for an empty or non-JSON body).
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub(crate) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The API's `Status.message`, if the body is one.
    pub(crate) fn message(&self) -> &str {
        self.body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

pub struct Kube {
    http: Client,
    server: Url,
    token: Option<String>,
    token_file: Option<std::path::PathBuf>,
    pub max_body: usize,
}

impl Kube {
    pub fn new(cfg: &KubeConfig) -> Result<Kube, Error> {
        let http = Client::new(&cfg.tls).map_err(|e| Error::Net {
            what: format!("API server {}", cfg.server.redacted()),
            detail: e.to_string(),
        })?;
        Ok(Kube {
            http,
            server: cfg.server.clone(),
            token: cfg.token.clone(),
            token_file: cfg.token_file.clone(),
            max_body: DEFAULT_MAX_BODY,
        })
    }

    /// One request; any HTTP status is a `Reply`, only transport failures are errors.
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, Error> {
        let ct = if method == "PATCH" {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        self.call_as(method, path, body, ct).await
    }

    /// [`call`](Self::call) with the body's content type given.
    pub(crate) async fn call_as(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        content_type: &str,
    ) -> Result<Reply, Error> {
        let net = |detail: String| Error::Net {
            what: format!("{method} {path}"),
            detail,
        };
        let mut url = self.server.clone();
        url.path = format!("{}{}", self.server.path.trim_end_matches('/'), path);
        let mut headers = vec![("accept", "application/json".to_string())];
        let token = match &self.token_file {
            // Re-read each time: the kubelet rotates projected service-account tokens.
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| Error::io("read token", p, e))?
                    .trim()
                    .to_string(),
            ),
            None => self.token.clone(),
        };
        if let Some(t) = token {
            headers.push(("authorization", format!("Bearer {t}")));
        }
        let bytes = match body {
            Some(b) => {
                headers.push(("content-type", content_type.to_string()));
                serde_json::to_vec(b).map_err(|e| net(e.to_string()))?
            }
            None => Vec::new(),
        };
        let resp = self
            .http
            .request(method, &url, &headers, bytes)
            .await
            .map_err(|e| net(e.to_string()))?;
        let status = resp.status;
        let raw = resp
            .bytes(self.max_body)
            .await
            .map_err(|e| net(format!("status {status}: {e}")))?;
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Ok(Reply { status, body })
    }

    /// A call that must succeed (2xx); anything else is an [`Error::Cluster`].
    pub(crate) async fn expect(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let r = self.call(method, path, body).await?;
        if r.ok() {
            Ok(r.body)
        } else {
            Err(refused(method, path, &r))
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, Error> {
        self.expect("GET", path, None).await
    }

    /// A JSON merge patch (RFC 7386): `null` deletes a field.
    pub(crate) async fn patch(&self, path: &str, body: &Value) -> Result<Value, Error> {
        self.expect("PATCH", path, Some(body)).await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<Value, Error> {
        self.expect("POST", path, Some(body)).await
    }
}

/// The error for an API call answered with a status other than the expected ones.
pub(crate) fn refused(method: &str, path: &str, r: &Reply) -> Error {
    let mut d = format!("{method} {path}: HTTP {}", r.status);
    if let Some(reason) = r.body.get("reason").and_then(Value::as_str) {
        d = format!("{d} {reason}");
    }
    if !r.message().is_empty() {
        d = format!("{d}: {}", r.message());
    }
    Error::Cluster(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_path_status_and_message() {
        let r = Reply {
            status: 403,
            body: serde_json::json!({"kind": "Status", "reason": "Forbidden", "message": "nodes \"a\" is forbidden"}),
        };
        let e = refused("PATCH", "/api/v1/nodes/a", &r).to_string();
        assert_eq!(
            e,
            "cluster: PATCH /api/v1/nodes/a: HTTP 403 Forbidden: nodes \"a\" is forbidden"
        );
        let bare = refused(
            "GET",
            "/x",
            &Reply {
                status: 502,
                body: Value::Null,
            },
        )
        .to_string();
        assert_eq!(bare, "cluster: GET /x: HTTP 502");
    }
}
