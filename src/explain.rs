//! `berth explain`: where every effective value comes from — for a k8s block, each executor
//! field and the layer (block, project, template, policy, env var, hardcoded default) with
//! file and line; for a workspace, each environment variable and its source.

use crate::mage::executor::{Namespace, TRIGGER_NAME, job_name, job_name_prefix};
use crate::resolve::executor::{
    BlockExecutor, LONGEST_BLOCK_RUN_ID, MAX_JOB_NAME, Origin, Run, precedence_text,
};
use crate::resolve::{Resolved, VarValue};
use anyhow::{Result, bail};
use serde_json::Value;
use std::fmt::Write;

/// Explain `PROJECT/PIPELINE/BLOCK` (a k8s block) or `WORKSPACE`.
pub fn explain(resolved: &Resolved, target: &str) -> Result<String> {
    let parts: Vec<&str> = target.split('/').collect();
    match parts.as_slice() {
        [project, pipeline, block] => {
            let Some(found) = resolved
                .executors
                .iter()
                .find(|b| b.project == *project && b.pipeline == *pipeline && b.block == *block)
            else {
                let known: Vec<String> = resolved
                    .executors
                    .iter()
                    .map(|b| format!("{}/{}/{}", b.project, b.pipeline, b.block))
                    .collect();
                bail!(
                    "no k8s block `{target}`; k8s blocks: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                );
            };
            Ok(block_text(found, resolved))
        }
        [workspace] => workspace_text(resolved, workspace),
        _ => bail!("explain takes PROJECT/PIPELINE/BLOCK or WORKSPACE, not `{target}`"),
    }
}

/// One top-level key of the configuration a block loads: what `berth explain` prints, and
/// the layer it comes from. Mage merges layers top-level key by top-level key, so each
/// key comes whole from one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// JSON pointer of the key (`/resource_limits`).
    pub pointer: String,
    /// The key (`resource_limits`).
    pub field: String,
    pub value: Value,
    pub origin: Origin,
}

/// Every top-level key of a block's configuration, in one workspace's run (its template's
/// keys included) or, without a run, before any template.
pub fn block_rows(block: &BlockExecutor, run: Option<&Run>) -> Vec<Row> {
    let (origins, config) = match run {
        Some(run) => (&run.origins, &run.config),
        None => (&block.origins, &block.config),
    };
    origins
        .iter()
        .map(|(key, origin)| Row {
            pointer: format!("/{}", crate::load::yaml::escape_segment(key)),
            field: key.clone(),
            value: config.get(key).cloned().unwrap_or(Value::Null),
            origin: origin.clone(),
        })
        .collect()
}

fn block_text(block: &BlockExecutor, resolved: &Resolved) -> String {
    let mut out = format!(
        "k8s executor config of block `{}` in pipeline `{}` of project `{}`\n",
        block.block, block.pipeline, block.project
    );
    let policy = resolved
        .executor_policies
        .iter()
        .find(|p| p.project == block.project);
    match policy {
        Some(p) => {
            let _ = writeln!(out, "policy `{}`: enforce {}", p.policy, p.defaults.enforce);
        }
        None => out.push_str("no executor policy\n"),
    }
    let _ = writeln!(
        out,
        "precedence (highest first, per top-level key: Mage merges no deeper): {}",
        precedence_text(policy.map(|p| p.defaults.enforce))
    );
    out.push('\n');
    table(&mut out, &block_rows(block, None));
    if block.runs.is_empty() {
        out.push_str("\nno workspace of the project runs it\n");
    }
    // Workspaces whose runs read the same are shown once, together.
    let mut groups: Vec<(Vec<&str>, String)> = Vec::new();
    for run in &block.runs {
        let Some(ws) = resolved.workspaces.iter().find(|w| w.name == run.workspace) else {
            continue;
        };
        let text = run_text(block, run, ws);
        match groups.iter_mut().find(|(_, t)| *t == text) {
            Some((names, _)) => names.push(&ws.name),
            None => groups.push((vec![&ws.name], text)),
        }
    }
    for (names, text) in groups {
        let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
        let label = if names.len() == 1 {
            "workspace"
        } else {
            "workspaces"
        };
        let _ = writeln!(out, "\nin {label} {}:", names.join(", "));
        out.push_str(&text);
    }
    out
}

