//! Diagnostics: what is wrong, in which file, at which line and column, in which field.

use super::files::Files;
use super::yaml::Pos;
use owo_colors::OwoColorize as _;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::{self, Write as _};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// File path relative to the repository root.
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Byte offset in the file, for pointing at the source.
    #[serde(skip)]
    pub offset: usize,
    /// Dotted path of the field (`spec.env[2].name`); empty for the whole document.
    pub field: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// What kind of finding this is, for tools that group findings (SARIF's `ruleId`):
    /// one of [`RULES`]. `None`: `invalid` for errors, `warning` for warnings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'static str>,
}

impl Diagnostic {
    pub fn error(file: &str, pos: Pos, pointer: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: file.to_string(),
            line: pos.line,
            column: pos.column,
            offset: pos.offset,
            field: field_path(pointer),
            message: message.into(),
            help: None,
            rule: None,
        }
    }

    pub fn warning(file: &str, pos: Pos, pointer: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, pos, pointer, message)
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// A finding about no place in the repository (`file` empty, line and column 0).
    pub fn general(severity: Severity, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            ..Diagnostic::error("", Pos::default(), "", message)
        }
    }

    pub fn with_rule(mut self, rule: &'static str) -> Self {
        self.rule = Some(rule);
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Whether the finding points at a file.
    pub fn has_location(&self) -> bool {
        !self.file.is_empty()
    }

    /// [`Diagnostic::rule`], or the default of its severity.
    pub fn rule_id(&self) -> &'static str {
        self.rule.unwrap_or(match self.severity {
            Severity::Error => "invalid",
            Severity::Warning => "warning",
        })
    }
}

/// One line per diagnostic, `file:line:column: error: field: message` — the form editors
/// and CI annotators understand.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.has_location() {
            write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        }
        write!(f, "{severity}: ")?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, " (help: {help})")?;
        }
        Ok(())
    }
}

/// `/spec/env/2/name` → `spec.env[2].name`.
pub fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&segment);
        }
    }
    out
}

/// Diagnostics for people: each one's line (as [`Diagnostic`]'s `Display`, without the
/// help), the source line with the offending token underlined, and the help. The cost is
/// linear in the number of diagnostics plus the size of the files they name: each file's
/// lines are indexed once, and a long line is shown as a window around the position.
pub fn render_report(diagnostics: &[Diagnostic], files: &Files, color: bool) -> String {
    let mut indexes: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut out = String::new();
    for d in diagnostics {
        let (severity, paint): (&str, fn(&str) -> String) = match d.severity {
            Severity::Error => ("error", |s| s.red().bold().to_string()),
            Severity::Warning => ("warning", |s| s.yellow().bold().to_string()),
        };
        let severity = if color {
            paint(severity)
        } else {
            severity.into()
        };
        if d.has_location() {
            let _ = write!(out, "{}:{}:{}: ", d.file, d.line, d.column);
        }
        let _ = write!(out, "{severity}: ");
        if !d.field.is_empty() {
            let _ = write!(out, "{}: ", d.field);
        }
        let _ = writeln!(out, "{}", d.message);
        let mut pad = " ".to_string();
        if let Some(text) = files.text(&d.file) {
            let index = indexes
                .entry(d.file.as_str())
                .or_insert_with(|| super::lines::line_starts(text));
            if let Some((shown, caret, width)) = excerpt(text, index, d) {
                let number = d.line.to_string();
                pad = " ".repeat(number.len());
                let gutter = |s: &str| {
                    if color {
                        s.blue().bold().to_string()
                    } else {
                        s.to_string()
                    }
                };
                let marks = "^".repeat(width.max(1));
                let marks = if color { paint(&marks) } else { marks };
                let _ = writeln!(out, "{} {}", pad, gutter("|"));
                let _ = writeln!(out, "{} {} {shown}", gutter(&number), gutter("|"));
                let _ = writeln!(out, "{} {} {}{marks}", pad, gutter("|"), " ".repeat(caret));
            }
        }
        if let Some(help) = &d.help {
            let _ = writeln!(out, "{pad} = help: {help}");
        }
    }
    out
}

