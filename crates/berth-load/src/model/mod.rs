//! The three kinds a berth repository holds — Project, Workspace, Policy — as typed Rust
//! values. These types are the single source of truth: the JSON Schemas in `schemas/` are
//! generated from them, and the loader validates every document against those schemas before
//! deserializing it here.

mod executor;
mod policy;
mod project;
mod rollout;
mod workspace;

pub use executor::*;
pub use policy::*;
pub use project::*;
pub use rollout::*;
pub use workspace::*;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The only `apiVersion` this berth understands.
pub const API_VERSION: &str = "berth/v1alpha1";

/// `metadata` of every berth document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Name of the object: a DNS-1123 label (lower case letters, digits and `-`, at most 63
    /// characters). Unique per kind in the repository.
    pub name: String,
    /// Labels copied onto every Kubernetes object rendered from this document.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations copied onto every Kubernetes object rendered from this document.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A whole document of one kind: `apiVersion`, `kind`, `metadata` and `spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Document<S> {
    /// Always `berth/v1alpha1`.
    pub api_version: String,
    /// The kind of document.
    pub kind: String,
    pub metadata: Metadata,
    pub spec: S,
}

/// A document's spec held once and shared: the loaded document and what resolve makes of
/// it point at the same value, instead of each holding a copy (a workspace's spec is
/// about 3 KB with its maps; at 100,000 workspaces the copy was 300 MB). Read through
/// `Deref`; read, written and described as the spec itself.
#[derive(Debug, PartialEq)]
pub struct Shared<T>(pub std::sync::Arc<T>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> From<T> for Shared<T> {
    fn from(value: T) -> Self {
        Shared(std::sync::Arc::new(value))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Shared<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Shared::from)
    }
}

impl<T: Serialize> Serialize for Shared<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<T: JsonSchema> JsonSchema for Shared<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// An environment variable: a literal `value`, or a reference to a key of an existing
/// Kubernetes Secret (`secretRef`). Secret values never live in git.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name, e.g. `DB_HOST`.
    pub name: String,
    /// Literal value. Quote numbers and booleans (`"5432"`, `"true"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Take the value from a key of a Secret in the project's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}

/// A key of a Kubernetes Secret in the project's namespace.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    pub name: String,
    /// Key inside the Secret's data.
    pub key: String,
}

/// Compute resources of a container, as in Kubernetes (`cpu: 500m`, `memory: 1Gi`,
/// `nvidia.com/gpu: "1"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    /// Minimum guaranteed resources.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
    /// Upper limits.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Quantity>,
}

/// A Kubernetes quantity, written as a string (`"500m"`, `"2Gi"`) or a plain number (`2`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Quantity {
    Text(String),
    Number(serde_json::Number),
}

impl Quantity {
    pub fn as_string(&self) -> String {
        match self {
            Quantity::Text(s) => s.clone(),
            Quantity::Number(n) => n.to_string(),
        }
    }
}

/// The four roles of Mage Pro, from most to least powerful.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Editor,
    Viewer,
}

/// A role granted to users and groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoleBinding {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// Kubernetes toleration, as in a Pod spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Toleration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<TolerationOperator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TolerationOperator {
    Exists,
    Equal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// The schema of each kind, generated from the types above (what `schemas/*.json` hold).
/// `apiVersion` and `kind` are pinned to constants so editors complete and check them.
pub fn schemas() -> Vec<(&'static str, serde_json::Value)> {
    /// Every integer gets the bounds of its Rust type, so a value that would not fit is a
    /// schema error at its line instead of a failed (or wrapped) conversion later.
    fn bounded(schema: schemars::Schema) -> serde_json::Value {
        let mut value = schema.to_value();
        let mut todo = vec![&mut value];
        while let Some(node) = todo.pop() {
            match node {
                serde_json::Value::Object(object) => {
                    let range = match object.get("format").and_then(|f| f.as_str()) {
                        Some("int32") => Some((i64::from(i32::MIN), i64::from(i32::MAX))),
                        Some("int64") => Some((i64::MIN, i64::MAX)),
                        Some("uint32") => Some((0, i64::from(u32::MAX))),
                        Some("uint64" | "uint") => Some((0, i64::MAX)),
                        Some("uint16") => Some((0, i64::from(u16::MAX))),
                        Some("uint8") => Some((0, i64::from(u8::MAX))),
                        _ => None,
                    };
                    if let Some((min, max)) = range {
                        object.entry("minimum").or_insert(min.into());
                        object.entry("maximum").or_insert(max.into());
                    }
                    todo.extend(object.values_mut());
                }
                serde_json::Value::Array(items) => todo.extend(items.iter_mut()),
                _ => {}
            }
        }
        value
    }

    fn finish(kind: &str, schema: schemars::Schema) -> serde_json::Value {
        let mut value = bounded(schema);
        if let Some(object) = value.as_object_mut() {
            object.insert("title".into(), format!("berth {kind}").into());
            if let Some(props) = object.get_mut("properties").and_then(|p| p.as_object_mut()) {
                props.insert(
                    "apiVersion".into(),
                    serde_json::json!({"const": API_VERSION, "description": "Always `berth/v1alpha1`."}),
                );
                props.insert("kind".into(), serde_json::json!({"const": kind}));
            }
        }
        value
    }
    vec![
        (
            "project",
            finish("Project", schemars::schema_for!(ProjectDocument)),
        ),
        (
            "workspace",
            finish("Workspace", schemars::schema_for!(WorkspaceDocument)),
        ),
        (
            "policy",
            finish("Policy", schemars::schema_for!(PolicyDocument)),
        ),
        (
            "mage-executor-config",
            bounded(schemars::schema_for!(MageExecutorConfig)),
        ),
    ]
}
