//! Load: files of a repository → typed, validated documents, or diagnostics that name the
//! file, line, column and field of every problem at once.
//!
//! Loading is pure: it takes the files' contents (read from a directory or a git revision
//! by [`crate::source`]) and never touches the filesystem itself.

mod check;
mod names;
pub use names::dns_label as check_dns_label;
pub mod diagnostic;
pub mod files;
pub mod lifecycle;
mod lines;
pub mod mage;
pub mod python;
mod schema;
pub mod yaml;
mod zenml;

pub use diagnostic::{Diagnostic, Severity};
pub use files::{Files, SourceFile, Unreadable};

use crate::model::{API_VERSION, PolicyDocument, ProjectDocument, WorkspaceDocument};
use rayon::prelude::*;
use serde::de::DeserializeOwned;
use yaml::{FileSpans, LazySpans, Pos};

/// A document together with where it came from, so later stages can point at it.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub doc: T,
    pub file: String,
    pub spans: LazySpans,
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
    /// Every input file by path: scripts referenced by workspaces, Mage files, templates,
    /// and the sources shown under diagnostics.
    pub files: Files,
    /// Kubernetes executor configuration per project (inline, Mage project folder, template).
    pub executor: Vec<mage::ExecutorSources>,
}

impl Repository {
    /// Every project by name, the first of duplicates winning as in [`Repository::project`]:
    /// for callers that look up many (one scan per workspace is quadratic in a fleet).
    pub fn projects_by_name(&self) -> std::collections::HashMap<&str, &Located<ProjectDocument>> {
        self.projects
            .iter()
            .rev()
            .map(|p| (p.doc.metadata.name.as_str(), p))
            .collect()
    }

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

/// The errors of loading `files`, one `file:line:column: error: ...` line each: what the
/// loader's tests compare.
#[cfg(test)]
pub(crate) fn error_lines(files: Vec<SourceFile>) -> Vec<String> {
    load(files)
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect()
}

/// Sort by file and position, and drop repeats.
pub fn sort_diagnostics(diagnostics: &mut Vec<Diagnostic>) {
    diagnostics.sort_by(|a, b| {
        (&a.file, a.line, a.column, &a.message).cmp(&(&b.file, b.line, b.column, &b.message))
    });
    diagnostics.dedup();
}

/// Whether a path holds berth documents: YAML files outside hidden folders and outside
/// skipped prefixes (`.berthignore`'s, and the Mage project folders, which hold Mage's own
/// files and are read by the Mage loader).
fn is_document_file(path: &str, skipped: &[String]) -> bool {
    (path.ends_with(".yaml") || path.ends_with(".yml")) && !files::is_skipped(path, skipped)
}

/// Load and validate every document of the repository.
pub fn load(mut files: Vec<SourceFile>) -> Loaded {
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut skipped = files::ignored_by(files.iter().find(|f| f.path == files::IGNORE_FILE));
    let mut loaded = Loaded::default();
    // Every document file is read whole (parsed, checked against its schema, typed) on its
    // own, in parallel: only its typed documents outlive it, never every file's parsed
    // YAML at once (160 MB at 10,000 workspaces).
    let documents: Vec<&SourceFile> = files
        .iter()
        .filter(|f| is_document_file(&f.path, &skipped))
        .collect();
    let results: Vec<FileLoad> = documents.par_iter().map(|f| load_file(f)).collect();
    // Mage project folders named by Projects hold Mage's files, not berth documents, and
    // are left to the Mage loader: what was read of them is dropped.
    for result in &results {
        skipped.extend(result.mage_projects.iter().map(|root| mage::folder(root)));
    }
    let kept = |file: &SourceFile| is_document_file(&file.path, &skipped);
    let total = |count: fn(&FileLoad) -> usize| -> usize {
        documents
            .iter()
            .zip(&results)
            .filter(|(file, _)| kept(file))
            .map(|(_, result)| count(result))
            .sum()
    };
    let repo = &mut loaded.repo;
    repo.projects.reserve_exact(total(|r| r.projects.len()));
    repo.workspaces.reserve_exact(total(|r| r.workspaces.len()));
    repo.policies.reserve_exact(total(|r| r.policies.len()));
    for (file, result) in documents.iter().zip(results) {
        if kept(file) {
            loaded.repo.projects.extend(result.projects);
            loaded.repo.workspaces.extend(result.workspaces);
            loaded.repo.policies.extend(result.policies);
            loaded.diagnostics.extend(result.diagnostics);
        }
    }
    report_unread(&files, &skipped, &mut loaded.diagnostics);
    loaded.repo.files = Files::new(files);
    mage::load(&mut loaded);
    check::check(&mut loaded);
    sort_diagnostics(&mut loaded.diagnostics);
    loaded
}

/// Files that are not documents but cannot be read either. A submodule or an unreadable
/// `.berthignore` may hide input, so they are errors; a link that is not input by name is
/// not followed, which is said once. Scripts, templates and Mage files are reported where
/// they are used (an unused one is not input).
fn report_unread(files: &[SourceFile], skipped: &[String], out: &mut Vec<Diagnostic>) {
    let start = Pos::START;
    for file in files {
        let Err(why) = &file.content else { continue };
        if is_document_file(&file.path, skipped) {
            continue; // reported by load_file, at the document
        }
        let message = format!("`{}` {why}", file.path);
        match why {
            Unreadable::Submodule => out.push(
                Diagnostic::error(&file.path, start, "", message)
                    .with_help("list it in .berthignore if it holds no berth input"),
            ),
            _ if file.path == files::IGNORE_FILE => {
                out.push(Diagnostic::error(&file.path, start, "", message))
            }
            Unreadable::Symlink { .. } if !files::is_skipped(&file.path, skipped) => out.push(
                Diagnostic::warning(&file.path, start, "", format!("{message}; not read"))
                    .with_help("list it in .berthignore to silence this"),
            ),
            _ => {}
        }
    }
}

/// At most this many warnings per file are kept; the rest are counted in one more.
pub const MAX_WARNINGS_PER_FILE: usize = 20;

/// Keep the first [`MAX_WARNINGS_PER_FILE`] warnings of each file and replace the rest by
/// one warning, at the first one left out, that counts them. Errors are all kept: validate
/// promises every one.
pub fn cap_warnings(diagnostics: &mut Vec<Diagnostic>) {
    sort_diagnostics(diagnostics);
    let mut kept: Vec<Diagnostic> = Vec::with_capacity(diagnostics.len());
    // The file being counted, its warnings so far, and where its summary sits in `kept`.
    let mut file = String::new();
    let mut seen = 0usize;
    let mut summary: Option<usize> = None;
    for d in diagnostics.drain(..) {
        if d.file != file {
            file = d.file.clone();
            seen = 0;
            summary = None;
        }
        if d.is_error() {
            kept.push(d);
            continue;
        }
        seen += 1;
        if seen <= MAX_WARNINGS_PER_FILE {
            kept.push(d);
        } else if summary.is_none() {
            summary = Some(kept.len());
            kept.push(Diagnostic {
                field: String::new(),
                help: None,
                ..d
            });
        }
        if let Some(at) = summary {
            kept[at].message = format!(
                "{} more warning(s) in this file, from here on, not shown",
                seen - MAX_WARNINGS_PER_FILE
            );
        }
    }
    *diagnostics = kept;
}

/// What one document file holds.
#[derive(Default)]
struct FileLoad {
    projects: Vec<Located<ProjectDocument>>,
    workspaces: Vec<Located<WorkspaceDocument>>,
    policies: Vec<Located<PolicyDocument>>,
    diagnostics: Vec<Diagnostic>,
    /// `spec.mageProject` of every Project document in the file, valid or not.
    mage_projects: Vec<String>,
}

fn load_file(file: &SourceFile) -> FileLoad {
    let mut out = FileLoad::default();
    let (parsed, spans) = match &file.content {
        Ok(text) => (yaml::parse_all(text), FileSpans::new(text.clone())),
        Err(why) => {
            out.diagnostics
                .push(unreadable_file(&file.path, why, "this file"));
            return out;
        }
    };
    out.diagnostics.extend(parsed.errors.into_iter().map(|err| {
        Diagnostic::error(
            &file.path,
            err.pos,
            "",
            format!("invalid YAML: {}", err.message),
        )
    }));
    for (index, doc) in parsed.docs.into_iter().enumerate() {
        if doc.value.get("kind").and_then(|k| k.as_str()) == Some("Project")
            && let Some(root) = doc
                .value
                .pointer("/spec/mageProject")
                .and_then(|v| v.as_str())
        {
            out.mage_projects.push(root.to_string());
        }
        let path = file.path.as_str();
        let kind = match berth_kind(path, &doc) {
            Ok(kind) => kind,
            Err(diagnostic) => {
                out.diagnostics.push(*diagnostic);
                continue;
            }
        };
        let schema_errors = schema::validate(kind, &doc.value, &doc.spans, path);
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
        out.diagnostics
            .extend(schema_errors.into_iter().map(|e| e.diagnostic));
        if !recoverable {
            continue;
        }
        // A policy's executor settings are a Mage layer: what Mage ignores or the API
        // server refuses in them is said as in Mage's own files.
        let executor = "/spec/k8sExecutorDefaults/config";
        if kind == schema::Kind::Policy
            && let Some(config) = doc.value.pointer(executor)
        {
            mage::check_layer(config, path, &doc.spans, executor, &mut out.diagnostics);
        }
        let diagnostics = &mut out.diagnostics;
        let at = (path, LazySpans::new(&spans, index));
        match kind {
            schema::Kind::Project => push_typed(&mut out.projects, doc, at, clean, diagnostics),
            schema::Kind::Workspace => push_typed(&mut out.workspaces, doc, at, clean, diagnostics),
            _ => push_typed(&mut out.policies, doc, at, clean, diagnostics),
        }
    }
    // A file mostly holds one document: no room for four (a kilobyte each) per file while
    // every file's documents wait to be merged.
    out.projects.shrink_to_fit();
    out.workspaces.shrink_to_fit();
    out.policies.shrink_to_fit();
    out
}

/// The kind of a berth document, or why it is none: not a mapping, another apiVersion,
/// no kind, or some other tool's YAML (a warning: it is skipped).
fn berth_kind(path: &str, doc: &yaml::YamlDoc) -> Result<schema::Kind, Box<Diagnostic>> {
    let root = doc.spans.value("");
    let Some(object) = doc.value.as_object() else {
        return Err(Box::new(Diagnostic::error(
            path,
            root,
            "",
            "a berth document must be a mapping with apiVersion, kind, metadata and spec",
        )));
    };
    match object.get("apiVersion").and_then(|v| v.as_str()) {
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(Box::new(
                Diagnostic::error(
                    path,
                    doc.spans.value("/apiVersion"),
                    "/apiVersion",
                    format!("unsupported apiVersion `{other}`"),
                )
                .with_help(format!("berth reads `{API_VERSION}`")),
            ));
        }
        // Neither apiVersion nor kind: some other tool's YAML, not a typo of ours.
        None if !object.contains_key("kind") => {
            return Err(Box::new(
                Diagnostic::warning(
                    path,
                    root,
                    "",
                    "not a berth document (no apiVersion or kind); skipped",
                )
                .with_help("list its folder in .berthignore to silence this"),
            ));
        }
        None => {
            return Err(Box::new(
                Diagnostic::error(path, root, "/apiVersion", "missing `apiVersion`")
                    .with_help(format!("add `apiVersion: {API_VERSION}`")),
            ));
        }
    }
    let kind = object.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    schema::Kind::from_name(kind).ok_or_else(|| {
        let message = if kind.is_empty() {
            "missing `kind`".to_string()
        } else {
            format!("unknown kind `{kind}`")
        };
        Box::new(
            Diagnostic::error(path, doc.spans.value("/kind"), "/kind", message)
                .with_help("expected one of Project, Workspace, Policy"),
        )
    })
}