/// How diagnostics are printed: for people, or for the place CI shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// file:line:column, the source line and the help ([`render_report`]).
    #[default]
    Text,
    /// One JSON document ([`json`]).
    Json,
    /// GitHub Actions workflow commands, one annotation per finding ([`github`]).
    Github,
    /// SARIF 2.1.0, for code-scanning dashboards ([`sarif`]).
    Sarif,
}

impl Format {
    pub const NAMES: [&'static str; 4] = ["text", "json", "github", "sarif"];
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            "github" => Ok(Format::Github),
            "sarif" => Ok(Format::Sarif),
            other => Err(format!(
                "unknown format `{other}` (one of: {})",
                Format::NAMES.join(", ")
            )),
        }
    }
}

/// The kinds of finding ([`Diagnostic::rule`]), each with what it means: SARIF's rules.
pub const RULES: [(&str, &str); 5] = [
    (
        "invalid",
        "The repository does not validate; berth applies nothing from it.",
    ),
    (
        "warning",
        "Valid, but probably not what was meant (an unused key, a value a policy overrides).",
    ),
    (
        "cannot-apply",
        "An object of the plan cannot be applied as planned; the rest of the plan can.",
    ),
    (
        "plan-warning",
        "Applying will not fix this: e.g. a Secret a workspace references does not exist.",
    ),
    (
        "mass-prune",
        "Apply would refuse to delete more than half of what berth owns without --allow-mass-prune.",
    ),
];

/// What a machine-readable report carries besides its diagnostics.
#[derive(Debug, Clone, Default)]
pub struct Context<'a> {
    /// Put before every file path: the berth repository's folder inside its git repository
    /// (`deploy/berth/`, or empty), so that paths resolve from the git repository's root,
    /// where GitHub annotates and code scanning looks.
    pub prefix: &'a str,
    /// berth's version, for SARIF's tool.
    pub version: &'a str,
    /// A line about the whole run, e.g. a plan's summary, and its title: GitHub gets it as
    /// one notice, SARIF and JSON as a property.
    pub summary: Option<(&'a str, String)>,
    /// More about the run (JSON object members): SARIF's `run.properties`, JSON's top level.
    pub properties: serde_json::Map<String, serde_json::Value>,
}

impl Context<'_> {
    fn path(&self, file: &str) -> String {
        let prefix = self.prefix.trim_matches('/');
        if prefix.is_empty() {
            file.to_string()
        } else {
            format!("{prefix}/{file}")
        }
    }
}

/// Diagnostics as `format` prints them (text without colour: see [`render_report`]).
pub fn render(format: Format, diagnostics: &[Diagnostic], files: &Files, ctx: &Context) -> String {
    match format {
        Format::Text => render_report(diagnostics, files, false),
        Format::Json => json(diagnostics, ctx),
        Format::Github => github(diagnostics, ctx),
        Format::Sarif => sarif(diagnostics, ctx),
    }
}

/// One JSON document: whether there are errors, the counts, every diagnostic (file
/// relative to the berth repository, as in text), then `ctx.properties`.
pub fn json(diagnostics: &[Diagnostic], ctx: &Context) -> String {
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let mut value = serde_json::json!({
        "valid": errors == 0,
        "errors": errors,
        "warnings": diagnostics.len() - errors,
        "diagnostics": diagnostics,
    });
    if let Some(object) = value.as_object_mut() {
        if let Some((_, summary)) = &ctx.summary {
            object.insert("summary".into(), summary.clone().into());
        }
        object.extend(ctx.properties.clone());
    }
    serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
}

/// GitHub shows at most this many annotations of one kind per step and drops the rest.
pub const GITHUB_ANNOTATIONS_PER_KIND: usize = 10;

