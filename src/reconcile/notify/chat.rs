//! A generic webhook for chat tools (or anything that takes JSON): one POST per final
//! state (and per `error`) of a revision, signed so the receiver can tell it is berth's:
//! `X-Berth-Signature: sha256=<hex>`, the HMAC-SHA256 of the body under the shared secret,
//! the same scheme as GitHub's webhooks. The body carries no credential.

use super::CommitStatus;
use super::providers::Request;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

/// Where chat notifications go.
#[derive(Clone)]
pub struct ChatHook {
    pub url: String,
    pub secret: String,
    /// Which repository the revisions are of (for the message).
    pub source: String,
}

impl std::fmt::Debug for ChatHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatHook")
            .field("url", &self.url)
            .field("secret", &"***")
            .field("source", &self.source)
            .finish()
    }
}

impl ChatHook {
    /// The signed POST for `status` of `commit`. `text` is a ready-made line for tools
    /// that show one (Slack's and Mattermost's incoming webhooks read `text`).
    pub fn request(&self, commit: &str, status: &CommitStatus) -> Request {
        let short: String = commit.chars().take(12).collect();
        let body = json!({
            "text": format!("berth {}: {short} of {}: {}", status.state.as_str(), self.source, status.description),
            "state": status.state.as_str(),
            "revision": commit,
            "source": self.source,
            "context": status.context,
            "description": status.description,
            "target_url": status.target_url,
        })
        .to_string()
        .into_bytes();
        let signature = github_signature(self.secret.as_bytes(), &body);
        Request {
            method: "POST",
            url: self.url.clone(),
            headers: vec![
                ("content-type", "application/json".into()),
                ("x-berth-event", "commit-status".into()),
            ],
            // The signature proves the secret without carrying it: not a credential, but
            // kept out of Debug all the same.
            auth: Some(("x-berth-signature", signature)),
            body: Some(body),
        }
    }
}

/// `sha256=<hex>` of `body` under `secret`: as GitHub signs its webhooks.
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
    use crate::reconcile::notify::State;
    use crate::reconcile::webhook;

    #[test]
    fn chat_messages_are_signed_over_their_body() {
        let hook = ChatHook {
            url: "https://chat.example.com/hooks/abc".into(),
            secret: "chat-s3cret".into(),
            source: "https://git.example.com/org/platform.git".into(),
        };
        let status = CommitStatus {
            state: State::Failure,
            description: "repo.yaml:4:3: error: spec.image: required".into(),
            target_url: Some("https://berth.example.com/".into()),
            context: "berth/prod".into(),
        };
        let r = hook.request("0123456789abcdef", &status);
        let body = r.body.clone().unwrap();
        let (name, signature) = r.auth.clone().unwrap();
        assert_eq!(name, "x-berth-signature");
        // The receiver's check is berth's own webhook verification.
        let mut headers = http::HeaderMap::new();
        headers.insert("x-hub-signature-256", signature.parse().unwrap());
        assert!(webhook::verify(&headers, &body, b"chat-s3cret"));
        assert!(!webhook::verify(&headers, &body, b"other"));
        let json = r.body_json().unwrap();
        assert_eq!(json["state"], "failure");
        assert_eq!(json["revision"], "0123456789abcdef");
        assert!(json["text"].as_str().unwrap().contains("repo.yaml:4:3"));
        assert!(!String::from_utf8_lossy(&body).contains("chat-s3cret"));
        assert!(!format!("{hook:?}").contains("chat-s3cret"));
    }
}
