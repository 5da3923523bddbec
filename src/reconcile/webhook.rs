//! Push webhooks from GitHub and GitLab, verified with the shared secret before anything
//! else is read: GitHub signs the body (`X-Hub-Signature-256`, HMAC-SHA256), GitLab sends
//! the secret itself (`X-Gitlab-Token`). Both comparisons are constant-time.

use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// What a verified webhook asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    /// A push to `reference` (`refs/heads/main`), new tip `after` when the payload says.
    Push {
        reference: Option<String>,
        after: Option<String>,
    },
    /// GitHub's hello when a hook is set up.
    Ping,
    /// Another event (issues, merge requests, …): nothing to do.
    Other(String),
}

/// Whether the request carries proof of the shared secret.
pub fn verify(headers: &HeaderMap, body: &[u8], secret: &[u8]) -> bool {
    if secret.is_empty() {
        return false;
    }
    if let Some(signature) = header(headers, "x-hub-signature-256") {
        let Some(hex) = signature.strip_prefix("sha256=") else {
            return false;
        };
        let Some(expected) = decode_hex(hex) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
            return false;
        };
        mac.update(body);
        // verify_slice compares in constant time.
        return mac.verify_slice(&expected).is_ok();
    }
    if let Some(token) = header(headers, "x-gitlab-token") {
        return bool::from(token.as_bytes().ct_eq(secret));
    }
    false
}

/// The event of a verified request.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Hook {
    let event = header(headers, "x-github-event")
        .or_else(|| header(headers, "x-gitlab-event"))
        .unwrap_or_default()
        .to_string();
    match event.as_str() {
        "ping" => Hook::Ping,
        "push" | "Push Hook" | "Tag Push Hook" => {
            let payload: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let text = |key: &str| payload.get(key).and_then(Value::as_str).map(str::to_string);
            Hook::Push {
                reference: text("ref"),
                after: text("after").or_else(|| text("checkout_sha")),
            }
        }
        _ => Hook::Other(event),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `sha256=<hex>` of `body` under `secret`: what GitHub sends (for tests and tools).
pub fn github_signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn github_signatures() {
        let body = br#"{"ref":"refs/heads/main","after":"abc"}"#;
        let good = github_signature(b"s3cret", body);
        // The example from GitHub's documentation.
        assert_eq!(
            github_signature(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        let h = headers(&[("x-hub-signature-256", &good), ("x-github-event", "push")]);
        assert!(verify(&h, body, b"s3cret"));
        assert!(!verify(&h, body, b"other"));
        assert!(!verify(&h, b"{}", b"s3cret"), "a changed body fails");
        assert!(
            !verify(&h, body, b""),
            "no secret configured: nothing verifies"
        );
        assert!(!verify(
            &headers(&[("x-hub-signature-256", "sha256=zz")]),
            body,
            b"s3cret"
        ));
        assert!(!verify(&headers(&[]), body, b"s3cret"));
        assert_eq!(
            parse(&h, body),
            Hook::Push {
                reference: Some("refs/heads/main".into()),
                after: Some("abc".into())
            }
        );
    }

    #[test]
    fn gitlab_tokens() {
        let body = br#"{"ref":"refs/tags/v1","checkout_sha":"def"}"#;
        let h = headers(&[
            ("x-gitlab-token", "s3cret"),
            ("x-gitlab-event", "Tag Push Hook"),
        ]);
        assert!(verify(&h, body, b"s3cret"));
        assert!(!verify(&h, body, b"s3cret2"));
        assert_eq!(
            parse(&h, body),
            Hook::Push {
                reference: Some("refs/tags/v1".into()),
                after: Some("def".into())
            }
        );
        let h = headers(&[
            ("x-gitlab-token", "s3cret"),
            ("x-gitlab-event", "Issue Hook"),
        ]);
        assert_eq!(parse(&h, body), Hook::Other("Issue Hook".into()));
    }
}