/// Workflow-command data: `%`, CR and LF escaped (the runner decodes them).
fn github_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow-command property value: also `:` and `,`, which separate properties.
fn github_property(text: &str) -> String {
    github_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// GitHub Actions workflow commands: `::error file=…,line=…,col=…,title=…::message` for
/// errors, `::warning …` for warnings, each shown on its line in the pull request's
/// files; then `ctx.summary` as one `::notice`. GitHub keeps
/// [`GITHUB_ANNOTATIONS_PER_KIND`] per kind and step, so past that the last one says how
/// many more there are (the step's log has them all: berth prints them on stderr too).
pub fn github(diagnostics: &[Diagnostic], ctx: &Context) -> String {
    let mut out = String::new();
    for (severity, command) in [(Severity::Error, "error"), (Severity::Warning, "warning")] {
        let of_kind: Vec<&Diagnostic> = diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .collect();
        let shown = if of_kind.len() > GITHUB_ANNOTATIONS_PER_KIND {
            GITHUB_ANNOTATIONS_PER_KIND - 1
        } else {
            of_kind.len()
        };
        for d in &of_kind[..shown] {
            let mut properties = Vec::new();
            if d.has_location() {
                properties.push(format!("file={}", github_property(&ctx.path(&d.file))));
                if d.line > 0 {
                    properties.push(format!("line={}", d.line));
                }
                if d.column > 0 {
                    properties.push(format!("col={}", d.column));
                }
            }
            let title = if d.field.is_empty() {
                "berth".to_string()
            } else {
                format!("berth: {}", d.field)
            };
            properties.push(format!("title={}", github_property(&title)));
            let mut message = d.message.clone();
            if let Some(help) = &d.help {
                let _ = write!(message, "\nhelp: {help}");
            }
            let _ = writeln!(
                out,
                "::{command} {}::{}",
                properties.join(","),
                github_data(&message)
            );
        }
        if shown < of_kind.len() {
            let _ = writeln!(
                out,
                "::{command} title=berth::{}",
                github_data(&format!(
                    "{} more {command}(s) not annotated (GitHub shows {} per step): see this step's log",
                    of_kind.len() - shown,
                    GITHUB_ANNOTATIONS_PER_KIND
                ))
            );
        }
    }
    if let Some((title, summary)) = &ctx.summary {
        let _ = writeln!(
            out,
            "::notice title={}::{}",
            github_property(title),
            github_data(summary)
        );
    }
    out
}

/// A relative path as a URI reference: unreserved characters and `/` as they are, every
/// other byte percent-encoded.
fn uri_reference(path: &str) -> String {
    let mut out = String::new();
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// SARIF 2.1.0: one run of berth, a result per finding that has a place (at its file, line
/// and column, with its rule), and findings about no place as the invocation's tool
/// notifications (code scanning wants a location for every result). `ctx.summary` and
/// `ctx.properties` go into the run's property bag.
///
/// Kept in one piece: one SARIF document, written as the literal it is.
pub fn sarif(diagnostics: &[Diagnostic], ctx: &Context) -> String {
    use serde_json::{Value, json};
    let level = |d: &Diagnostic| match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let text = |d: &Diagnostic| {
        let mut text = String::new();
        if !d.field.is_empty() {
            let _ = write!(text, "{}: ", d.field);
        }
        text.push_str(&d.message);
        if let Some(help) = &d.help {
            let _ = write!(text, " (help: {help})");
        }
        text
    };
    let used: Vec<&str> = RULES
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| diagnostics.iter().any(|d| d.rule_id() == *id))
        .collect();
    let rules: Vec<Value> = used
        .iter()
        .map(|id| {
            let description = RULES
                .iter()
                .find(|(rule, _)| rule == id)
                .map_or("", |(_, text)| *text);
            json!({"id": id, "shortDescription": {"text": description}})
        })
        .collect();
    let mut results = Vec::new();
    let mut notifications = Vec::new();
    for d in diagnostics {
        if !d.has_location() {
            notifications.push(json!({
                "level": level(d),
                "message": {"text": text(d)},
                "descriptor": {"id": d.rule_id()},
            }));
            continue;
        }
        let mut location = json!({
            "physicalLocation": {
                "artifactLocation": {"uri": uri_reference(&ctx.path(&d.file))},
            }
        });
        if d.line > 0 {
            let mut region = json!({"startLine": d.line});
            if d.column > 0 {
                region["startColumn"] = d.column.into();
            }
            location["physicalLocation"]["region"] = region;
        }
        let mut result = json!({
            "ruleId": d.rule_id(),
            "level": level(d),
            "message": {"text": text(d)},
            "locations": [location],
        });
        // Rules not in RULES (none today) go without an index.
        if let Some(index) = used.iter().position(|id| *id == d.rule_id()) {
            result["ruleIndex"] = index.into();
        }
        results.push(result);
    }
    let mut driver = json!({"name": "berth", "rules": rules});
    if !ctx.version.is_empty() {
        driver["version"] = ctx.version.into();
    }
    let mut invocation = json!({"executionSuccessful": true});
    if !notifications.is_empty() {
        invocation["toolExecutionNotifications"] = notifications.into();
    }
    let mut run = json!({
        "tool": {"driver": driver},
        "invocations": [invocation],
        // Diagnostics count columns in characters.
        "columnKind": "unicodeCodePoints",
        "results": results,
    });
    let mut properties = ctx.properties.clone();
    if let Some((_, summary)) = &ctx.summary {
        properties.insert("summary".into(), summary.clone().into());
    }
    if !properties.is_empty() {
        run["properties"] = Value::Object(properties);
    }
    let log = json!({
        "$schema": "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json",
        "version": "2.1.0",
        "runs": [run],
    });
    serde_json::to_string_pretty(&log).unwrap_or_default() + "\n"
}

/// Widest part of a source line shown, in characters.
const WINDOW: usize = 100;

/// The part of the diagnostic's line to show, the caret's column in it and the width of
/// the underlined token (both in characters).
fn excerpt(text: &str, index: &[usize], d: &Diagnostic) -> Option<(String, usize, usize)> {
    let start = *index.get(d.line.checked_sub(1)?)?;
    let end = index
        .get(d.line)
        .map_or(text.len(), |next| *next)
        .max(start);
    let line = text[start..end].trim_end_matches(['\n', '\r']);
    // The byte offset, when it lies on this line; else the column, counted in characters.
    let at = if (start..=start + line.len()).contains(&d.offset) && d.offset >= start {
        d.offset - start
    } else {
        line.char_indices()
            .nth(d.column.saturating_sub(1))
            .map_or(line.len(), |(i, _)| i)
    };
    let at = (0..=at)
        .rev()
        .find(|&i| line.is_char_boundary(i))
        .unwrap_or(0);
    let (before, rest) = line.split_at(at);
    let token = rest
        .char_indices()
        .take_while(|&(i, c)| i < 60 && !c.is_whitespace() && (i == 0 || !":,[]{}".contains(c)))
        .last()
        .map_or(0, |(i, c)| i + c.len_utf8());
    let width = rest[..token].chars().count();
    // A window around the position: the characters before it, and after it.
    let before_chars: Vec<char> = before.chars().rev().take(WINDOW / 2 + 1).collect();
    let cut_before = before_chars.len() > WINDOW / 2;
    let mut shown: String = if cut_before {
        std::iter::once('…')
            .chain(before_chars[..WINDOW / 2].iter().rev().copied())
            .collect()
    } else {
        before_chars.iter().rev().collect()
    };
    let caret = shown.chars().count();
    let after: String = rest.chars().take(WINDOW / 2 + 1).collect();
    if after.chars().count() > WINDOW / 2 {
        shown.extend(after.chars().take(WINDOW / 2));
        shown.push('…');
    } else {
        shown.push_str(&after);
    }
    Some((shown.replace('\t', " "), caret, width.min(WINDOW / 2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, column: usize, offset: usize) -> Pos {
        Pos {
            line,
            column,
            offset,
        }
    }

    #[test]
    fn reports_show_the_line_and_underline_the_token() {
        let files = Files::new([super::super::SourceFile::new(
            "w.yaml",
            "kind: Workspace\nspec:\n  project: nowhere\n",
        )]);
        let d = Diagnostic::error("w.yaml", at(3, 12, 33), "/spec/project", "unknown project")
            .with_help("declared projects: a");
        let text = render_report(&[d], &files, false);
        assert_eq!(
            text,
            "w.yaml:3:12: error: spec.project: unknown project\n  |\n3 |   project: nowhere\n  |            ^^^^^^^\n  = help: declared projects: a\n"
        );
    }

    #[test]
    fn long_lines_are_shown_as_a_window() {
        let line = format!("a: [{}]", "x, ".repeat(10_000));
        let files = Files::new([super::super::SourceFile::new("f.yaml", line.clone())]);
        let offset = line.len() / 2;
        let d = Diagnostic::warning("f.yaml", at(1, offset + 1, offset), "", "here");
        let text = render_report(&[d], &files, false);
        assert!(text.lines().all(|l| l.chars().count() < 160), "{text}");
        assert!(text.contains('…'));
    }

    #[test]
    fn github_annotations_escape_and_point_at_the_line() {
        let d = Diagnostic::error(
            "w, x.yaml",
            at(3, 12, 33),
            "/spec/project",
            "100% wrong:\nreally",
        )
        .with_help("declared projects: a");
        let ctx = Context {
            prefix: "deploy/berth/",
            summary: Some(("berth plan", "1 to create".into())),
            ..Context::default()
        };
        assert_eq!(
            github(
                &[d, Diagnostic::general(Severity::Warning, "no place")],
                &ctx
            ),
            "::error file=deploy/berth/w%2C x.yaml,line=3,col=12,title=berth%3A spec.project::100%25 wrong:%0Areally%0Ahelp: declared projects: a\n\
             ::warning title=berth::no place\n\
             ::notice title=berth plan::1 to create\n"
        );
    }

    #[test]
    fn github_says_how_many_annotations_it_could_not_show() {
        let many: Vec<Diagnostic> = (1..=12)
            .map(|i| Diagnostic::error("f.yaml", at(i, 1, 0), "", format!("e{i}")))
            .collect();
        let out = github(&many, &Context::default());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), GITHUB_ANNOTATIONS_PER_KIND, "{out}");
        assert!(lines[8].ends_with("::e9"), "{out}");
        assert_eq!(
            lines[9],
            "::error title=berth::3 more error(s) not annotated (GitHub shows 10 per step): see this step's log"
        );
    }

    #[test]
    fn sarif_places_results_and_keeps_placeless_findings_as_notifications() {
        let found = [
            Diagnostic::error(
                "ws/a b.yaml",
                at(3, 12, 0),
                "/spec/project",
                "unknown project",
            ),
            Diagnostic::general(Severity::Warning, "apply would refuse").with_rule("mass-prune"),
        ];
        let log: serde_json::Value = serde_json::from_str(&sarif(
            &found,
            &Context {
                prefix: "repo",
                version: "1.2.3",
                ..Context::default()
            },
        ))
        .unwrap();
        let run = &log["runs"][0];
        assert_eq!(run["tool"]["driver"]["version"], "1.2.3");
        assert_eq!(run["results"].as_array().unwrap().len(), 1);
        let result = &run["results"][0];
        assert_eq!(result["ruleId"], "invalid");
        assert_eq!(
            run["tool"]["driver"]["rules"][result["ruleIndex"].as_u64().unwrap() as usize]["id"],
            "invalid"
        );
        let location = &result["locations"][0]["physicalLocation"];
        assert_eq!(location["artifactLocation"]["uri"], "repo/ws/a%20b.yaml");
        assert_eq!(location["region"]["startLine"], 3);
        assert_eq!(location["region"]["startColumn"], 12);
        let notes = &run["invocations"][0]["toolExecutionNotifications"];
        assert_eq!(notes[0]["descriptor"]["id"], "mass-prune");
        assert_eq!(notes[0]["level"], "warning");
    }

    #[test]
    fn placeless_findings_read_without_a_position() {
        let d = Diagnostic::general(Severity::Error, "the cluster said no");
        assert_eq!(d.to_string(), "error: the cluster said no");
        assert_eq!(
            render_report(&[d], &Files::default(), false),
            "error: the cluster said no\n"
        );
    }

    #[test]
    fn field_paths_read_like_yaml() {
        assert_eq!(field_path("/spec/env/2/name"), "spec.env[2].name");
        assert_eq!(field_path(""), "");
        assert_eq!(field_path("/metadata/labels/a~1b"), "metadata.labels.a/b");
    }
}
