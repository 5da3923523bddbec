//! Load: files of a repository → typed, validated documents, or diagnostics that name the
//! file, line, column and field of every problem at once.
//!
//! Loading is pure: it takes the files' contents (read from a directory or a git revision
//! by [`crate::source`]) and never touches the filesystem itself.

mod check;
pub use check::dns_label as check_dns_label;
pub mod diagnostic;
pub mod mage;
mod schema;
pub mod yaml;

pub use diagnostic::{Diagnostic, Severity};

use crate::model::{API_VERSION, PolicyDocument, ProjectDocument, WorkspaceDocument};
use rayon::prelude::*;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use yaml::{Pos, Spans};

/// One file of the repository: its path relative to the root, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
    /// Size on disk. Files over the reader's limit arrive with empty text and are refused.
    pub bytes: u64,
}

impl SourceFile {
    pub fn new(path: impl Into<String>, text: impl Into<String>) -> SourceFile {
        let text = text.into();
        SourceFile {
            path: path.into(),
            bytes: text.len() as u64,
            text,
        }
    }
}

/// A document together with where it came from, so later stages can point at it.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub doc: T,
    pub file: String,
    pub spans: Spans,
}

impl<T> Located<T> {
    /// Position of the value at a JSON pointer inside this document.
    pub fn pos(&self, pointer: &str) -> Pos {
        self.spans.value(pointer)
    }
}

/// Everything a repository declares.
#[derive(Debug, Clone, Default)]
pub struct Repository {
    pub projects: Vec<Located<ProjectDocument>>,
    pub workspaces: Vec<Located<WorkspaceDocument>>,
    pub policies: Vec<Located<PolicyDocument>>,
    /// Every file's text by path: scripts referenced by workspaces, sources for diagnostics.
    pub files: BTreeMap<String, String>,
    /// Kubernetes executor configuration per project (inline, Mage project folder, template).
    pub executor: Vec<mage::ExecutorSources>,
}

impl Repository {
    pub fn project(&self, name: &str) -> Option<&Located<ProjectDocument>> {
        self.projects.iter().find(|p| p.doc.metadata.name == name)
    }
}

/// The result of loading: the repository (possibly partial) and every finding.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub repo: Repository,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Sort by file and position, and drop repeats.
pub fn sort_diagnostics(diagnostics: &mut Vec<Diagnostic>) {
    diagnostics.sort_by(|a, b| {
        (&a.file, a.line, a.column, &a.message).cmp(&(&b.file, b.line, b.column, &b.message))
    });
    diagnostics.dedup();
}

/// Whether a path holds berth documents: YAML files outside hidden folders and outside
/// folders listed in `.berthignore` (one path prefix per line; `#` starts a comment).
fn is_document_file(path: &str, ignored: &[String]) -> bool {
    let yaml = path.ends_with(".yaml") || path.ends_with(".yml");
    let hidden = path.split('/').any(|part| part.starts_with('.'));
    let ignored = ignored
        .iter()
        .any(|prefix| path == prefix || path.starts_with(&format!("{prefix}/")));
    yaml && !hidden && !ignored
}

