//! Wait: until StatefulSets report their new revision rolled out, or a timeout.

use super::Cluster;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::Api;
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
