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
use serde_json::{Value, json};
use std::collections::BTreeMap;
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
    /// Who signed its commit, when berth checks signatures (`--verify-commits`): the
    /// principals of the allowed key, and the key's type and fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    /// `invalid` (the revision does not validate), `unverified` (its commit is not signed by
    /// an allowed key), `apply`, `plan`, `timeout` or `fetch`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub message: String,
    pub since: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceStatus {
    pub namespace: String,
    pub name: String,
    /// The workspace's project and environment (from its StatefulSet's labels).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub project: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub environment: String,
    /// `ready`, `starting`, `restarting`, `halted` (a rollout stopped at it), `suspended`
    /// or `failed`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// An environment change waiting (`manual`: for `berth restart`; `when-idle`), and
    /// which variables changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_restart: Option<String>,
    /// What applying does not fix, from the plan: a Secret the workspace references that
    /// does not exist, or lacks a key (names only, never values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The last time the reconciler put back what someone changed in the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftInfo {
    pub at: String,
    /// The revision whose state was restored.
    pub revision: String,
    /// The objects that were changed back (`Kind/namespace/name`).
    pub objects: Vec<String>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drift: Option<DriftInfo>,
    /// Rollouts of restarts in progress, paused or halted, per project.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<crate::plan::rollout::Rollout>,
    #[serde(default)]
    pub workspaces: Vec<WorkspaceStatus>,
    /// Ready workspaces left out of the status ConfigMap so that it fits (see
    /// [`MAX_WRITTEN_BYTES`]); the status page and /api/status list every one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_workspaces: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The most the status document may take in its ConfigMap: a ConfigMap holds at most
/// 1 MiB, and at 10,000 workspaces the whole status is about 3 MB.
pub const MAX_WRITTEN_BYTES: usize = 768 * 1024;

/// Objects named in a written drift record, and bytes of a written error message.
const MAX_WRITTEN_DRIFT_OBJECTS: usize = 100;
const MAX_WRITTEN_MESSAGE_BYTES: usize = 64 * 1024;

impl Status {
    /// The status as its ConfigMap holds it: compact JSON of at most
    /// [`MAX_WRITTEN_BYTES`]. When the whole status is larger, the workspaces that are not
    /// ready are kept first, then ready ones as long as they fit, in their order; long
    /// drift records and error messages are cut, saying how much was left out.
    pub fn written(&self) -> Result<String> {
        let whole = serde_json::to_string(self)?;
        if whole.len() <= MAX_WRITTEN_BYTES {
            return Ok(whole);
        }
        let mut cut = Status {
            workspaces: Vec::new(),
            ..self.clone()
        };
        if let Some(drift) = &mut cut.last_drift
            && drift.objects.len() > MAX_WRITTEN_DRIFT_OBJECTS
        {
            let more = drift.objects.len() - MAX_WRITTEN_DRIFT_OBJECTS;
            drift.objects.truncate(MAX_WRITTEN_DRIFT_OBJECTS);
            drift.objects.push(format!("… and {more} more"));
        }
        if let Some(error) = &mut cut.error
            && error.message.len() > MAX_WRITTEN_MESSAGE_BYTES
        {
            let mut end = MAX_WRITTEN_MESSAGE_BYTES;
            while !error.message.is_char_boundary(end) {
                end -= 1;
            }
            error.message.truncate(end);
            error
                .message
                .push_str(" … (cut; the status page has all of it)");
        }
        // Room for the count of omitted workspaces, too.
        let mut room = MAX_WRITTEN_BYTES.saturating_sub(serde_json::to_string(&cut)?.len() + 64);
        let mut keep = vec![false; self.workspaces.len()];
        let not_ready_first = (0..self.workspaces.len())
            .filter(|&i| self.workspaces[i].state != "ready")
            .chain((0..self.workspaces.len()).filter(|&i| self.workspaces[i].state == "ready"));
        for i in not_ready_first {
            let len = serde_json::to_string(&self.workspaces[i])?.len() + 1;
            if len > room {
                break;
            }
            room -= len;
            keep[i] = true;
        }
        cut.workspaces = self
            .workspaces
            .iter()
            .zip(&keep)
            .filter(|(_, kept)| **kept)
            .map(|(w, _)| w.clone())
            .collect();
        cut.omitted_workspaces = self.workspaces.len() - cut.workspaces.len();
        Ok(serde_json::to_string(&cut)?)
    }
}

/// Fill in what a workspace's state does not say, from the plan and its desired objects:
/// project and environment (the StatefulSet's `berth/project` and `berth/environment`
/// labels), the plan's warnings about the workspace (`workspace <ns>/<name>: …`), and the
/// variables a pending restart waits to apply.
pub fn annotate(workspaces: &mut [WorkspaceStatus], desired: &[Value], plan: &crate::plan::Plan) {
    // StatefulSets, warnings and restarts by workspace, each read once: a scan of all of
    // them per workspace is quadratic (minutes at 10,000 workspaces).
    type Workspace<'a> = (&'a str, &'a str);
    let mut stateful_sets: BTreeMap<Workspace, &Value> = BTreeMap::new();
    for o in desired {
        if o.get("kind").and_then(Value::as_str) != Some("StatefulSet") {
            continue;
        }
        let namespace = o.pointer("/metadata/namespace").and_then(Value::as_str);
        if let (Some(namespace), Some(name)) = (
            namespace,
            o.pointer("/metadata/name").and_then(Value::as_str),
        ) {
            stateful_sets.entry((namespace, name)).or_insert(o);
        }
    }
    let mut warnings: BTreeMap<Workspace, Vec<&String>> = BTreeMap::new();
    for warning in &plan.warnings {
        if let Some(workspace) = crate::plan::output::warning_workspace(warning) {
            warnings.entry(workspace).or_default().push(warning);
        }
    }
    let mut restarts: BTreeMap<Workspace, &crate::plan::Restart> = BTreeMap::new();
    for r in &plan.restarts {
        restarts
            .entry((r.namespace.as_str(), r.workspace.as_str()))
            .or_insert(r);
    }
    for w in workspaces.iter_mut() {
        let workspace = (w.namespace.as_str(), w.name.as_str());
        let sts = stateful_sets.get(&workspace).copied();
        let label = |key: &str| {
            sts.and_then(|o| o.pointer("/metadata/labels"))
                .and_then(|l| l.get(key))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let project = label(crate::render::PROJECT_LABEL);
        let environment = label("berth/environment");
        let found: Vec<String> = warnings
            .get(&workspace)
            .into_iter()
            .flatten()
            .filter_map(|text| text.split_once(": ").map(|(_, what)| what))
            // One space between words, however the message was wrapped.
            .map(|what| what.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        let restart = restarts.get(&workspace).copied();
        w.project = project;
        w.environment = environment;
        w.warnings = found;
        if let (Some(pending), Some(r)) = (&mut w.pending_restart, restart)
            && !r.variables.is_empty()
        {
            let names: Vec<&str> = r.variables.iter().map(|v| v.name.as_str()).collect();
            pending.push_str(&format!("; environment changed: {}", names.join(", ")));
        }
    }
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
                if let Some(signer) = &r.signer {
                    let _ = writeln!(out, "signed by:    {signer}");
                }
            }
            None => {
                let _ = writeln!(out, "last applied: none yet");
            }
        }
        if let Some(r) = &self.last_seen {
            let _ = writeln!(out, "last seen:    {} {}", short(&r.revision), r.summary);
        }
        if let Some(d) = &self.last_drift {
            let _ = writeln!(
                out,
                "last drift:   healed {} (at {}, revision {})",
                d.objects.join(", "),
                d.at,
                short(&d.revision)
            );
        }
        for r in &self.rollouts {
            let _ = writeln!(out, "rollout:      {}", r.describe());
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
        self.write_workspaces(&mut out);
        if self.omitted_workspaces > 0 {
            let _ = writeln!(
                out,
                "… and {} more workspaces, left out (ready ones first) to keep the status \
                 ConfigMap under its size limit: the status page and /api/status list all",
                self.omitted_workspaces
            );
        }
        out
    }

    /// The table of workspaces of [`Status::to_text`]: name, state and details.
    fn write_workspaces(&self, out: &mut String) {
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
                details.extend(w.warnings.iter().cloned());
                let _ = writeln!(
                    out,
                    "{:width$}  {:10}  {}",
                    format!("{}/{}", w.namespace, w.name),
                    w.state,
                    details.join("; ")
                );
            }
        }
    }
}

