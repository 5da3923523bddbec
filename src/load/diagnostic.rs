//! Diagnostics: what is wrong, in which file, at which line and column, in which field.

use super::yaml::Pos;
use serde::Serialize;
use std::fmt;

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
    /// Character offset in the file, for pointing at the source.
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

/// Render diagnostics with the offending source line underneath (miette), for people.
pub fn render_with_source(diagnostic: &Diagnostic, source: Option<&str>, color: bool) -> String {
    use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic};
    let Some(source) = source else {
        return diagnostic.to_string();
    };
    let byte_offset = source
        .char_indices()
        .nth(diagnostic.offset)
        .map_or(source.len(), |(byte, _)| byte);
    // Underline the token at the position: up to whitespace or YAML punctuation.
    let token_len = source[byte_offset..]
        .char_indices()
        .take_while(|(i, c)| *i < 60 && !c.is_whitespace() && (*i == 0 || !":,[]{}".contains(*c)))
        .map(|(i, c)| i + c.len_utf8())
        .last()
        .unwrap_or(0);
    let mut report = MietteDiagnostic::new(diagnostic.to_string()).with_label(LabeledSpan::at(
        byte_offset..byte_offset + token_len,
        "here",
    ));
    if diagnostic.severity == Severity::Warning {
        report = report.with_severity(miette::Severity::Warning);
    }
    let report = miette::Report::new(report).with_source_code(miette::NamedSource::new(
        diagnostic.file.clone(),
        source.to_string(),
    ));
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let mut out = String::new();
    match GraphicalReportHandler::new_themed(theme).render_report(&mut out, report.as_ref()) {
        Ok(()) => out,
        Err(_) => diagnostic.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_read_like_yaml() {
        assert_eq!(field_path("/spec/env/2/name"), "spec.env[2].name");
        assert_eq!(field_path(""), "");
        assert_eq!(field_path("/metadata/labels/a~1b"), "metadata.labels.a/b");
    }
}
