//! Counts API requests by verb (LIST, GET, PATCH, PATCH(dry-run), DELETE, …) as they leave
//! the client, so "a no-op plan makes one LIST per kind and no writes" is measured, not
//! assumed — by tests, benchmarks and the reconciler's metrics alike.

use http::{Method, Request};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl RequestCounter {
    /// A tower layer that records every request passing through it.
    pub fn layer<B>(
        &self,
    ) -> tower::util::MapRequestLayer<impl Fn(Request<B>) -> Request<B> + Clone + use<B>> {
        let counter = self.clone();
        tower::util::MapRequestLayer::new(move |request: Request<B>| {
            counter.record(verb(&request));
            request
        })
    }

    fn record(&self, verb: String) {
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry(verb).or_default() += 1;
        }
    }

    /// Requests so far, by verb.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn reset(&self) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.clear();
        }
    }
}

/// The Kubernetes verb of a request: a GET of a collection is a LIST (or WATCH), a PATCH
/// with `dryRun` is a dry run.
fn verb<B>(request: &Request<B>) -> String {
    let query = request.uri().query().unwrap_or("");
    let path = request.uri().path();
    let method = request.method();
    let dry_run = query.contains("dryRun=");
    if *method == Method::GET {
        if query.contains("watch=true") {
            return "WATCH".into();
        }
        // Collections end in a resource's plural; single objects in a name after it.
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let is_collection = matches!(
            segments.as_slice(),
            [.., "namespaces", _, _]
                | [.., "namespaces"]
                | ["", "api", _, _]
                | ["", "apis", _, _, _]
        );
        return if is_collection { "LIST" } else { "GET" }.into();
    }
    if dry_run {
        format!("{method}(dry-run)")
    } else {
        method.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(method: &str, uri: &str) -> String {
        verb(&Request::builder().method(method).uri(uri).body(()).unwrap())
    }

    #[test]
    fn classifies_verbs() {
        assert_eq!(v("GET", "/api/v1/configmaps?labelSelector=a"), "LIST");
        assert_eq!(v("GET", "/apis/apps/v1/statefulsets"), "LIST");
        assert_eq!(v("GET", "/api/v1/namespaces"), "LIST");
        assert_eq!(v("GET", "/api/v1/namespaces/x/secrets"), "LIST");
        assert_eq!(v("GET", "/api/v1/namespaces/x"), "GET");
        assert_eq!(v("GET", "/api/v1/namespaces/x/configmaps/y"), "GET");
        assert_eq!(v("GET", "/apis/apps/v1/namespaces/x/statefulsets/y"), "GET");
        assert_eq!(
            v(
                "PATCH",
                "/api/v1/namespaces/x/configmaps/y?dryRun=All&fieldManager=berth"
            ),
            "PATCH(dry-run)"
        );
        assert_eq!(
            v(
                "PATCH",
                "/api/v1/namespaces/x/configmaps/y?fieldManager=berth"
            ),
            "PATCH"
        );
        assert_eq!(v("DELETE", "/api/v1/namespaces/x/configmaps/y"), "DELETE");
        assert_eq!(v("GET", "/api/v1/configmaps?watch=true"), "WATCH");
    }
}