fn ignore_list(files: &[SourceFile]) -> Vec<String> {
    files
        .iter()
        .find(|f| f.path == ".berthignore")
        .map(|f| {
            f.text
                .lines()
                .map(|line| line.split('#').next().unwrap_or("").trim())
                .filter(|line| !line.is_empty())
                .map(|line| line.trim_matches('/').to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Load and validate every document of the repository.
pub fn load(mut files: Vec<SourceFile>) -> Loaded {
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut ignored = ignore_list(&files);
    let mut loaded = Loaded::default();
    // Parse first: Mage project folders named by Projects hold Mage's files, not berth
    // documents, and are left to the Mage loader.
    let documents: Vec<&SourceFile> = files
        .iter()
        .filter(|f| is_document_file(&f.path, &ignored))
        .collect();
    let parsed: Vec<(&SourceFile, ParsedFile)> = documents
        .iter()
        .copied()
        .zip(
            documents
                .par_iter()
                .map(|f| parse_file(f))
                .collect::<Vec<_>>(),
        )
        .collect();
    for (_, docs) in &parsed {
        for doc in docs.iter().flatten() {
            if doc.value.get("kind").and_then(|k| k.as_str()) == Some("Project")
                && let Some(root) = doc
                    .value
                    .pointer("/spec/mageProject")
                    .and_then(|v| v.as_str())
            {
                ignored.push(mage::folder(root));
            }
        }
    }
    for (file, docs) in parsed {
        if is_document_file(&file.path, &ignored) {
            load_file(file, docs, &mut loaded);
        }
    }
    loaded.repo.files = files.into_iter().map(|f| (f.path, f.text)).collect();
    mage::load(&mut loaded);
    check::check(&mut loaded);
    sort_diagnostics(&mut loaded.diagnostics);
    loaded
}

type ParsedFile = Result<Vec<yaml::YamlDoc>, yaml::YamlError>;

fn parse_file(file: &SourceFile) -> ParsedFile {
    if file.bytes > yaml::MAX_FILE_BYTES as u64 {
        return Err(yaml::too_large(file.bytes));
    }
    yaml::parse(&file.text)
}

fn load_file(file: &SourceFile, docs: ParsedFile, loaded: &mut Loaded) {
    let docs = match docs {
        Ok(docs) => docs,
        Err(err) => {
            loaded.diagnostics.push(Diagnostic::error(
                &file.path,
                err.pos,
                "",
                format!("invalid YAML: {}", err.message),
            ));
            return;
        }
    };
    for doc in docs {
        let path = file.path.as_str();
        let root = doc.spans.value("");
        let Some(object) = doc.value.as_object() else {
            loaded.diagnostics.push(Diagnostic::error(
                path,
                root,
                "",
                "a berth document must be a mapping with apiVersion, kind, metadata and spec",
            ));
            continue;
        };
        match object.get("apiVersion").and_then(|v| v.as_str()) {
            Some(API_VERSION) => {}
            Some(other) => {
                loaded.diagnostics.push(
                    Diagnostic::error(
                        path,
                        doc.spans.value("/apiVersion"),
                        "/apiVersion",
                        format!("unsupported apiVersion `{other}`"),
                    )
                    .with_help(format!("berth reads `{API_VERSION}`")),
                );
                continue;
            }
            // Neither apiVersion nor kind: some other tool's YAML, not a typo of ours.
            None if !object.contains_key("kind") => {
                loaded.diagnostics.push(
                    Diagnostic::warning(
                        path,
                        root,
                        "",
                        "not a berth document (no apiVersion or kind); skipped",
                    )
                    .with_help("list its folder in .berthignore to silence this"),
                );
                continue;
            }
            None => {
                loaded.diagnostics.push(
                    Diagnostic::error(path, root, "/apiVersion", "missing `apiVersion`")
                        .with_help(format!("add `apiVersion: {API_VERSION}`")),
                );
                continue;
            }
        }
        let kind = object
            .get("kind")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let schema_errors = match schema::Kind::from_name(&kind) {
            Some(kind) => schema::validate(kind, &doc.value, &doc.spans, path),
            None => {
                let pos = doc.spans.value("/kind");
                let message = if kind.is_empty() {
                    "missing `kind`".to_string()
                } else {
                    format!("unknown kind `{kind}`")
                };
                loaded.diagnostics.push(
                    Diagnostic::error(path, pos, "/kind", message)
                        .with_help("expected one of Project, Workspace, Policy"),
                );
                continue;
            }
        };
        // A document whose only faults are unknown fields is still checked further (with
        // those fields left out), so one run reports typos and the problems behind them.
        let mut doc = doc;
        let mut recoverable = true;
        for error in &schema_errors {
            match &error.unknown_field {
                Some(pointer) => remove_pointer(&mut doc.value, pointer),
                None => recoverable = false,
            }
        }
        let clean = schema_errors.is_empty();
        loaded
            .diagnostics
            .extend(schema_errors.into_iter().map(|e| e.diagnostic));
        if !recoverable {
            continue;
        }
        let repo = &mut loaded.repo;
        let diagnostics = &mut loaded.diagnostics;
        match kind.as_str() {
            "Project" => push_typed(&mut repo.projects, doc, path, clean, diagnostics),
            "Workspace" => push_typed(&mut repo.workspaces, doc, path, clean, diagnostics),
            _ => push_typed(&mut repo.policies, doc, path, clean, diagnostics),
        }
    }
}

fn remove_pointer(value: &mut serde_json::Value, pointer: &str) {
    let Some((parent, key)) = pointer.rsplit_once('/') else {
        return;
    };
    let key = key.replace("~1", "/").replace("~0", "~");
    if let Some(object) = value.pointer_mut(parent).and_then(|v| v.as_object_mut()) {
        object.remove(&key);
    }
}

fn push_typed<T: DeserializeOwned>(
    into: &mut Vec<Located<T>>,
    doc: yaml::YamlDoc,
    file: &str,
    clean: bool,
    diagnostics: &mut Vec<Diagnostic>,
) {
    match serde_json::from_value::<T>(doc.value) {
        Ok(typed) => into.push(Located {
            doc: typed,
            file: file.to_string(),
            spans: doc.spans,
        }),
        // The schema is generated from the same types, so for a document the schema
        // accepted this is a berth bug; still report it rather than panic.
        Err(err) if clean => diagnostics.push(Diagnostic::error(
            file,
            doc.spans.value(""),
            "",
            err.to_string(),
        )),
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = include_str!("../../sample-repo/workspaces/analytics/etl-prod.yaml");
    const PROJECT: &str = include_str!("../../sample-repo/projects/analytics.yaml");

    fn run(text: String) -> Loaded {
        let loaded = load(vec![
            SourceFile::new("projects/analytics.yaml", PROJECT),
            SourceFile::new("ws.yaml", text),
        ]);
        // Whatever the input, resolving and rendering what loaded must not panic either.
        let (resolved, _) = crate::resolve::resolve(&loaded.repo);
        let _ = crate::render::render(&resolved, &Default::default());
        loaded
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary text: diagnostics or documents, never a panic.
        #[test]
        fn arbitrary_text_never_panics(text in "\\\\PC{0,400}") {
            run(text);
        }

        /// A real document with one line removed or replaced by noise still gives a clean
        /// answer: either it loads, or every error names a line inside the file.
        #[test]
        fn damaged_documents_get_positioned_errors(line in 0usize..60, noise in "[ -~]{0,20}", drop in any::<bool>()) {
            let mut lines: Vec<String> = SAMPLE.lines().map(str::to_string).collect();
            let at = line % lines.len();
            if drop { lines.remove(at); } else { lines[at] = noise; }
            let text = lines.join("\n");
            let total = text.lines().count().max(1);
            let loaded = run(text);
            for d in loaded.diagnostics.iter().filter(|d| d.file == "ws.yaml") {
                prop_assert!(d.line >= 1 && d.line <= total + 1, "{} outside 1..={}", d, total);
                prop_assert!(d.column >= 1);
            }
        }
    }
}
