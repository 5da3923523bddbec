//! What the reconciler reports, where people look: a status ConfigMap
//! (`<applyset>-status`, next to the ApplySet parent) read by `berth status`, and Kubernetes
//! Events on the ApplySet parent (`kubectl describe configmap <applyset>`). The ConfigMap
//! is written only when its content changes, so a quiet reconciler does not write.

use crate::cluster::Cluster;
use crate::cluster::applyset::ApplySet;
use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::fmt::Write as _;

/// The key of the status document in the ConfigMap's data.
pub const STATUS_KEY: &str = "status.json";
const FIELD_MANAGER: &str = "berth-status";

/// The name of the status ConfigMap of an ApplySet.
pub fn status_name(set: &ApplySet) -> String {
    let mut name = format!("{}-status", set.name);
    if name.len() > 253 {
        name.truncate(253);
    }
    name
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionInfo {
    pub revision: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
    /// When this revision was first applied (or seen).
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    /// `invalid` (the revision does not validate), `apply`, `plan` or `fetch`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub message: String,
    pub since: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceStatus {
    pub namespace: String,
    pub name: String,
    /// `ready`, `starting`, `restarting`, `suspended` or `failed`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// An environment change waiting (`manual`: for `berth restart`; `when-idle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_restart: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub source: String,
    /// The instance that wrote this (the leader).
    pub writer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied: Option<RevisionInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<RevisionInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    #[serde(default)]
    pub workspaces: Vec<WorkspaceStatus>,
}

pub fn now() -> String {
    Timestamp::now().to_string()
}

impl Status {
    /// Human-readable, for `berth status`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let short = |r: &str| r.chars().take(12).collect::<String>();
        let _ = writeln!(out, "source:       {}", self.source);
        let _ = writeln!(out, "written by:   {}", self.writer);
        match &self.last_applied {
            Some(r) => {
                let _ = writeln!(
                    out,
                    "last applied: {} {} (at {})",
                    short(&r.revision),
                    r.summary,
                    r.at
                );
            }
            None => {
                let _ = writeln!(out, "last applied: none yet");
            }
        }
        if let Some(r) = &self.last_seen {
            let _ = writeln!(out, "last seen:    {} {}", short(&r.revision), r.summary);
        }
        if let Some(e) = &self.error {
            let _ = writeln!(
                out,
                "error:        {}{} (since {})",
                e.kind,
                e.revision
                    .as_deref()
                    .map(|r| format!(" at {}", short(r)))
                    .unwrap_or_default(),
                e.since
            );
            for line in e.message.lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
        if !self.workspaces.is_empty() {
            let width = self
                .workspaces
                .iter()
                .map(|w| w.namespace.len() + w.name.len() + 1)
                .max()
                .unwrap_or(9)
                .max(9);
            let _ = writeln!(out, "\n{:width$}  {:10}  DETAILS", "WORKSPACE", "STATE");
            for w in &self.workspaces {
                let mut details: Vec<String> = w.reason.iter().cloned().collect();
                if let Some(p) = &w.pending_restart {
                    details.push(format!("restart pending ({p})"));
                }
                let _ = writeln!(
                    out,
                    "{:width$}  {:10}  {}",
                    format!("{}/{}", w.namespace, w.name),
                    w.state,
                    details.join("; ")
                );
            }
        }
        out
    }
}

/// Write the status ConfigMap (server-side apply, its own field manager).
pub async fn write(cluster: &Cluster, set: &ApplySet, status: &Status) -> Result<()> {
    let text = serde_json::to_string_pretty(status)?;
    let object = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": status_name(set),
            "namespace": set.namespace,
            "labels": {crate::render::MANAGED_BY: "berth", "berth/status-of": set.name},
        },
        "data": {STATUS_KEY: text},
    });
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &set.namespace);
    api.patch(
        &status_name(set),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .with_context(|| format!("writing status {}/{}", set.namespace, status_name(set)))?;
    Ok(())
}

/// Read the status ConfigMap; `None` when no reconciler has written one.
pub async fn read(cluster: &Cluster, set: &ApplySet) -> Result<Option<Status>> {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &set.namespace);
    let Some(cm) = api
        .get_opt(&status_name(set))
        .await
        .with_context(|| format!("reading status {}/{}", set.namespace, status_name(set)))?
    else {
        return Ok(None);
    };
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(STATUS_KEY))
        .with_context(|| format!("{} has no {STATUS_KEY}", status_name(set)))?;
    let status = serde_json::from_str(text)
        .with_context(|| format!("parsing {STATUS_KEY} of {}", status_name(set)))?;
    Ok(Some(status))
}

/// A Kubernetes Event on the ApplySet parent. `warning` selects type Warning.
pub async fn event(
    cluster: &Cluster,
    set: &ApplySet,
    instance: &str,
    warning: bool,
    reason: &str,
    message: &str,
) -> Result<()> {
    let now = Timestamp::now();
    let mut message = message.to_string();
    if message.len() > 1000 {
        let mut end = 1000;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", set.name)),
            namespace: Some(set.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
            name: Some(set.name.clone()),
            namespace: Some(set.namespace.clone()),
            ..Default::default()
        },
        reason: Some(reason.to_string()),
        message: Some(message),
        type_: Some(if warning { "Warning" } else { "Normal" }.to_string()),
        source: Some(EventSource {
            component: Some("berth".into()),
            host: None,
        }),
        reporting_component: Some("berth".into()),
        reporting_instance: Some(instance.to_string()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(cluster.client.clone(), &set.namespace);
    api.create(&PostParams::default(), &event)
        .await
        .with_context(|| format!("recording event {reason}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_shows_revisions_error_and_workspaces() {
        let status = Status {
            source: "file:///repo (branch main)".into(),
            writer: "pod-a".into(),
            last_applied: Some(RevisionInfo {
                revision: "0123456789abcdef".into(),
                summary: "add etl".into(),
                at: "2025-01-01T00:00:00Z".into(),
            }),
            last_seen: Some(RevisionInfo {
                revision: "fedcba9876543210".into(),
                summary: "break it".into(),
                at: "2025-01-01T00:01:00Z".into(),
            }),
            error: Some(ErrorInfo {
                kind: "invalid".into(),
                revision: Some("fedcba9876543210".into()),
                message: "ws.yaml:3:1: error: unknown field".into(),
                since: "2025-01-01T00:01:00Z".into(),
            }),
            workspaces: vec![WorkspaceStatus {
                namespace: "a".into(),
                name: "etl".into(),
                state: "suspended".into(),
                reason: Some("idle since 2025-01-01T00:00:00Z".into()),
                pending_restart: None,
            }],
        };
        let text = status.to_text();
        assert!(
            text.contains("last applied: 0123456789ab add etl"),
            "{text}"
        );
        assert!(
            text.contains("error:        invalid at fedcba987654"),
            "{text}"
        );
        assert!(
            text.contains("  ws.yaml:3:1: error: unknown field"),
            "{text}"
        );
        assert!(text.contains("a/etl      suspended   idle since"), "{text}");
        let back: Status = serde_json::from_str(&serde_json::to_string(&status).unwrap()).unwrap();
        assert_eq!(back, status);
    }
}
