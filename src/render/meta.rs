//! The names, labels and metadata every object of a workspace carries. A leaf of render:
//! the workspace's own objects ([`super::workspace`]), its lifecycle objects
//! ([`super::lifecycle`]) and its executor objects ([`super::executor`]) all take their
//! metadata from here, so none of them imports another for it.

use super::{MANAGED_BY, PROJECT_LABEL, WORKSPACE_LABEL};
use crate::resolve::ResolvedWorkspace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

/// The label every object berth renders carries.
pub fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY.to_string(), "berth".to_string())])
}

/// Labels that select the workspace's pods. Never change them: a StatefulSet's selector is
/// immutable.
pub fn selector_labels(ws: &ResolvedWorkspace) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "mage-workspace".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), ws.name.clone()),
    ])
}

pub fn labels_of(ws: &ResolvedWorkspace) -> BTreeMap<String, String> {
    let mut labels = ws.labels.clone();
    labels.extend(selector_labels(ws));
    labels.extend(managed_labels());
    labels.insert(PROJECT_LABEL.into(), ws.project.clone());
    labels.insert(WORKSPACE_LABEL.into(), ws.name.clone());
    if let Some(env) = &ws.environment {
        labels.insert("berth/environment".into(), env.clone());
    }
    labels
}

pub fn meta_of(ws: &ResolvedWorkspace, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(ws.namespace.clone()),
        labels: Some(labels_of(ws)),
        annotations: (!ws.annotations.is_empty()).then(|| ws.annotations.clone()),
        ..Default::default()
    }
}

/// The service account the workspace pod runs as when it has an activity agent or runs
/// k8s blocks and names none itself: it holds no rights but renewing the activity Lease
/// and what Mage's executor needs.
pub fn pod_account(ws: &ResolvedWorkspace) -> String {
    ws.spec
        .kubernetes
        .service_account_name
        .clone()
        .unwrap_or_else(|| ws.name.clone())
}