/// The error for a file berth needs but cannot read, at the fault's position when known.
pub fn unreadable_file(path: &str, why: &Unreadable, what: &str) -> Diagnostic {
    let (line, column) = match why {
        Unreadable::NotUtf8 { line, column, .. } | Unreadable::NulByte { line, column } => {
            (*line, *column)
        }
        _ => (1, 1),
    };
    let pos = Pos {
        line,
        column,
        offset: 0,
    };
    Diagnostic::error(
        path,
        pos,
        "",
        format!("{what} {why}; nothing in it was read"),
    )
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

/// The document typed, kept with its file and the way to its positions (`at`); its own
/// table of positions is dropped here, with the file's other parsed YAML.
fn push_typed<T: DeserializeOwned>(
    into: &mut Vec<Located<T>>,
    doc: yaml::YamlDoc,
    (file, spans): (&str, LazySpans),
    clean: bool,
    diagnostics: &mut Vec<Diagnostic>,
) {
    match serde_json::from_value::<T>(doc.value) {
        Ok(typed) => into.push(Located {
            doc: typed,
            file: file.to_string(),
            spans,
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

    /// One document of a generated file: a workspace, or one that is not kept (empty, some
    /// other tool's YAML, a workspace the schema refuses), each after some blank lines.
    #[derive(Debug, Clone)]
    enum Part {
        Workspace { blank: usize },
        Empty,
        Foreign { blank: usize },
        Refused { blank: usize },
    }

    fn part() -> impl Strategy<Value = Part> {
        prop_oneof![
            (0usize..3).prop_map(|blank| Part::Workspace { blank }),
            Just(Part::Empty),
            (0usize..3).prop_map(|blank| Part::Foreign { blank }),
            (0usize..3).prop_map(|blank| Part::Refused { blank }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Positions asked after loading (read again from the file's text) are where each
        /// kept document's fields are written, whatever documents around it were dropped.
        #[test]
        fn positions_read_again_are_where_fields_are_written(parts in prop::collection::vec(part(), 1..8)) {
            let mut text = String::new();
            let mut expected = Vec::new();
            for (i, part) in parts.iter().enumerate() {
                text.push_str("---\n");
                let line = |text: &str| text.lines().count() + 1;
                match part {
                    Part::Empty => {}
                    Part::Workspace { blank } | Part::Foreign { blank } | Part::Refused { blank } => {
                        text.push_str(&"\n".repeat(*blank));
                        if let Part::Foreign { .. } = part {
                            text.push_str("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n");
                            continue;
                        }
                        text.push_str("apiVersion: berth/v1alpha1\nkind: Workspace\n");
                        text.push_str("metadata:\n");
                        let name_line = line(&text);
                        text.push_str(&format!("  name: ws-{i}\n"));
                        let project_line = line(&text);
                        text.push_str("spec:\n  project: p\n");
                        if let Part::Refused { .. } = part {
                            text.push_str("  suspended: sometimes\n");
                        } else {
                            expected.push((format!("ws-{i}"), name_line, project_line + 1));
                        }
                    }
                }
            }
            let loaded = load(vec![
                SourceFile::new("p.yaml", "apiVersion: berth/v1alpha1\nkind: Project\nmetadata: {name: p}\nspec: {image: i, namespace: p}\n"),
                SourceFile::new("ws.yaml", text.clone()),
            ]);
            let found: Vec<(String, usize, usize)> = loaded
                .repo
                .workspaces
                .iter()
                .map(|w| {
                    let name = w.pos("/metadata/name");
                    prop_assert_eq!(w.spans.key("/metadata/name").line, name.line);
                    prop_assert_eq!(&text[name.offset..name.offset + w.doc.metadata.name.len()], w.doc.metadata.name.as_str());
                    Ok((w.doc.metadata.name.clone(), name.line, w.pos("/spec/project").line))
                })
                .collect::<Result<_, _>>()?;
            prop_assert_eq!(found, expected, "{}", text);
        }
    }

    /// Every input the fuzzer kept (fuzz/corpus/load: the seeds, the issues' cases and what
    /// the fuzzer found) loads without a panic, with every diagnostic inside its file. The
    /// fuzz target checks the same on new inputs (scripts/fuzz).
    #[test]
    fn the_fuzz_corpus_loads_cleanly() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/load");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("the fuzz corpus") {
            let bytes = std::fs::read(entry.expect("an entry").path()).expect("a corpus file");
            let lines = yaml::line_starts(&String::from_utf8_lossy(&bytes)).len();
            let loaded = load(vec![SourceFile::from_bytes("ws.yaml", bytes)]);
            for d in &loaded.diagnostics {
                assert!(d.line >= 1 && d.line <= lines + 1, "{d}");
            }
            seen += 1;
        }
        assert!(seen >= 20, "the corpus holds {seen} inputs");
    }

    #[test]
    fn warnings_are_capped_per_file_and_counted() {
        let mut text = String::new();
        for _ in 0..30 {
            text.push_str("---\n{}\n");
        }
        let mut diagnostics = load(vec![
            SourceFile::new("a.yaml", text.clone()),
            SourceFile::new("b.yaml", text),
        ])
        .diagnostics;
        cap_warnings(&mut diagnostics);
        for file in ["a.yaml", "b.yaml"] {
            let of_file: Vec<&Diagnostic> = diagnostics.iter().filter(|d| d.file == file).collect();
            assert_eq!(of_file.len(), MAX_WARNINGS_PER_FILE + 1);
            let last = of_file[MAX_WARNINGS_PER_FILE];
            assert_eq!(last.line, 2 * MAX_WARNINGS_PER_FILE + 2);
            assert!(last.message.starts_with("10 more warning(s)"), "{last}");
        }
    }
}
