//! Ownership after the Kubernetes ApplySet convention (KEP-3659), so that pruning lists only
//! what berth applied from this repository, and kubectl understands it too:
//! - a parent ConfigMap labelled `applyset.kubernetes.io/id`, annotated with the tooling,
//!   the group-kinds its members have and the namespaces they live in;
//! - members labelled `applyset.kubernetes.io/part-of: <id>`.
//!
//! Everything here is pure; `inventory` reads the parent and members, `apply` writes them.

use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

pub const PART_OF: &str = "applyset.kubernetes.io/part-of";
pub const ID: &str = "applyset.kubernetes.io/id";
pub const TOOLING: &str = "applyset.kubernetes.io/tooling";
pub const GROUP_KINDS: &str = "applyset.kubernetes.io/contains-group-kinds";
pub const ADDITIONAL_NAMESPACES: &str = "applyset.kubernetes.io/additional-namespaces";
/// Hash of what berth last applied to an object. A removed field changes it, so a plan
/// notices removals without reading managedFields.
pub const APPLIED_HASH: &str = "berth/applied-hash";

/// One repository's set of objects in one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplySet {
    /// Name of the parent ConfigMap.
    pub name: String,
    /// Namespace of the parent ConfigMap.
    pub namespace: String,
}

impl ApplySet {
    /// The default name: `berth-` and the repository folder's name, as a DNS label.
    pub fn default_name(repository: &std::path::Path) -> String {
        let folder = repository
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let mut name: String = format!("berth-{folder}")
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        name.truncate(63);
        name.trim_end_matches('-').to_string()
    }

    /// `applyset-<base64url(sha256(name.namespace.ConfigMap.))>`, as KEP-3659 defines it.
    pub fn id(&self) -> String {
        let digest = Sha256::digest(format!("{}.{}.ConfigMap.", self.name, self.namespace));
        format!(
            "applyset-{}-v1",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
        )
    }

    pub fn selector(&self) -> String {
        format!("{PART_OF}={}", self.id())
    }

    /// The parent object for members of these group-kinds in these namespaces.
    pub fn parent(&self, group_kinds: &BTreeSet<String>, namespaces: &BTreeSet<String>) -> Value {
        let join = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(",");
        let mut others = namespaces.clone();
        others.remove(&self.namespace);
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {
                    ID: self.id(),
                    crate::render::MANAGED_BY: "berth",
                },
                "annotations": {
                    TOOLING: format!("berth/{}", env!("CARGO_PKG_VERSION")),
                    GROUP_KINDS: join(group_kinds),
                    ADDITIONAL_NAMESPACES: join(&others),
                },
            },
        })
    }

    /// Mark rendered objects as members and stamp what is applied.
    pub fn decorate(&self, objects: &mut [Value]) {
        let id = self.id();
        for object in objects {
            self.decorate_one(&id, object);
        }
    }

    /// [`ApplySet::decorate`] of one object, with the set's [`ApplySet::id`].
    pub fn decorate_one(&self, id: &str, object: &mut Value) {
        let hash = applied_hash(object);
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            let labels = metadata.entry("labels").or_insert_with(|| json!({}));
            if let Some(labels) = labels.as_object_mut() {
                labels.insert(PART_OF.into(), Value::String(id.to_string()));
            }
            let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
            if let Some(annotations) = annotations.as_object_mut() {
                annotations.insert(APPLIED_HASH.into(), Value::String(hash));
            }
        }
    }
}

/// Parse a comma-separated ApplySet annotation.
pub fn split_list(value: Option<&str>) -> BTreeSet<String> {
    value
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Hash of an object as berth renders it, leaving out the env hash (which changes the pod
/// template on its own and is reported as a restart).
pub fn applied_hash(object: &Value) -> String {
    let mut copy = object.clone();
    if let Some(a) = copy
        .pointer_mut("/spec/template/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        a.remove(crate::render::ENV_HASH);
    }
    let digest = Sha256::digest(serde_json::to_vec(&copy).unwrap_or_default());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_follows_kep_3659() {
        let set = ApplySet {
            name: "berth-repo".into(),
            namespace: "berth-system".into(),
        };
        let id = set.id();
        assert!(id.starts_with("applyset-") && id.ends_with("-v1"), "{id}");
        // Label values are at most 63 characters.
        assert!(id.len() <= 63, "{id}");
        let other = ApplySet {
            name: "berth-other".into(),
            namespace: "berth-system".into(),
        };
        assert_ne!(id, other.id());
    }

    #[test]
    fn parent_lists_group_kinds_and_other_namespaces() {
        let set = ApplySet {
            name: "p".into(),
            namespace: "berth-system".into(),
        };
        let kinds = BTreeSet::from(["ConfigMap".to_string(), "StatefulSet.apps".to_string()]);
        let namespaces = BTreeSet::from(["a".to_string(), "berth-system".to_string()]);
        let parent = set.parent(&kinds, &namespaces);
        let annotations = &parent["metadata"]["annotations"];
        assert_eq!(annotations[GROUP_KINDS], "ConfigMap,StatefulSet.apps");
        assert_eq!(annotations[ADDITIONAL_NAMESPACES], "a");
        assert_eq!(parent["metadata"]["labels"][ID], set.id());
    }

    #[test]
    fn decoration_marks_members_and_hash_ignores_env_hash() {
        let set = ApplySet {
            name: "p".into(),
            namespace: "n".into(),
        };
        let sts = |hash: &str, image: &str| json!({"metadata": {"name": "x"}, "spec": {"template": {"metadata": {"annotations": {"berth/env-hash": hash}}, "spec": {"image": image}}}});
        assert_eq!(applied_hash(&sts("a", "i")), applied_hash(&sts("b", "i")));
        assert_ne!(applied_hash(&sts("a", "i")), applied_hash(&sts("a", "j")));
        let mut objects = vec![sts("a", "i")];
        set.decorate(&mut objects);
        assert_eq!(objects[0]["metadata"]["labels"][PART_OF], set.id());
        assert!(objects[0]["metadata"]["annotations"][APPLIED_HASH].is_string());
    }
}
