//! Wait: until StatefulSets report their new revision rolled out, or a timeout.

use super::Cluster;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::Api;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Whether a StatefulSet's controller has caught up with its spec and rolled every replica
/// to the current revision.
pub fn rolled_out(sts: &StatefulSet) -> bool {
    let generation = sts.metadata.generation.unwrap_or(0);
    let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(status) = &sts.status else {
        return false;
    };
    let observed = status.observed_generation.unwrap_or(0) >= generation;
    let same_revision = replicas == 0
        || status.current_revision.is_some() && status.current_revision == status.update_revision;
    observed
        && same_revision
        && status.updated_replicas.unwrap_or(0) >= replicas
        && status.ready_replicas.unwrap_or(0) >= replicas
}

/// [`rolled_out`] of a StatefulSet as JSON, without reading it into the typed form (a plan
/// reads thousands).
pub fn rolled_out_value(sts: &Value) -> bool {
    let int = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_i64);
    let generation = int(sts, "/metadata/generation").unwrap_or(0);
    let replicas = int(sts, "/spec/replicas").unwrap_or(1);
    let Some(status) = sts.get("status").filter(|s| !s.is_null()) else {
        return false;
    };
    let text = |p: &str| status.pointer(p).and_then(Value::as_str);
    let observed = int(status, "/observedGeneration").unwrap_or(0) >= generation;
    let same_revision = replicas == 0
        || text("/currentRevision").is_some()
            && text("/currentRevision") == text("/updateRevision");
    observed
        && same_revision
        && int(status, "/updatedReplicas").unwrap_or(0) >= replicas
        && int(status, "/readyReplicas").unwrap_or(0) >= replicas
}

/// Wait for each `(namespace, name)`; returns those not rolled out in time.
pub async fn wait_for_rollouts(
    cluster: &Cluster,
    targets: &[(String, String)],
    timeout: Duration,
) -> Vec<(String, String)> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<(String, String)> = targets.to_vec();
    loop {
        let mut still = Vec::new();
        for (namespace, name) in pending {
            let api: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), &namespace);
            match api.get_opt(&name).await {
                Ok(Some(sts)) if rolled_out(&sts) => {}
                _ => still.push((namespace, name)),
            }
        }
        if still.is_empty() || Instant::now() >= deadline {
            return still;
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        /// Read as JSON, a StatefulSet is rolled out exactly when its typed form is.
        #[test]
        fn rolled_out_reads_json_as_the_typed_form(
            generation in proptest::option::of(0i64..3),
            replicas in proptest::option::of(0i32..3),
            status in proptest::option::of((
                proptest::option::of(0i32..3),
                proptest::option::of(0i64..3),
                proptest::option::of(prop_oneof!["r1", "r2"]),
                proptest::option::of(prop_oneof!["r1", "r2"]),
                proptest::option::of(0i32..3),
                proptest::option::of(0i32..3),
            )),
        ) {
            let mut sts = json!({"metadata": {}, "spec": {"selector": {}, "template": {}}});
            if let Some(g) = generation {
                sts["metadata"]["generation"] = json!(g);
            }
            if let Some(r) = replicas {
                sts["spec"]["replicas"] = json!(r);
            }
            if let Some((count, observed, current, update, updated, ready)) = status {
                let mut s = json!({});
                for (field, value) in [
                    ("replicas", count.map(|v| json!(v))),
                    ("observedGeneration", observed.map(|v| json!(v))),
                    ("currentRevision", current.map(|v| json!(v))),
                    ("updateRevision", update.map(|v| json!(v))),
                    ("updatedReplicas", updated.map(|v| json!(v))),
                    ("readyReplicas", ready.map(|v| json!(v))),
                ] {
                    if let Some(value) = value {
                        s[field] = value;
                    }
                }
                sts["status"] = s;
            }
            let typed = serde_json::from_value::<StatefulSet>(sts.clone()).is_ok_and(|t| rolled_out(&t));
            prop_assert_eq!(rolled_out_value(&sts), typed, "{}", sts);
        }
    }
}
