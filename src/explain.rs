//! `berth explain`: where every effective value comes from — for a k8s block, each executor
//! field and the layer (block, project, template, policy, env var, hardcoded default) with
//! file and line; for a workspace, each environment variable and its source.

use crate::resolve::executor::{
    BlockExecutor, DEFAULT_JOB_NAME_PREFIX, LONGEST_BLOCK_RUN_ID, MAX_JOB_NAME, Origin,
    TRIGGER_NAME, job_name, precedence_text,
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

/// One effective executor setting of a block: what `berth explain` prints, and what
/// render puts in the block's Job (a test checks they agree for every key and layer).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// JSON pointer of the setting in the canonical config (`/resource_limits/cpu`).
    pub pointer: String,
    /// The same as a dotted path (`resource_limits.cpu`).
    pub field: String,
    pub value: Value,
    pub origin: Origin,
}

/// Every effective executor setting of a block, by field.
pub fn block_rows(block: &BlockExecutor) -> Vec<Row> {
    block
        .origins
        .iter()
        .map(|(pointer, origin)| Row {
            pointer: pointer.clone(),
            field: crate::load::diagnostic::field_path(pointer),
            value: block.value.pointer(pointer).cloned().unwrap_or(Value::Null),
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
        "precedence (highest first): {}",
        precedence_text(policy.map(|p| p.defaults.enforce))
    );
    out.push('\n');
    let rows: Vec<(String, String, String)> = block_rows(block)
        .into_iter()
        .map(|row| {
            let value = match row.value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (row.field, value, row.origin.to_string())
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
    let prefix = block
        .config
        .job_name_prefix
        .as_deref()
        .unwrap_or(DEFAULT_JOB_NAME_PREFIX);
    let _ = writeln!(out, "\njob name: mage-{prefix}-block-{{block_run_id}}");
    // The longest name Mage can make from it, which is what validate checked.
    let (longest, trigger) = if prefix.contains(TRIGGER_NAME) && !block.triggers.is_empty() {
        block
            .triggers
            .iter()
            .map(|t| {
                (
                    job_name(prefix, t, LONGEST_BLOCK_RUN_ID),
                    format!("trigger `{t}`"),
                )
            })
            .max_by_key(|(name, _)| name.len())
            .unwrap_or_default()
    } else if prefix.contains(TRIGGER_NAME) {
        (
            job_name(prefix, "", LONGEST_BLOCK_RUN_ID),
            "the pipeline declares no triggers, so {trigger_name} is empty".to_string(),
        )
    } else {
        (job_name(prefix, "", LONGEST_BLOCK_RUN_ID), String::new())
    };
    let _ = writeln!(
        out,
        "  longest: {longest} ({} of at most {MAX_JOB_NAME} characters{}{trigger})",
        longest.len(),
        if trigger.is_empty() { "" } else { "; " }
    );
    out
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
