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

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
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
        write!(
            f,
            "{}:{}:{}: {severity}: ",
            self.file, self.line, self.column
        )?;
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
        let _ = write!(out, "{}:{}:{}: {severity}: ", d.file, d.line, d.column);
        if !d.field.is_empty() {
            let _ = write!(out, "{}: ", d.field);
        }
        let _ = writeln!(out, "{}", d.message);
        let mut pad = " ".to_string();
        if let Some(text) = files.text(&d.file) {
            let index = indexes
                .entry(d.file.as_str())
                .or_insert_with(|| line_starts(text));
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

/// Byte offsets where each line starts.
fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// Widest part of a source line shown, in characters.
const WINDOW: usize = 100;

/// The part of the diagnostic's line to show, the caret's column in it and the width of
/// the underlined token (both in characters).
fn excerpt(text: &str, index: &[usize], d: &Diagnostic) -> Option<(String, usize, usize)> {
    let start = *index.get(d.line.checked_sub(1)?)?;
    let end = index
        .get(d.line)
        .map_or(text.len(), |next| next - 1)
        .max(start);
    let line = text[start..end].trim_end_matches('\r');
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
    fn field_paths_read_like_yaml() {
        assert_eq!(field_path("/spec/env/2/name"), "spec.env[2].name");
        assert_eq!(field_path(""), "");
        assert_eq!(field_path("/metadata/labels/a~1b"), "metadata.labels.a/b");
    }
}
