//! Inventory: what berth owns in the cluster, read with one label-selected LIST per kind.

use super::Cluster;
use super::applyset::{ApplySet, GROUP_KINDS, split_list};
use super::kinds::{ManagedKind, by_group_kind};
use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The live side of a plan.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// The ApplySet parent, if berth applied this repository here before.
    pub parent: Option<Value>,
    /// Every live member of the ApplySet, with apiVersion and kind set.
    pub members: Vec<Value>,
    /// `namespace/name` → resourceVersion of Secrets that workspaces reference.
    pub secret_versions: BTreeMap<String, String>,
}

impl Inventory {
    /// The group-kinds the parent says its members have.
    pub fn parent_group_kinds(&self) -> BTreeSet<String> {
        split_list(
            self.parent
                .as_ref()
                .and_then(|p| p.pointer("/metadata/annotations"))
                .and_then(|a| a.get(GROUP_KINDS))
                .and_then(Value::as_str),
        )
    }
}

/// Read the parent (one GET), the Secrets' versions (metadata only: one LIST per namespace
/// that references Secrets; their data is never read), and the members (one LIST per kind).
pub async fn read(
    cluster: &Cluster,
    set: &ApplySet,
    desired_kinds: &BTreeSet<String>,
    secret_namespaces: &BTreeSet<String>,
) -> Result<Inventory> {
    let client = cluster.client.clone();
    let parent = Api::<ConfigMap>::namespaced(client.clone(), &set.namespace)
        .get_opt(&set.name)
        .await
        .with_context(|| format!("reading ApplySet parent {}/{}", set.namespace, set.name))?
        .map(|cm| serde_json::to_value(cm).unwrap_or_default());
    let mut inventory = Inventory {
        parent,
        ..Default::default()
    };

    for namespace in secret_namespaces {
        let secrets = Api::<Secret>::namespaced(client.clone(), namespace)
            .list_metadata(&ListParams::default())
            .await
            .with_context(|| format!("listing Secrets (metadata only) in {namespace}"))?;
        for secret in secrets {
            if let (Some(name), Some(version)) =
                (secret.metadata.name, secret.metadata.resource_version)
            {
                inventory
                    .secret_versions
                    .insert(format!("{namespace}/{name}"), version);
            }
        }
    }

    let mut kinds: BTreeSet<String> = inventory.parent_group_kinds();
    kinds.extend(desired_kinds.iter().cloned());
    let selector = ListParams::default().labels(&set.selector());
    let lists = kinds.iter().filter_map(|gk| by_group_kind(gk)).map(|kind| {
        let selector = selector.clone();
        let client = client.clone();
        async move {
            let api: Api<DynamicObject> = Api::all_with(client, &kind.resource);
            let list = api
                .list(&selector)
                .await
                .with_context(|| format!("listing {} owned by berth", kind.group_kind()))?;
            Ok::<_, anyhow::Error>(
                list.items
                    .into_iter()
                    .map(|o| typed_value(o, &kind))
                    .collect::<Vec<_>>(),
            )
        }
    });
    for items in futures::future::try_join_all(lists).await? {
        inventory.members.extend(items);
    }
    Ok(inventory)
}

/// List items come without apiVersion and kind; put them back.
fn typed_value(object: DynamicObject, kind: &ManagedKind) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "apiVersion".into(),
            kind.resource.api_version.clone().into(),
        );
        map.insert("kind".into(), kind.resource.kind.clone().into());
    }
    value
}
