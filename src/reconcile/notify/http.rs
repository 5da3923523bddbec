//! Sending a [`Request`] (http or https, rustls with the system's roots as kube uses
//! them), each one bounded in time. Errors name the host and the cause, never the token:
//! the credential travels in a header the error text does not hold, and any answer that
//! echoes it is redacted before it is returned.

use super::providers::Request;
use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as Legacy;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::time::Duration;

/// How long one request may take, connection to last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read (a list of 100 statuses is tens of kilobytes).
const MAX_ANSWER: usize = 4 << 20;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// One client for every request of a reconciler (connections are kept and reused).
#[derive(Clone)]
pub struct Client {
    inner: Legacy<Connector, Full<Bytes>>,
}

impl Client {
    pub fn new() -> Result<Client> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .context("reading the system's TLS root certificates")?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Client {
            inner: Legacy::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Send `request`; the answer's JSON (`null` for an empty body) on a 2xx, else an
    /// error with the status and the first line of the answer.
    pub async fn send(&self, request: &Request) -> Result<Value> {
        let host = host_of(&request.url);
        let mut builder = http::Request::builder()
            .method(request.method)
            .uri(&request.url);
        for (name, value) in &request.headers {
            builder = builder.header(*name, value);
        }
        if let Some((name, value)) = &request.auth {
            let mut value = http::HeaderValue::from_str(value)
                .map_err(|_| anyhow::anyhow!("the token for {host} is not a valid header value"))?;
            value.set_sensitive(true);
            builder = builder.header(*name, value);
        }
        let body = Full::new(Bytes::from(request.body.clone().unwrap_or_default()));
        let http_request = builder
            .body(body)
            .with_context(|| format!("building a request to {host}"))?;
        let exchange = async {
            let response = self
                .inner
                .request(http_request)
                .await
                .map_err(|e| anyhow::anyhow!("{}", cause(&e)))?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
                .to_bytes();
            Ok::<_, anyhow::Error>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "{} {host}: no answer within {REQUEST_TIMEOUT:?}",
                    request.method
                )
            })?
            .with_context(|| format!("{} {host}", request.method))?;
        let text = String::from_utf8_lossy(&bytes);
        let text = match &request.auth {
            Some((_, secret)) => redact(&text, secret),
            None => text.into_owned(),
        };
        if !status.is_success() {
            let first = text.lines().next().unwrap_or_default();
            let first: String = first.chars().take(200).collect();
            bail!("{} {host}: {status}: {first}", request.method);
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

/// `scheme://host:port` of a URL: what errors name (never the path's query or a user).
fn host_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    format!("{scheme}://{authority}")
}

/// The innermost cause of a client error, in words.
fn cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        message = inner.to_string();
        source = inner.source();
    }
    message
}

/// `text` without `secret` and without the bare token inside it (`token X`, `Bearer X`).
fn redact(text: &str, secret: &str) -> String {
    let mut out = text.to_string();
    for part in std::iter::once(secret).chain(secret.rsplit(' ').next()) {
        if part.len() >= 4 {
            out = out.replace(part, "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_host_and_hide_the_token() {
        assert_eq!(
            host_of("https://u:p@git.example.com:3000/api/v1/x?y"),
            "https://git.example.com:3000"
        );
        assert_eq!(
            redact("bad token abc123 here", "token abc123"),
            "bad *** here"
        );
        assert_eq!(redact("Bearer ghp_secret", "Bearer ghp_secret"), "***");
    }

    #[tokio::test]
    async fn a_refused_connection_is_one_line() {
        let client = Client::new().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let request = Request {
            method: "GET",
            url: format!("http://127.0.0.1:{port}/api/v1/x"),
            headers: vec![],
            auth: Some(("authorization", "token sup3rsecret".into())),
            body: None,
        };
        let err = format!("{:#}", client.send(&request).await.unwrap_err());
        assert!(
            err.contains(&format!("GET http://127.0.0.1:{port}")),
            "{err}"
        );
        assert!(!err.contains("sup3rsecret"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
