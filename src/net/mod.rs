//! Network edges: a small HTTP/1.1 client over TCP or TLS (hyper + rustls)
//! with configurable trust roots and an optional client certificate, and
//! the bridge from an async response body to the synchronous bundle pipeline.

pub(crate) mod http;
pub(crate) mod proxy;
pub mod url;
