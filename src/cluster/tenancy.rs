//! The tenancy rule as the cluster states it: the ConfigMap `berth-tenancy` in berth's
//! namespace, which also parameterises the admission policy `berth-tenancy` (deploy/), so
//! berth's own check and the API server's enforce one list.

use super::Cluster;
use crate::resolve::Resolved;
use crate::tenancy::{CONFIG_MAP, Tenancy};
use anyhow::{Result, anyhow};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::ListParams;

/// The rule of the cluster, berth being in `namespace` (`--applyset-namespace`). Without
/// the ConfigMap, no rule: only `kube-*`, `default` and `namespace` are refused (said in a
/// warning; the admission policy of deploy/ then refuses every write of berth's identity).
/// A ConfigMap that cannot be read or holds an invalid pattern is an error: nothing is
/// planned or applied against a rule berth does not know.
pub async fn read(cluster: &Cluster, namespace: &str) -> Result<Tenancy> {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), namespace);
    let source = format!("ConfigMap {namespace}/{CONFIG_MAP}");
    // A LIST by name rather than a GET: no rule is a normal state, not a 404 to log.
    let by_name = ListParams::default().fields(&format!("metadata.name={CONFIG_MAP}"));
    match api
        .list(&by_name)
        .await
        .map(|list| list.items.into_iter().next())
    {
        Ok(Some(config_map)) => {
            let value = serde_json::to_value(&config_map)
                .map_err(|e| anyhow!("reading the tenancy rule {source}: {e}"))?;
            Tenancy::from_config_map(&value, &source).map_err(|e| anyhow!("tenancy rule {e}"))
        }
        Ok(None) => {
            tracing::warn!(
                "no tenancy rule: {source} does not exist, so projects may use any namespace \
                 but kube-*, default and {namespace}"
            );
            Ok(Tenancy::unrestricted(
                namespace,
                &format!("no tenancy rule ({source} does not exist)"),
            ))
        }
        Err(e) => Err(anyhow!(
            "reading the tenancy rule {source}: {}",
            cluster.describe(&e)
        )),
    }
}

/// Each namespace of a resolved repository that `tenancy` refuses, in words: for a
/// revision validated under an earlier rule.
pub fn refusals(tenancy: &Tenancy, resolved: &Resolved) -> Vec<String> {
    let mut out = Vec::new();
    for project in &resolved.projects {
        let runners = project
            .spec
            .workload_manager
            .as_ref()
            .map(|wm| &wm.namespace);
        for namespace in std::iter::once(&project.namespace).chain(runners) {
            if let Some(why) = tenancy.refusal(namespace) {
                out.push(format!("project `{}`: {why}", project.name));
            }
        }
    }
    out
}
