//! Push webhooks from Gitea/Forgejo, GitHub and GitLab, verified with the shared secret
//! before anything else is read: Gitea signs the body (`X-Gitea-Signature`, the bare hex
//! HMAC-SHA256; Forgejo and Gogs send the same as `X-Gogs-Signature`), GitHub too
//! (`X-Hub-Signature-256`, `sha256=<hex>`), GitLab sends the secret itself
//! (`X-Gitlab-Token`). Every comparison is constant-time. A request with Gitea's header is
//! judged by it alone (Gitea also sends GitHub's headers, with the same signature).
//!
//! The server never reads a body without a reason to: a request with no signature or
//! token, or a wrong GitLab token, is refused on its headers ([`proof`]); a GitHub body is
//! hashed as it streams in ([`Verifier`]), within a small size limit.

use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// GitHub's signature scheme, which berth's chat webhook signs with too (for tests and tools).
pub use super::notify::chat::github_signature;

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

/// What a request offers as proof of the shared secret, read from its headers alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// GitHub: the body's HMAC-SHA256, checked once the body has been read.
    Signature(Vec<u8>),
    /// GitLab: the secret itself, checked at once.
    Token(String),
}

/// The proof a request carries; `None` when it has none worth reading the body for (no
/// header, or a signature that is not `sha256=<hex>`).
pub fn proof(headers: &HeaderMap) -> Option<Proof> {
    if let Some(signature) = gitea_signature(headers) {
        return decode_hex(signature)
            .filter(|bytes| bytes.len() == 32)
            .map(Proof::Signature);
    }
    if let Some(signature) = header(headers, "x-hub-signature-256") {
        let hex = signature.strip_prefix("sha256=")?;
        return decode_hex(hex)
            .filter(|bytes| bytes.len() == 32)
            .map(Proof::Signature);
    }
    header(headers, "x-gitlab-token").map(|token| Proof::Token(token.to_string()))
}

/// Whether a GitLab token is the secret (constant time).
pub fn token_matches(token: &str, secret: &[u8]) -> bool {
    !secret.is_empty() && bool::from(token.as_bytes().ct_eq(secret))
}

/// A GitHub signature checked over a body as it arrives, chunk by chunk.
pub struct Verifier {
    mac: Hmac<Sha256>,
    expected: Vec<u8>,
}

impl Verifier {
    /// `None` without a secret: nothing verifies then.
    pub fn new(secret: &[u8], expected: Vec<u8>) -> Option<Verifier> {
        if secret.is_empty() {
            return None;
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
        Some(Verifier { mac, expected })
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.mac.update(chunk);
    }

    /// Whether the body seen so far has the expected signature (constant time).
    pub fn finish(self) -> bool {
        self.mac.verify_slice(&self.expected).is_ok()
    }
}

/// Whether the request carries proof of the shared secret.
pub fn verify(headers: &HeaderMap, body: &[u8], secret: &[u8]) -> bool {
    if secret.is_empty() {
        return false;
    }
    let signature = gitea_signature(headers)
        .map(Some)
        .or_else(|| header(headers, "x-hub-signature-256").map(|s| s.strip_prefix("sha256=")));
    if let Some(hex) = signature {
        let Some(hex) = hex else {
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
    let event = header(headers, "x-gitea-event")
        .or_else(|| header(headers, "x-gogs-event"))
        .or_else(|| header(headers, "x-github-event"))
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

/// Gitea's own signature header (Forgejo and Gogs: `X-Gogs-Signature`): bare hex.
fn gitea_signature(headers: &HeaderMap) -> Option<&str> {
    header(headers, "x-gitea-signature").or_else(|| header(headers, "x-gogs-signature"))
}

/// The hex HMAC-SHA256 of `body` under `secret`: Gitea's `X-Gitea-Signature`.
pub fn gitea_signature_of(secret: &[u8], body: &[u8]) -> String {
    github_signature(secret, body)
        .trim_start_matches("sha256=")
        .to_string()
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
        // The streaming check agrees, whatever the chunks.
        let Some(Proof::Signature(expected)) = proof(&h) else {
            panic!("a signature")
        };
        let mut verifier = Verifier::new(b"s3cret", expected.clone()).unwrap();
        for chunk in body.chunks(7) {
            verifier.update(chunk);
        }
        assert!(verifier.finish());
        let mut verifier = Verifier::new(b"s3cret", expected).unwrap();
        verifier.update(&body[1..]);
        assert!(!verifier.finish());
        assert_eq!(proof(&headers(&[("x-hub-signature-256", "sha1=00")])), None);
        assert_eq!(proof(&headers(&[("x-github-event", "push")])), None);
        assert_eq!(
            parse(&h, body),
            Hook::Push {
                reference: Some("refs/heads/main".into()),
                after: Some("abc".into())
            }
        );
    }

    /// What Gitea 1.27 sends (services/webhook/deliver.go): `X-Gitea-Signature` and
    /// `X-Gogs-Signature` as bare hex, GitHub's `X-Hub-Signature-256` beside them.
    #[test]
    fn gitea_signatures() {
        let body = br#"{"ref":"refs/heads/main","after":"f00d"}"#;
        let hex = gitea_signature_of(b"s3cret", body);
        assert_eq!(hex.len(), 64);
        let h = headers(&[("x-gitea-signature", &hex), ("x-gitea-event", "push")]);
        assert!(verify(&h, body, b"s3cret"));
        assert!(!verify(&h, body, b"wrong"));
        assert!(!verify(&h, b"{}", b"s3cret"));
        assert_eq!(proof(&h), decode_hex(&hex).map(Proof::Signature));
        assert_eq!(
            parse(&h, body),
            Hook::Push {
                reference: Some("refs/heads/main".into()),
                after: Some("f00d".into())
            }
        );
        // Gitea's header decides: a wrong one is refused whatever GitHub's header says.
        let github = github_signature(b"s3cret", body);
        let wrong = gitea_signature_of(b"other", body);
        let h = headers(&[
            ("x-gitea-signature", &wrong),
            ("x-hub-signature-256", &github),
        ]);
        assert!(!verify(&h, body, b"s3cret"));
        assert_eq!(proof(&headers(&[("x-gitea-signature", "sha256=00")])), None);
        let forgejo = headers(&[("x-gogs-signature", &hex), ("x-gogs-event", "push")]);
        assert!(verify(&forgejo, body, b"s3cret"));
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
        assert_eq!(proof(&h), Some(Proof::Token("s3cret".into())));
        assert!(token_matches("s3cret", b"s3cret"));
        assert!(!token_matches("s3cret", b""));
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
