//! Errors from the Kubernetes API in words: what the server said (its reason, and for each
//! cause the field and message), or why it could not be reached. No Rust debug structure,
//! no transport library's type name ever reaches a user.

pub use super::transport::transport_cause;
use kube::core::Status;
use std::sync::OnceLock;

/// The API server this process talks to, for messages that have no [`super::Cluster`] at
/// hand (a context chain's innermost kube error). Set by the first client made.
static SERVER: OnceLock<String> = OnceLock::new();

pub(super) fn remember_server(server: &str) {
    let _ = SERVER.set(server.to_string());
}

/// An error and its causes as one line, `outer: inner: …`, with any Kubernetes client error
/// in words ([`describe`]) and its transport internals left out.
pub fn chain(err: &anyhow::Error) -> String {
    let server = SERVER.get().map(String::as_str).unwrap_or("the API server");
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        if let Some(kube) = cause.downcast_ref::<kube::Error>() {
            parts.push(describe(kube, server));
            break;
        }
        let text = cause.to_string();
        // A context that repeats its cause adds nothing.
        if parts.last().is_none_or(|last| !last.ends_with(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// One line for an API error: `Invalid: spec: Forbidden: updates to …`, `Forbidden: …`.
pub fn status_line(status: &Status) -> String {
    let reason = if status.reason.is_empty() {
        format!("HTTP {}", status.code)
    } else {
        status.reason.clone()
    };
    let causes: Vec<String> = status
        .details
        .iter()
        .flat_map(|d| &d.causes)
        .filter(|c| !c.message.is_empty())
        .map(|c| {
            if c.field.is_empty() {
                c.message.clone()
            } else {
                format!("{}: {}", c.field, c.message)
            }
        })
        .collect();
    let detail = if causes.is_empty() {
        status.message.clone()
    } else {
        causes.join("; ")
    };
    if detail.is_empty() {
        reason
    } else {
        format!("{reason}: {detail}")
    }
}

/// A client error in words. `server` is the API server's URL, named when it cannot be
/// reached.
pub fn describe(err: &kube::Error, server: &str) -> String {
    match err {
        kube::Error::Api(status) => status_line(status),
        kube::Error::SerdeError(e) => format!("the API server's answer could not be read: {e}"),
        kube::Error::Auth(e) => format!("authenticating to the API server at {server} failed: {e}"),
        kube::Error::InferConfig(e) => format!("no cluster configuration found: {e}"),
        kube::Error::InferKubeconfig(e) => format!("the kubeconfig cannot be used: {e}"),
        kube::Error::BuildRequest(e) => format!("berth built a bad request: {e}"),
        // Refused by berth itself, never sent: not a transport failure.
        kube::Error::Service(e) if e.is::<super::fence::Fenced>() => e.to_string(),
        // The outage detector's one cause, already in words.
        kube::Error::Service(e) if e.is::<super::outage::OutageError>() => e.to_string(),
        other => format!(
            "cannot reach the API server at {server}: {}",
            transport_cause(other)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::response::{StatusCause, StatusDetails};

    #[test]
    fn api_errors_read_as_reason_field_and_message() {
        let status = Status {
            code: 422,
            reason: "Invalid".into(),
            message: "StatefulSet.apps \"w\" is invalid: spec: Forbidden: updates…".into(),
            details: Some(StatusDetails {
                name: "w".into(),
                group: "apps".into(),
                kind: "statefulsets".into(),
                uid: String::new(),
                retry_after_seconds: 0,
                causes: vec![StatusCause {
                    reason: "FieldValueForbidden".into(),
                    message: "Forbidden: updates to statefulset spec for fields other than 'replicas' are forbidden".into(),
                    field: "spec".into(),
                }],
            }),
            ..Default::default()
        };
        assert_eq!(
            status_line(&status),
            "Invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas' are forbidden"
        );
        let forbidden = Status {
            code: 403,
            reason: "Forbidden".into(),
            message: "roles is forbidden: User \"x\" cannot create".into(),
            ..Default::default()
        };
        assert_eq!(
            status_line(&forbidden),
            "Forbidden: roles is forbidden: User \"x\" cannot create"
        );
        let text = describe(&kube::Error::Api(Box::new(forbidden)), "https://h");
        assert!(
            !text.contains("Status {") && !text.contains("ApiError"),
            "{text}"
        );
    }

    #[test]
    fn chains_end_at_the_kube_error_in_words() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let err = anyhow::Error::new(kube::Error::Service(Box::new(io)))
            .context("listing StatefulSets owned by berth");
        let text = chain(&err);
        assert!(
            text.starts_with("listing StatefulSets owned by berth: cannot reach the API server")
                && text.ends_with("the connection was reset"),
            "{text}"
        );
        assert!(
            !text.contains("ServiceError") && !text.contains("client error"),
            "{text}"
        );
    }

    #[test]
    fn transport_errors_name_the_os_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = kube::Error::Service(Box::new(io));
        assert_eq!(
            describe(&err, "https://127.0.0.1:1"),
            "cannot reach the API server at https://127.0.0.1:1: connection refused (is it running?)"
        );
    }
}
