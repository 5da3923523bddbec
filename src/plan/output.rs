//! A plan for people (text, with colour on a terminal), for pull requests (markdown) and for
//! programs (JSON). None of them ever holds a secret value: plans carry variable names only.

use super::{Action, Plan};
use owo_colors::OwoColorize;
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Markdown,
    Json,
}

pub fn render(plan: &Plan, format: Format, title: &str, color: bool) -> String {
    match format {
        Format::Text => text(plan, title, color),
        Format::Markdown => markdown(plan, title),
        Format::Json => json(plan),
    }
}

fn summary(plan: &Plan) -> String {
    let pending = plan.restarts.iter().filter(|r| r.pending.is_some()).count();
    let mut s = format!(
        "{} to create, {} to update, {} to delete, {} to restart",
        plan.count(Action::Create),
        plan.count(Action::Update),
        plan.count(Action::Delete),
        plan.restarts.len() - pending,
    );
    if pending > 0 {
        let _ = write!(s, ", {pending} restart pending");
    }
    let _ = write!(s, ", {} unchanged", plan.unchanged);
    s
}

fn variables(restart: &super::Restart) -> String {
    restart
        .variables
        .iter()
        .map(|v| format!("{} ({}, {})", v.name, v.change, v.source))
        .collect::<Vec<_>>()
        .join("; ")
}

fn text(plan: &Plan, title: &str, color: bool) -> String {
    let paint = |s: String, f: fn(&String) -> String| if color { f(&s) } else { s };
    let mut out = format!("{title}: {}\n", summary(plan));
    if !plan.has_changes() && plan.restarts.is_empty() {
        out.push_str("No changes. The cluster matches git.\n");
        return out;
    }
    out.push('\n');
    for change in &plan.changes {
        let line = match change.action {
            Action::Create => paint(format!("+ create  {}", change.object), |s| {
                s.green().to_string()
            }),
            Action::Update => paint(format!("~ update  {}", change.object), |s| {
                s.yellow().to_string()
            }),
            Action::Delete => paint(format!("- delete  {}", change.object), |s| {
                s.red().to_string()
            }),
        };
        let _ = writeln!(out, "{line}  ({})", change.reason);
        if !change.fields.is_empty() {
            let _ = writeln!(out, "          fields: {}", change.fields.join(", "));
        }
        for line in change.diff.lines().skip(2) {
            let line = match line.chars().next() {
                Some('+') => paint(line.to_string(), |s| s.green().to_string()),
                Some('-') => paint(line.to_string(), |s| s.red().to_string()),
                Some('@') => paint(line.to_string(), |s| s.cyan().to_string()),
                _ => line.to_string(),
            };
            let _ = writeln!(out, "          {line}");
        }
    }
    if !plan.restarts.is_empty() {
        out.push_str("\nRestarts (the workspace's environment changed):\n");
        for r in &plan.restarts {
            let verb = if r.pending.is_some() {
                "restart pending"
            } else {
                "restart"
            };
            let line = paint(
                format!("↻ {verb}  {}/{}", r.namespace, r.workspace),
                |s| s.magenta().to_string(),
            );
            let _ = writeln!(out, "{line}: {}", variables(r));
            if let Some(p) = &r.pending {
                let _ = writeln!(out, "          {p}");
            }
        }
    }
    out
}

/// Object tables longer than this are folded in markdown.
const FOLD_OBJECTS_OVER: usize = 30;

fn markdown(plan: &Plan, title: &str) -> String {
    let mut out = format!("### {title}\n\n**{}**\n\n", summary(plan));
    if !plan.has_changes() && plan.restarts.is_empty() {
        out.push_str("No changes. The cluster matches git.\n");
        return out;
    }
    if !plan.restarts.is_empty() {
        out.push_str("#### Workspaces restarted by this change\n\n| workspace | variables | |\n|---|---|---|\n");
        for r in &plan.restarts {
            let vars = r
                .variables
                .iter()
                .map(|v| format!("`{}` ({}, {})", v.name, v.change, v.source))
                .collect::<Vec<_>>()
                .join("<br>");
            let when = r
                .pending
                .as_deref()
                .map_or("restarts on apply".to_string(), |p| {
                    format!("pending — {p}")
                });
            let _ = writeln!(
                out,
                "| `{}/{}` | {vars} | {when} |",
                r.namespace, r.workspace
            );
        }
        out.push('\n');
    }
    if !plan.changes.is_empty() {
        // Long tables fold away so that restarts and diffs stay in sight on the PR page.
        let fold = plan.changes.len() > FOLD_OBJECTS_OVER;
        if fold {
            let _ = write!(
                out,
                "<details><summary>Objects ({})</summary>\n\n",
                plan.changes.len()
            );
        } else {
            out.push_str("#### Objects\n\n");
        }
        out.push_str("| | object | reason | fields |\n|---|---|---|---|\n");
        for c in &plan.changes {
            let icon = match c.action {
                Action::Create => "➕ create",
                Action::Update => "✏️ update",
                Action::Delete => "🗑️ delete",
            };
            let fields = c
                .fields
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(out, "| {icon} | `{}` | {} | {fields} |", c.object, c.reason);
        }
        if fold {
            out.push_str("\n</details>\n");
        }
        let updates: Vec<_> = plan.changes.iter().filter(|c| !c.diff.is_empty()).collect();
        if !updates.is_empty() {
            out.push_str("\n#### Diffs\n");
            for c in updates {
                let _ = write!(
                    out,
                    "\n<details><summary><code>{}</code></summary>\n\n```diff\n{}```\n\n</details>\n",
                    c.object, c.diff
                );
            }
        }
    }
    out
}

fn json(plan: &Plan) -> String {
    let summary = serde_json::json!({
        "create": plan.count(Action::Create),
        "update": plan.count(Action::Update),
        "delete": plan.count(Action::Delete),
        "restart": plan.restarts.len(),
        "unchanged": plan.unchanged,
    });
    let value = serde_json::json!({
        "summary": summary,
        "changes": plan.changes,
        "restarts": plan.restarts,
    });
    serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
}
