//! A plan for people (text, with colour on a terminal), for pull requests (markdown), for
//! programs (JSON) and for CI's annotations (GitHub workflow commands, SARIF). None of them
//! ever holds a secret value: plans carry variable names only.

use super::delta::{self, Resources};
use super::{Action, Plan};
use crate::load::diagnostic::{self, Context, Diagnostic, Severity};
use crate::load::{Files, Repository};
use owo_colors::OwoColorize;
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people (colour on a terminal).
    Text,
    /// For a pull-request comment.
    Markdown,
    /// For programs.
    Json,
    /// GitHub Actions annotations at their lines: the repository's errors and warnings and
    /// what cannot be applied; the summary as one notice; the markdown plan in the job
    /// summary ($GITHUB_STEP_SUMMARY).
    Github,
    /// SARIF 2.1.0 of the same findings, for code scanning; the summary and resource delta
    /// as the run's properties.
    Sarif,
}

impl Format {
    /// The diagnostics format of the formats that report findings instead of the plan.
    pub fn findings(self) -> Option<diagnostic::Format> {
        match self {
            Format::Github => Some(diagnostic::Format::Github),
            Format::Sarif => Some(diagnostic::Format::Sarif),
            Format::Text | Format::Markdown | Format::Json => None,
        }
    }
}

/// The plan in `format`. GitHub and SARIF carry only the plan's own findings here, placed
/// nowhere; [`findings`] places them in the repository, for [`annotate`].
pub fn render(plan: &Plan, format: Format, title: &str, color: bool) -> String {
    match format {
        Format::Text => text(plan, title, color),
        Format::Markdown => markdown(plan, title),
        Format::Json => json(plan),
        Format::Github | Format::Sarif => annotate(
            Some(plan),
            &findings(plan, None),
            format,
            title,
            &Files::default(),
            "",
        ),
    }
}

/// Findings (the repository's diagnostics and the plan's [`findings`]) as GitHub workflow
/// commands or SARIF, with paths under `prefix` (the berth repository's folder in its git
/// repository). The plan itself is not a finding: its summary and resource delta go with
/// them as one notice (GitHub) or the run's properties (SARIF), and each changed object
/// is left to the markdown plan (a pull-request comment, or the job summary). Other
/// formats print the findings as text.
pub fn annotate(
    plan: Option<&Plan>,
    found: &[Diagnostic],
    format: Format,
    title: &str,
    files: &Files,
    prefix: &str,
) -> String {
    let mut ctx = Context {
        prefix,
        version: env!("CARGO_PKG_VERSION"),
        ..Context::default()
    };
    if let Some(plan) = plan {
        ctx.summary = Some((
            title,
            format!(
                "{}; resources: {}",
                summary(plan),
                plan.resources.total.describe()
            ),
        ));
        ctx.properties
            .insert("resources".into(), resources_json(&plan.resources));
    }
    let format = format.findings().unwrap_or_default();
    diagnostic::render(format, found, files, &ctx)
}

