//! Inventory: what berth owns in the cluster, read with one label-selected LIST per kind.
//!
//! The LISTs come in pages, and each page is read as it arrives: every member is compared
//! with the desired object of its key there and then, and kept whole only when it differs
//! (`crate::plan::live`). Neither a whole LIST answer nor every member as a `Value` (with
//! its managedFields, the larger part of it) is ever held at once: 1.3 GB at 10,000
//! workspaces before (BENCHMARKS.md).

use super::Cluster;
use super::applyset::{ApplySet, GROUP_KINDS, split_list};
use super::kinds::{ManagedKind, by_group_kind};
use crate::plan::live::{Live, classify};
use crate::render::{ObjectKey, ObjectText, key_of};
use anyhow::{Context, Result, anyhow};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Resource;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Objects per page of a LIST (kubectl's default): a page of StatefulSets with their
/// managedFields is a few megabytes.
const PAGE: u32 = 500;

/// Above this many namespaces with referenced Secrets, their versions come from one LIST
/// across all namespaces (where berth may list Secrets cluster-wide) instead of one per
/// namespace: one request against hundreds, each with its own authorization. Up to it,
/// one round of concurrent LISTs does, and reads no other namespace's Secrets.
const SECRET_NAMESPACES_PER_NAMESPACE: usize = 16;

/// A live member of the ApplySet, as much of it as a plan needs.
#[derive(Debug, Clone)]
pub struct Member {
    pub key: ObjectKey,
    /// Whole (without managedFields) as JSON text ([`Live::Text`]), or [`Live::Same`]
    /// when it is what git wants.
    pub live: Live,
    /// For a StatefulSet: whether its controller has rolled it out.
    pub rolled_out: Option<bool>,
    /// For a StatefulSet: scaled to zero, and when berth last restarted it (seconds since
    /// the epoch), for the rollout gate ([`crate::plan::rollout`]).
    pub suspended: bool,
    pub restarted_at: Option<u64>,
}

/// The live side of a plan.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// The ApplySet parent, if berth applied this repository here before.
    pub parent: Option<Value>,
    /// Every live member of the ApplySet (whole ones with apiVersion and kind set).
    pub members: Vec<Member>,
    /// `namespace/name` → resourceVersion of Secrets that workspaces reference.
    pub secret_versions: BTreeMap<String, String>,
    /// Namespaces whose Secrets berth may not list (yet): versions there are unknown.
    pub unreadable_secrets: BTreeSet<String>,
    /// Namespaces whose Secrets berth listed: a referenced Secret missing there is absent.
    pub read_secrets: BTreeSet<String>,
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

/// Read the parent (one GET) and the Secrets' versions (metadata only, their data is never
/// read: one LIST per namespace that references Secrets, or one across namespaces when
/// there are many of those, see [`SECRET_NAMESPACES_PER_NAMESPACE`]), all requests at
/// once. `members` stays empty: [`read_members`] fills it.
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
    let secrets = async {
        if secret_namespaces.len() > SECRET_NAMESPACES_PER_NAMESPACE
            && let Some(versions) = secrets_everywhere(cluster, secret_namespaces).await?
        {
            return Ok(vec![Ok(versions)]);
        }
        secrets_per_namespace(cluster, secret_namespaces).await
    };
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
        read_secrets: secret_namespaces
            .difference(&unreadable_secrets)
            .cloned()
            .collect(),
        unreadable_secrets,
    })
}

/// Versions of the Secrets in `namespaces` from one metadata LIST across all namespaces
/// (in pages); `None` where berth may not list Secrets cluster-wide (the reconciler's
/// account is granted them per project namespace only, deploy/10-rbac.yaml), which is
/// remembered for the connection's later plans.
async fn secrets_everywhere(
    cluster: &Cluster,
    namespaces: &BTreeSet<String>,
) -> Result<Option<Vec<(String, String)>>> {
    if cluster.secrets_listed_per_namespace() {
        return Ok(None);
    }
    let api = Api::<Secret>::all(cluster.client.clone());
    let mut versions = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = match api.list_metadata(&params).await {
            Ok(page) => page,
            Err(kube::Error::Api(s)) if s.code == 403 => {
                cluster.list_secrets_per_namespace();
                return Ok(None);
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context("listing Secrets (metadata only) in all namespaces"));
            }
        };
        versions.extend(page.items.into_iter().filter_map(|s| {
            let namespace = s.metadata.namespace?;
            namespaces.contains(&namespace).then_some(())?;
            Some((
                format!("{namespace}/{}", s.metadata.name?),
                s.metadata.resource_version?,
            ))
        }));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(Some(versions)),
        }
    }
}

/// One metadata LIST of Secrets per namespace, at most 16 at once: the versions in each,
/// or the namespace when berth may not list Secrets there.
async fn secrets_per_namespace(
    cluster: &Cluster,
    namespaces: &BTreeSet<String>,
) -> Result<Vec<std::result::Result<Vec<(String, String)>, String>>> {
    // Each future owns what it needs, so the plan's future stays `Send`.
    let secrets: Vec<_> = namespaces
        .iter()
        .map(|namespace| (cluster.client.clone(), namespace.clone()))
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
    futures::stream::iter(secrets)
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
}

