//! The kinds berth manages, with what the API needs to address them. A fixed table instead of
//! discovery: berth only renders these, and a plan should not spend requests finding them.

use super::Cluster;
use crate::render::{ObjectKey, key_of};
use anyhow::{Result, anyhow};
use k8s_openapi::api::{apps, coordination, core, rbac};
use kube::Api;
use kube::api::DynamicObject;
use kube::core::ApiResource;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct ManagedKind {
    pub resource: ApiResource,
    pub namespaced: bool,
}

impl ManagedKind {
    /// `Kind.group`, or `Kind` for the core group, as ApplySet annotations spell it.
    pub fn group_kind(&self) -> String {
        if self.resource.group.is_empty() {
            self.resource.kind.clone()
        } else {
            format!("{}.{}", self.resource.kind, self.resource.group)
        }
    }
}

fn namespaced<K: kube::Resource<DynamicType = ()>>() -> ManagedKind {
    ManagedKind {
        resource: ApiResource::erase::<K>(&()),
        namespaced: true,
    }
}

fn all() -> Vec<ManagedKind> {
    vec![
        ManagedKind {
            resource: ApiResource::erase::<core::v1::Namespace>(&()),
            namespaced: false,
        },
        namespaced::<core::v1::ServiceAccount>(),
        namespaced::<rbac::v1::Role>(),
        namespaced::<rbac::v1::RoleBinding>(),
        namespaced::<core::v1::ConfigMap>(),
        namespaced::<core::v1::Service>(),
        namespaced::<coordination::v1::Lease>(),
        namespaced::<apps::v1::StatefulSet>(),
        namespaced::<k8s_openapi::api::batch::v1::Job>(),
    ]
}

/// The managed kind of an object by `apiVersion` and `kind`.
pub fn kind_of(api_version: &str, kind: &str) -> Option<ManagedKind> {
    all()
        .into_iter()
        .find(|k| k.resource.api_version == api_version && k.resource.kind == kind)
}

/// The managed kind named `Kind` or `Kind.group` (ApplySet spelling).
pub fn by_group_kind(group_kind: &str) -> Option<ManagedKind> {
    all().into_iter().find(|k| k.group_kind() == group_kind)
}

/// The API of `object` (by its apiVersion, kind, namespace and name).
pub(super) fn api_for(cluster: &Cluster, object: &Value) -> Result<Api<DynamicObject>> {
    let key = key_of(object).ok_or_else(|| anyhow!("object without apiVersion, kind or name"))?;
    api_for_key(cluster, &key)
}

/// The API of the object `key` names.
pub(super) fn api_for_key(cluster: &Cluster, key: &ObjectKey) -> Result<Api<DynamicObject>> {
    let kind = kind_of(&key.api_version, &key.kind)
        .ok_or_else(|| anyhow!("berth does not manage {}/{}", key.api_version, key.kind))?;
    Ok(match (&key.namespace, kind.namespaced) {
        (Some(ns), true) => Api::namespaced_with(cluster.client.clone(), ns, &kind.resource),
        _ => Api::all_with(cluster.client.clone(), &kind.resource),
    })
}