/// A plan's findings as diagnostics: each object that cannot be applied (an error), each
/// warning (a warning). With the repository, each is placed at the workspace it is about:
/// a problem at its field, a warning (`workspace <namespace>/<name>: …`) at the
/// workspace's name.
pub fn findings(plan: &Plan, repo: Option<&Repository>) -> Vec<Diagnostic> {
    // Workspaces by namespace and name (the first of each), looked up once per finding:
    // a scan per finding is quadratic (thousands of warnings, thousands of workspaces).
    let mut by_name = std::collections::HashMap::new();
    if let Some(repo) = repo {
        let namespaces: std::collections::HashMap<&str, &str> = repo
            .projects
            .iter()
            .rev()
            .map(|p| (p.doc.metadata.name.as_str(), p.doc.spec.namespace.as_str()))
            .collect();
        for w in &repo.workspaces {
            let namespace = namespaces.get(w.doc.spec.project.as_str()).copied();
            by_name
                .entry((namespace, w.doc.metadata.name.as_str()))
                .or_insert(w);
        }
    }
    let workspace = |namespace: Option<&str>, name: &str| by_name.get(&(namespace, name)).copied();
    let mut found = Vec::new();
    for (change, problem) in plan.problems() {
        let message = format!("{}: {}", change.object, problem.message);
        let placed = workspace(change.object.namespace.as_deref(), &change.object.name)
            .zip(problem.field.as_deref())
            .map(|(ws, field)| Diagnostic::error(&ws.file, ws.pos(field), field, &message));
        found.push(
            placed
                .unwrap_or_else(|| Diagnostic::general(Severity::Error, &message))
                .with_rule("cannot-apply"),
        );
    }
    for warning in &plan.warnings {
        let placed = warning_workspace(warning)
            .and_then(|(namespace, name)| workspace(Some(namespace), name))
            .map(|ws| {
                Diagnostic::warning(&ws.file, ws.pos("/metadata/name"), "", warning.as_str())
            });
        found.push(
            placed
                .unwrap_or_else(|| Diagnostic::general(Severity::Warning, warning.as_str()))
                .with_rule("plan-warning"),
        );
    }
    found
}

/// The workspace a plan warning is about, from its `workspace <namespace>/<name>: ` start.
pub fn warning_workspace(warning: &str) -> Option<(&str, &str)> {
    let (subject, _) = warning.strip_prefix("workspace ")?.split_once(": ")?;
    subject.split_once('/')
}

/// The resource delta as JSON: amounts in base units (millicores, bytes) and in words.
pub fn resources_json(delta: &delta::Delta) -> serde_json::Value {
    let one = |r: &Resources| {
        let mut value = serde_json::to_value(r).unwrap_or_default();
        value["summary"] = r.describe().into();
        value
    };
    serde_json::json!({
        "total": one(&delta.total),
        "projects": delta
            .projects
            .iter()
            .map(|(project, r)| (project.clone(), one(r)))
            .collect::<serde_json::Map<_, _>>(),
    })
}

/// The resource delta in one line, naming the project when only one changes.
fn resources_line(delta: &delta::Delta) -> String {
    let mut line = delta.total.describe();
    if delta.projects.len() == 1
        && let Some(project) = delta.projects.keys().next()
    {
        let _ = write!(line, " (project {project})");
    }
    line
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
    // Rarer actions only when they occur, so everyday summaries stay short.
    for (n, what) in [
        (plan.count(Action::Recreate), "to re-create"),
        (plan.count(Action::Release), "to keep (released)"),
        (pending, "restart pending"),
        (plan.problems().count(), "cannot be applied"),
    ] {
        if n > 0 {
            let _ = write!(s, ", {n} {what}");
        }
    }
    let _ = write!(s, ", {} unchanged", plan.unchanged);
    s
}