/// One run of a block: its template, its Job's name, namespace and main values.
fn run_text(block: &BlockExecutor, run: &Run, ws: &crate::resolve::ResolvedWorkspace) -> String {
    let mut out = String::new();
    match (&run.template, &run.unseen_template) {
        (Some(file), _) => {
            let _ = writeln!(out, "  K8S_CONFIG_FILE template: {file}");
            let rows: Vec<Row> = block_rows(block, Some(run))
                .into_iter()
                .filter(|r| r.origin.kind == crate::resolve::executor::LayerKind::Template)
                .collect();
            for row in rows {
                let _ = writeln!(out, "    {}  from {}", row.field, row.origin);
            }
        }
        (None, Some(value)) => {
            let _ = writeln!(
                out,
                "  K8S_CONFIG_FILE `{value}`: not in the repository, left out"
            );
        }
        (None, None) => {}
    }
    let pod = crate::render::server_pod(ws);
    let job = match crate::render::executor::job(block, run, ws, &pod) {
        Ok(job) => job,
        Err(crash) => {
            let _ = writeln!(out, "  Mage fails: {}", crash.error);
            return out;
        }
    };
    let namespace = match &run.namespace {
        Namespace::Known(ns) => ns.clone(),
        Namespace::Templated(t) => format!("{t} (rendered by Mage at run time)"),
    };
    let name = job["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let _ = writeln!(out, "  job: {name} in namespace {namespace}");
    if let Some(longest) = longest_name(block, run) {
        let _ = writeln!(out, "    {longest}");
    }
    let spec = &job["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    for (label, value) in [
        ("service account", &spec["serviceAccountName"]),
        ("container", &container["name"]),
        ("image", &container["image"]),
        ("resources", &container["resources"]),
        ("node selector", &spec["nodeSelector"]),
        ("tolerations", &spec["tolerations"]),
        ("backoff limit", &job["spec"]["backoffLimit"]),
        ("labels", &job["metadata"]["labels"]),
    ] {
        if value.is_null() {
            return out;
        }
        let shown = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let _ = writeln!(out, "  {label:<15}  {shown}");
    }
    out
}

/// The longest Job name the block's triggers give, which validate checked.
fn longest_name(block: &BlockExecutor, run: &Run) -> Option<String> {
    let prefix = run.loaded.job_name_prefix.as_ref();
    let uses_trigger = prefix
        .and_then(Value::as_str)
        .is_some_and(|p| p.contains(TRIGGER_NAME));
    let triggers: Vec<&str> = if uses_trigger {
        block.triggers.iter().map(String::as_str).collect()
    } else {
        vec![""]
    };
    let (name, trigger) = triggers
        .iter()
        .filter_map(|t| {
            let prefix = job_name_prefix(prefix, t).ok()?;
            Some((job_name(&run.env, &prefix, LONGEST_BLOCK_RUN_ID), *t))
        })
        .max_by_key(|(name, _)| name.len())?;
    let from = if trigger.is_empty() {
        String::new()
    } else {
        format!("; trigger `{trigger}`")
    };
    Some(format!(
        "longest: {name} ({} of at most {MAX_JOB_NAME} characters{from})",
        name.len()
    ))
}

fn table(out: &mut String, rows: &[Row]) {
    let rows: Vec<(String, String, String)> = rows
        .iter()
        .map(|row| {
            let value = match &row.value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (row.field.clone(), value, row.origin.to_string())
        })
        .collect();
    let width = |f: fn(&(String, String, String)) -> usize| rows.iter().map(f).max().unwrap_or(0);
    let (w0, w1) = (width(|r| r.0.len()), width(|r| r.1.chars().count().min(48)));
    for (field, value, origin) in &rows {
        let shown: String = if value.chars().count() > 48 {
            value.chars().take(45).collect::<String>() + "..."
        } else {
            value.clone()
        };
        let _ = writeln!(out, "  {field:<w0$}  {shown:<w1$}  {origin}");
    }
}

fn workspace_text(resolved: &Resolved, name: &str) -> Result<String> {
    let Some(ws) = resolved.workspaces.iter().find(|w| w.name == name) else {
        let known: Vec<&str> = resolved
            .workspaces
            .iter()
            .map(|w| w.name.as_str())
            .collect();
        bail!("no workspace `{name}`; workspaces: {}", known.join(", "));
    };
    let mut out = format!(
        "environment of workspace `{}` (project `{}`, namespace `{}`, environment `{}`)\n\n",
        ws.name,
        ws.project,
        ws.namespace,
        ws.environment.as_deref().unwrap_or("-")
    );
    let rows: Vec<(String, String, String)> = ws
        .env
        .iter()
        .map(|v| {
            let value = match &v.value {
                VarValue::Literal(text) => text.clone(),
                VarValue::Secret(s) => format!("<secret {}/{}>", s.name, s.key),
            };
            (v.name.clone(), value, v.source.to_string())
        })
        .collect();
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let w1 = rows
        .iter()
        .map(|r| r.1.chars().count().min(40))
        .max()
        .unwrap_or(0);
    for (name, value, source) in rows {
        let shown: String = if value.chars().count() > 40 {
            value.chars().take(37).collect::<String>() + "..."
        } else {
            value
        };
        let _ = writeln!(out, "  {name:<w0$}  {shown:<w1$}  {source}");
    }
    // Project variables the workspace does not get, and why.
    if let Some(project) = resolved.projects.iter().find(|p| p.name == ws.project) {
        let spec = &project.spec;
        let missing: Vec<String> = spec
            .env
            .iter()
            .filter(|v| !ws.env.iter().any(|e| e.name == v.name))
            .map(|v| {
                let why = if crate::resolve::is_project_setting(&v.name) {
                    "a setting of the project, not a variable to inherit".to_string()
                } else if v.secret_ref.is_some() && !spec.shares_secrets() {
                    "a secret, and the project does not share secrets (shareSecretsAcrossWorkspaces)".to_string()
                } else {
                    let environment = ws.environment.as_deref().unwrap_or("-");
                    format!("not in userDefinedVars, and no byEnvironment rule of `{environment}` matches")
                };
                format!("  {:<w0$}  {why}", v.name)
            })
            .collect();
        if !missing.is_empty() {
            let _ = writeln!(out, "\nnot inherited from project `{}`:", project.name);
            for line in missing {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    Ok(out)
}