/// The desired objects of a plan, and where each key's is.
pub struct DesiredIndex {
    objects: Vec<ObjectText>,
    by_key: HashMap<ObjectKey, usize>,
}

impl DesiredIndex {
    pub fn new(objects: Vec<ObjectText>) -> DesiredIndex {
        let by_key = objects
            .iter()
            .enumerate()
            .map(|(i, o)| (o.key.clone(), i))
            .collect();
        DesiredIndex { objects, by_key }
    }

    fn get(&self, key: &ObjectKey) -> Option<&ObjectText> {
        self.by_key.get(key).map(|&i| &self.objects[i])
    }

    /// The objects, in the order they were given.
    pub fn into_objects(index: Arc<DesiredIndex>) -> Vec<ObjectText> {
        match Arc::try_unwrap(index) {
            Ok(index) => index.objects,
            Err(shared) => shared.objects.clone(),
        }
    }
}

/// The members (one label-selected LIST per kind, all at once, in pages) of the kinds
/// berth renders and those the parent records, each compared with its desired object as
/// its page arrives; in the order of their group-kinds.
pub async fn read_members(
    cluster: &Cluster,
    set: &ApplySet,
    parent_kinds: BTreeSet<String>,
    desired: Arc<DesiredIndex>,
) -> Result<Vec<Member>> {
    let mut kinds = parent_kinds;
    kinds.extend(
        desired
            .objects
            .iter()
            .filter_map(|o| super::kinds::kind_of(&o.key.api_version, &o.key.kind))
            .map(|k| k.group_kind()),
    );
    let selector = ListParams::default().labels(&set.selector()).limit(PAGE);
    // A task per kind: the pages of different kinds are read on every worker thread.
    let lists: Vec<_> = kinds
        .iter()
        .filter_map(|gk| by_group_kind(gk))
        .map(|kind| {
            let (client, selector, desired) =
                (cluster.client.clone(), selector.clone(), desired.clone());
            tokio::spawn(async move { list_kind(&client, &kind, selector, &desired).await })
        })
        .collect();
    let mut members = Vec::new();
    for list in futures::future::join_all(lists).await {
        members.extend(list.map_err(|e| anyhow!("listing berth's objects: {e}"))??);
    }
    Ok(members)
}

/// Every member of one kind, page by page.
async fn list_kind(
    client: &kube::Client,
    kind: &ManagedKind,
    selector: ListParams,
    desired: &DesiredIndex,
) -> Result<Vec<Member>> {
    let mut members = Vec::new();
    let mut params = selector.clone();
    let mut restarts = 0;
    loop {
        let request = kube::core::Request::new(DynamicObject::url_path(&kind.resource, None))
            .list(&params)?;
        let page: RawPage = match client.request(request).await {
            Ok(page) => page,
            // The list's snapshot expired between two pages (etcd compacted it): the
            // pages so far are of another moment, so the kind is listed again whole.
            Err(kube::Error::Api(s))
                if s.code == 410 && params.continue_token.is_some() && restarts < 3 =>
            {
                restarts += 1;
                members.clear();
                params = selector.clone();
                continue;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("listing {} owned by berth", kind.group_kind())));
            }
        };
        for item in page.items {
            members.extend(member_of(&item, kind, desired).with_context(|| {
                format!("reading a {} the API server listed", kind.group_kind())
            })?);
        }
        match page.metadata.continue_token {
            Some(token) if !token.is_empty() => params = selector.clone().continue_token(&token),
            _ => return Ok(members),
        }
    }
}

/// One listed object as a member: compared with the desired object of its key, and kept
/// whole only when it differs or has none.
fn member_of(
    item: &RawValue,
    kind: &ManagedKind,
    desired: &DesiredIndex,
) -> Result<Option<Member>> {
    let mut value: Value = serde_json::from_str(item.get())?;
    // The larger part of a listed object, and nothing a plan reads.
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.shift_remove("managedFields");
    }
    let value = typed_value(value, kind);
    let Some(key) = key_of(&value) else {
        return Ok(None);
    };
    let rolled_out = (key.kind == "StatefulSet").then(|| super::wait::rolled_out_value(&value));
    let suspended =
        rolled_out.is_some() && value.pointer("/spec/replicas").and_then(Value::as_i64) == Some(0);
    let restarted_at = value
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(crate::plan::rollout::RESTARTED_AT))
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(|t| t.as_second().max(0) as u64);
    let live = match desired.get(&key) {
        Some(text) => classify(&text.value(), value),
        None => Live::Full(value),
    };
    // Kept as text: a plan where everything changed holds every member whole.
    let live = match live {
        Live::Full(value) => Live::Text(ObjectText::new(key.clone(), &value)),
        compact => compact,
    };
    Ok(Some(Member {
        key,
        live,
        rolled_out,
        suspended,
        restarted_at,
    }))
}

/// One page of a LIST: its objects as JSON text, read one by one.
#[derive(serde::Deserialize)]
struct RawPage {
    #[serde(default)]
    metadata: PageMeta,
    #[serde(default)]
    items: Vec<Box<RawValue>>,
}

#[derive(serde::Deserialize, Default)]
struct PageMeta {
    #[serde(rename = "continue", default)]
    continue_token: Option<String>,
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