/// The word and symbol of an action, for text and markdown.
fn verb(action: Action) -> (&'static str, &'static str, &'static str) {
    match action {
        Action::Create => ("+", "create", "➕"),
        Action::Update => ("~", "update", "✏️"),
        Action::Recreate => ("±", "re-create", "♻️"),
        Action::Release => ("=", "keep", "📌"),
        Action::Delete => ("-", "delete", "🗑️"),
    }
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
    if plan.has_changes() {
        let _ = writeln!(out, "resources: {}", resources_line(&plan.resources));
        if plan.resources.projects.len() > 1 {
            for (project, r) in &plan.resources.projects {
                let _ = writeln!(out, "  {project}: {}", r.describe());
            }
        }
    }
    for warning in &plan.warnings {
        let _ = writeln!(
            out,
            "{} {warning}",
            paint("warning:".into(), |s| s.yellow().bold().to_string())
        );
    }
    for rollout in &plan.rollouts {
        let _ = writeln!(out, "rollout: {}", rollout.describe());
    }
    if !plan.has_changes() && plan.restarts.is_empty() {
        out.push_str("No changes. The cluster matches git.\n");
        return out;
    }
    out.push('\n');
    for change in &plan.changes {
        let (symbol, word, _) = verb(change.action);
        let line = format!("{symbol} {word}  {}", change.object);
        let line = match change.action {
            Action::Create => paint(line, |s| s.green().to_string()),
            Action::Update | Action::Release => paint(line, |s| s.yellow().to_string()),
            Action::Recreate | Action::Delete => paint(line, |s| s.red().to_string()),
        };
        let _ = writeln!(out, "{line}  ({})", change.reason);
        if let Some(problem) = &change.problem {
            let _ = writeln!(
                out,
                "          {} {}",
                paint("cannot apply:".into(), |s| s.red().bold().to_string()),
                problem.message
            );
        }
        for note in &change.notes {
            let _ = writeln!(out, "          note: {note}");
        }
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

/// Kept in one piece: the pull-request comment from top to bottom, in the order it
/// reads.
fn markdown(plan: &Plan, title: &str) -> String {
    let mut out = format!("### {title}\n\n**{}**\n\n", summary(plan));
    if plan.has_changes() {
        let _ = writeln!(out, "**Resources:** {}\n", resources_line(&plan.resources));
        if plan.resources.projects.len() > 1 {
            out.push_str(&resources_table(&plan.resources));
        }
    }
    for warning in &plan.warnings {
        let _ = writeln!(out, "> ⚠️ {warning}\n");
    }
    for rollout in &plan.rollouts {
        let _ = writeln!(out, "> 🔁 **Rollout:** {}\n", rollout.describe());
    }
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
            let (_, word, icon) = verb(c.action);
            let fields = c
                .fields
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut reason = c.reason.clone();
            if let Some(problem) = &c.problem {
                let _ = write!(reason, "<br>**cannot apply:** {}", problem.message);
            }
            for note in &c.notes {
                let _ = write!(reason, "<br>{note}");
            }
            let _ = writeln!(
                out,
                "| {icon} {word} | `{}` | {reason} | {fields} |",
                c.object
            );
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

/// Per project and in total, one column per resource.
fn resources_table(delta: &delta::Delta) -> String {
    let mut out = String::from(
        "| project | workspaces | CPU requested | CPU limit | memory requested | memory limit | GPUs | storage |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let signed = |n: i64, show: fn(i64) -> String| match n {
        0 => "0".to_string(),
        n if n > 0 => format!("+{}", show(n)),
        n => format!("-{}", show(n.saturating_abs())),
    };
    let count: fn(i64) -> String = |n| n.to_string();
    let rows = delta
        .projects
        .iter()
        .map(|(p, r)| (format!("`{p}`"), r))
        .chain(std::iter::once(("**total**".to_string(), &delta.total)));
    for (name, r) in rows {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} | {} |",
            signed(r.workspaces, count),
            signed(r.cpu_requests_millicores, delta::cpu),
            signed(r.cpu_limits_millicores, delta::cpu),
            signed(r.memory_requests_bytes, delta::bytes),
            signed(r.memory_limits_bytes, delta::bytes),
            signed(r.gpus, count),
            signed(r.storage_bytes, delta::bytes),
        );
    }
    out.push('\n');
    out
}

fn json(plan: &Plan) -> String {
    let summary = serde_json::json!({
        "create": plan.count(Action::Create),
        "update": plan.count(Action::Update),
        "recreate": plan.count(Action::Recreate),
        "release": plan.count(Action::Release),
        "delete": plan.count(Action::Delete),
        "restart": plan.restarts.len(),
        "problems": plan.problems().count(),
        "unchanged": plan.unchanged,
    });
    let mut value = serde_json::json!({
        "summary": summary,
        "resources": resources_json(&plan.resources),
        "changes": plan.changes,
        "restarts": plan.restarts,
    });
    if !plan.warnings.is_empty() {
        value["warnings"] = serde_json::json!(plan.warnings);
    }
    if !plan.rollouts.is_empty() {
        value["rollouts"] = serde_json::json!(plan.rollouts);
    }
    serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
}