/// Write the status ConfigMap (server-side apply, its own field manager).
pub async fn write(cluster: &Cluster, set: &ApplySet, status: &Status) -> Result<()> {
    let text = status.written()?;
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

    /// 10,000 workspaces (about 2 MB of status) with some failing and a drift of every
    /// object: the written status fits its ConfigMap, keeps every failing workspace in
    /// order, says how many it left out, and reads back.
    #[test]
    fn the_written_status_fits_its_config_map_and_keeps_what_is_not_ready() {
        let workspaces: Vec<WorkspaceStatus> = (0..10_000)
            .map(|i| WorkspaceStatus {
                namespace: format!("project-{:03}", i / 50),
                name: format!("workspace-with-a-long-name-{i:05}"),
                project: format!("project-{:03}", i / 50),
                environment: "prod".into(),
                state: if i % 97 == 0 { "failed" } else { "ready" }.into(),
                reason: (i % 97 == 0).then(|| "x".repeat(200)),
                ..Default::default()
            })
            .collect();
        let status = Status {
            source: "git".into(),
            writer: "berth-0".into(),
            last_drift: Some(DriftInfo {
                at: "now".into(),
                revision: "abc".into(),
                objects: (0..38_000).map(|i| format!("ConfigMap/ns/o-{i}")).collect(),
            }),
            workspaces: workspaces.clone(),
            ..Default::default()
        };
        let text = status.written().expect("serialisable");
        assert!(text.len() <= MAX_WRITTEN_BYTES, "{} bytes", text.len());
        let read: Status = serde_json::from_str(&text).expect("reads back");
        let failed = |list: &[WorkspaceStatus]| -> Vec<String> {
            list.iter()
                .filter(|w| w.state == "failed")
                .map(|w| w.name.clone())
                .collect()
        };
        assert_eq!(failed(&read.workspaces), failed(&workspaces));
        assert!(read.workspaces.len() > 1_000, "{}", read.workspaces.len());
        assert_eq!(read.workspaces.len() + read.omitted_workspaces, 10_000);
        let drift = read.last_drift.as_ref().expect("drift kept");
        assert_eq!(drift.objects.len(), MAX_WRITTEN_DRIFT_OBJECTS + 1);
        assert!(
            read.to_text()
                .contains(&format!("{} more workspaces", read.omitted_workspaces))
        );
        // A small status is written whole.
        let small = Status {
            workspaces: workspaces[..10].to_vec(),
            ..Default::default()
        };
        assert_eq!(small.written().ok(), serde_json::to_string(&small).ok());
    }

    #[test]
    fn workspaces_learn_their_project_warnings_and_what_a_pending_restart_waits_for() {
        use crate::plan::{Plan, Restart, VarChange};
        let sts = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"namespace": "a", "name": "etl",
                "labels": {"berth/project": "analytics", "berth/environment": "dev"}},
        });
        let plan = Plan {
            warnings: vec![
                "workspace a/etl: Secret creds does not exist (variable DB_PASSWORD); the workspace cannot start until it does".into(),
                "workspace a/other: Secret x does not exist (variable Y)".into(),
            ],
            restarts: vec![Restart {
                namespace: "a".into(),
                workspace: "etl".into(),
                variables: vec![VarChange {
                    name: "LOG_LEVEL".into(),
                    change: "changed",
                    source: "workspace env".into(),
                }],
                pending: Some("manual: run `berth restart` to apply".into()),
            }],
            ..Plan::default()
        };
        let mut list = vec![WorkspaceStatus {
            namespace: "a".into(),
            name: "etl".into(),
            state: "ready".into(),
            pending_restart: Some("manual: run `berth restart` to apply".into()),
            ..Default::default()
        }];
        annotate(&mut list, &[sts], &plan);
        let w = &list[0];
        assert_eq!(
            (w.project.as_str(), w.environment.as_str()),
            ("analytics", "dev")
        );
        assert_eq!(
            w.warnings,
            [
                "Secret creds does not exist (variable DB_PASSWORD); the workspace cannot start until it does"
            ]
        );
        assert_eq!(
            w.pending_restart.as_deref(),
            Some("manual: run `berth restart` to apply; environment changed: LOG_LEVEL")
        );
    }

    #[test]
    fn text_shows_revisions_error_and_workspaces() {
        let status = Status {
            source: "file:///repo (branch main)".into(),
            writer: "pod-a".into(),
            omitted_workspaces: 0,
            rollouts: Vec::new(),
            last_applied: Some(RevisionInfo {
                revision: "0123456789abcdef".into(),
                summary: "add etl".into(),
                at: "2025-01-01T00:00:00Z".into(),
                signer: Some("alice@example.com (ssh-ed25519 SHA256:abc)".into()),
            }),
            last_seen: Some(RevisionInfo {
                revision: "fedcba9876543210".into(),
                summary: "break it".into(),
                at: "2025-01-01T00:01:00Z".into(),
                signer: None,
            }),
            error: Some(ErrorInfo {
                kind: "invalid".into(),
                revision: Some("fedcba9876543210".into()),
                message: "ws.yaml:3:1: error: unknown field".into(),
                since: "2025-01-01T00:01:00Z".into(),
            }),
            last_drift: None,
            workspaces: vec![WorkspaceStatus {
                namespace: "a".into(),
                name: "etl".into(),
                state: "suspended".into(),
                reason: Some("idle since 2025-01-01T00:00:00Z".into()),
                ..Default::default()
            }],
        };
        let text = status.to_text();
        assert!(
            text.contains("last applied: 0123456789ab add etl"),
            "{text}"
        );
        assert!(
            text.contains("signed by:    alice@example.com (ssh-ed25519 SHA256:abc)\n"),
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
