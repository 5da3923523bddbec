//! Inventory: what berth owns in the cluster, read with one label-selected LIST per kind.

use super::Cluster;
use super::applyset::{ApplySet, GROUP_KINDS, split_list};
use super::kinds::{ManagedKind, by_group_kind};
use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Resource;
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
    /// Namespaces whose Secrets berth may not list (yet): versions there are unknown.
    pub unreadable_secrets: BTreeSet<String>,
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

/// Read the parent (one GET) and the Secrets' versions (metadata only: one LIST per
/// namespace that references Secrets; their data is never read), all requests at once.
/// `members` stays empty: [`read_members`] fills it.
pub async fn read_parent_and_secrets(
    cluster: &Cluster,
    set: &ApplySet,
    secret_namespaces: &BTreeSet<String>,
) -> Result<Inventory> {
    let client = cluster.client.clone();
    let parent = async {
        Api::<ConfigMap>::namespaced(client.clone(), &set.namespace)
            .get_opt(&set.name)
            .await
            .with_context(|| format!("reading ApplySet parent {}/{}", set.namespace, set.name))
    };
    // Each future owns what it needs, so the plan's future stays `Send`.
    let secrets: Vec<_> = secret_namespaces
        .iter()
        .map(|namespace| (client.clone(), namespace.clone()))
        .collect();
    let secrets = secrets.into_iter().map(|(client, namespace)| async move {
        let list = match Api::<Secret>::namespaced(client, &namespace)
            .list_metadata(&ListParams::default())
            .await
        {
            Ok(list) => list,
            // Not (yet) granted there: the RoleBinding that grants it is part of this
            // plan. Versions stay unknown, which never counts as a change.
            Err(kube::Error::Api(s)) if s.code == 403 => return Ok(Err(namespace)),
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("listing Secrets (metadata only) in {namespace}")));
            }
        };
        Ok::<_, anyhow::Error>(Ok(list
            .into_iter()
            .filter_map(|s| {
                Some((
                    format!("{namespace}/{}", s.metadata.name?),
                    s.metadata.resource_version?,
                ))
            })
            .collect::<Vec<_>>()))
    });
    // At most 16 Secret LISTs in flight, like dry-runs and applies.
    let secrets = futures::stream::iter(secrets)
        .buffer_unordered(16)
        .try_collect::<Vec<_>>();
    let (parent, secrets) = futures::try_join!(parent, secrets)?;
    let mut secret_versions = BTreeMap::new();
    let mut unreadable_secrets = BTreeSet::new();
    for listed in secrets {
        match listed {
            Ok(versions) => secret_versions.extend(versions),
            Err(namespace) => {
                unreadable_secrets.insert(namespace);
            }
        }
    }
    Ok(Inventory {
        parent: parent.map(|cm| serde_json::to_value(cm).unwrap_or_default()),
        members: Vec::new(),
        secret_versions,
        unreadable_secrets,
    })
}

/// The members (one label-selected LIST per kind, all at once) of the kinds berth renders
/// and those the parent records, in the order of their group-kinds.
pub async fn read_members(
    cluster: &Cluster,
    set: &ApplySet,
    parent_kinds: BTreeSet<String>,
    desired_kinds: &BTreeSet<String>,
) -> Result<Vec<Value>> {
    let mut kinds = parent_kinds;
    kinds.extend(desired_kinds.iter().cloned());
    let selector = ListParams::default().labels(&set.selector());
    let lists = kinds.iter().filter_map(|gk| by_group_kind(gk)).map(|kind| {
        let selector = selector.clone();
        let client = cluster.client.clone();
        async move {
            // Items as plain JSON: no round trip through typed metadata.
            let request = kube::core::Request::new(DynamicObject::url_path(&kind.resource, None))
                .list(&selector)?;
            let list: RawList = client
                .request(request)
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
    Ok(futures::future::try_join_all(lists)
        .await?
        .into_iter()
        .flatten()
        .collect())
}

#[derive(serde::Deserialize)]
struct RawList {
    #[serde(default)]
    items: Vec<Value>,
}

/// List items come without apiVersion and kind; put them back.
fn typed_value(mut value: Value, kind: &ManagedKind) -> Value {
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "apiVersion".into(),
            kind.resource.api_version.clone().into(),
        );
        map.insert("kind".into(), kind.resource.kind.clone().into());
    }
    value
}
