//! Mage project folders: a Project's `mageProject` names a folder holding Mage's own files —
//! `metadata.yaml` (the project-level `k8s_executor_config`) and `pipelines/*/metadata.yaml`
//! (blocks with `executor_type: k8s` and their `executor_config`) — and a project env
//! variable K8S_CONFIG_FILE may name a full job template. Mage's files carry many keys berth
//! does not care about; only the executor configuration in them is validated.

use super::schema::{self, Kind};
use super::yaml::{self, Spans};
use super::{Diagnostic, Loaded, Located};
use crate::model::ProjectDocument;
use serde_json::Value;

/// Values of an executor config (at `pointer` of a document) that the API server would
/// refuse when Mage creates the Job: label and annotation keys, label values.
pub fn check_values(
    value: &Value,
    file: &str,
    spans: &Spans,
    pointer: &str,
    diagnostics: &mut Vec<Diagnostic>,
) {
    for (at, labels) in [
        ("/metadata/labels", true),
        ("/metadata/annotations", false),
        ("/pod/node_selector", true),
    ] {
        let Some(map) = value.pointer(at).and_then(Value::as_object) else {
            continue;
        };
        let entries = map
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default()));
        for (key, message) in super::check::map_problems(entries, labels) {
            let mut field = format!("{pointer}{at}");
            if !key.is_empty() {
                field = format!("{field}/{}", yaml::escape_segment(&key));
            }
            diagnostics.push(Diagnostic::error(
                file,
                spans.value(&field),
                &field,
                message,
            ));
        }
    }
}

/// Rewrite the executor config at `base` of a document to berth's canonical spelling
/// ([`crate::model::canonicalise`]), before anything merges it with other layers. Moved
/// values keep their positions (the spans learn the canonical pointers); a setting
/// written in two spellings with different values is an error at the other spelling.
pub fn canonicalise_at(
    value: &mut Value,
    spans: &mut Spans,
    file: &str,
    base: &str,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let done = crate::model::canonicalise(value);
    for (written, canonical) in &done.moved {
        spans.alias(&format!("{base}{written}"), &format!("{base}{canonical}"));
    }
    for clash in done.clashes {
        let field = |pointer: &str| super::diagnostic::field_path(pointer);
        let shown = |v: &Value| match v {
            Value::String(s) => format!("`{s}`"),
            other => format!("`{other}`"),
        };
        let at = format!("{base}{}", clash.written);
        let other = spans.key(&format!("{base}{}", clash.canonical));
        diagnostics.push(
            Diagnostic::error(
                file,
                spans.key(&at),
                &at,
                format!(
                    "{} here but {} at line {}: `{}` and `{}` are one setting in Mage, written twice with different values",
                    shown(&clash.written_value),
                    shown(&clash.canonical_value),
                    other.line,
                    field(&clash.written),
                    field(&clash.canonical),
                ),
            )
            .with_help(format!(
                "keep one; berth reads both as `{}`",
                field(&clash.canonical)
            )),
        );
    }
}

/// One layer of executor configuration and where it is written.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub value: Value,
    pub file: String,
    /// Pointer of `value` inside its document.
    pub pointer: String,
    pub spans: Spans,
}

impl ConfigSource {
    /// Line of a key inside this configuration (`/resource_limits/memory`).
    pub fn line_of(&self, pointer: &str) -> usize {
        self.pos_of(pointer).line
    }

    /// Position of a key inside this configuration.
    pub fn pos_of(&self, pointer: &str) -> yaml::Pos {
        self.spans.key(&format!("{}{pointer}", self.pointer))
    }

    /// The document pointer of a key inside this configuration, spelled as written.
    pub fn written_at(&self, pointer: &str) -> String {
        self.spans.written(&format!("{}{pointer}", self.pointer))
    }
}

#[derive(Debug, Clone)]
pub struct Block {
    pub uuid: String,
    /// Where the block is declared in its pipeline's `metadata.yaml`.
    pub pos: yaml::Pos,
    /// Its pointer there (`/blocks/2`).
    pub pointer: String,
    /// The block's own `executor_config`, if any.
    pub config: Option<ConfigSource>,
}

/// A trigger of a pipeline (Mage keeps them in `pipelines/<uuid>/triggers.yaml`): its name
/// is interpolated into `job_name_prefix` as `{trigger_name}`.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub name: String,
    pub file: String,
    pub pos: yaml::Pos,
    /// Pointer of the name in `triggers.yaml`.
    pub pointer: String,
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub uuid: String,
    pub file: String,
    /// Blocks with `executor_type: k8s`, in file order.
    pub blocks: Vec<Block>,
    /// The pipeline's triggers, when it has a `triggers.yaml`.
    pub triggers: Vec<Trigger>,
}

/// Everything that configures the Kubernetes executor of one project.
#[derive(Debug, Clone, Default)]
pub struct ExecutorSources {
    pub project: String,
    /// Project-level config: the Project's inline `k8sExecutor` or the Mage project's
    /// `k8s_executor_config`.
    pub project_config: Option<ConfigSource>,
    /// The full job template named by K8S_CONFIG_FILE.
    pub template: Option<ConfigSource>,
    pub pipelines: Vec<Pipeline>,
}

/// Normalise a repository-relative folder path.
pub fn folder(path: &str) -> String {
    path.trim_start_matches("./").trim_matches('/').to_string()
}

/// Read the executor configuration of every project.
pub fn load(loaded: &mut Loaded) {
    let mut all = Vec::new();
    for project in &loaded.repo.projects {
        let sources = load_project(project, &loaded.repo.files, &mut loaded.diagnostics);
        let blocks = sources
            .pipelines
            .iter()
            .flat_map(|p| &p.blocks)
            .filter_map(|b| b.config.as_ref());
        for config in [&sources.project_config, &sources.template]
            .into_iter()
            .flatten()
            .chain(blocks)
        {
            check_values(
                &config.value,
                &config.file,
                &config.spans,
                &config.pointer,
                &mut loaded.diagnostics,
            );
        }
        if sources.project_config.is_some()
            || sources.template.is_some()
            || !sources.pipelines.is_empty()
        {
            all.push(sources);
        }
    }
    loaded.repo.executor = all;
}

fn load_project(
    project: &Located<ProjectDocument>,
    files: &super::Files,
    diagnostics: &mut Vec<Diagnostic>,
) -> ExecutorSources {
    let spec = &project.doc.spec;
    let mut sources = ExecutorSources {
        project: project.doc.metadata.name.clone(),
        ..Default::default()
    };
    if let Some(inline) = &spec.k8s_executor {
        sources.project_config = Some(ConfigSource {
            value: serde_json::to_value(inline).unwrap_or_default(),
            file: project.file.clone(),
            pointer: "/spec/k8sExecutor".into(),
            spans: project.spans.clone(),
        });
    }

    if let Some(root) = spec.mage_project.as_deref().map(folder) {
        let metadata = format!("{root}/metadata.yaml");
        match files.get(&metadata) {
            None => diagnostics.push(Diagnostic::error(
                &project.file,
                project.pos("/spec/mageProject"),
                "/spec/mageProject",
                format!("`{metadata}` does not exist: not a Mage project folder"),
            )),
            Some(Err(why)) => {
                diagnostics.push(super::unreadable_file(&metadata, why, "this Mage file"))
            }
            Some(Ok(text)) => {
                if let Some(doc) = parse_one(&metadata, text, diagnostics)
                    && let Some(config) =
                        config_at(&doc, &metadata, "/k8s_executor_config", diagnostics)
                {
                    if sources.project_config.is_some() {
                        diagnostics.push(Diagnostic::error(
                            &project.file,
                            project.pos("/spec/k8sExecutor"),
                            "/spec/k8sExecutor",
                            format!(
                                "the project config is set twice: here and in {metadata}; keep one"
                            ),
                        ));
                    } else {
                        sources.project_config = Some(config);
                    }
                }
            }
        }
        let prefix = format!("{root}/pipelines/");
        for (path, content) in files.under(&prefix) {
            let Some((pipeline_dir, "metadata.yaml")) = path[prefix.len()..].split_once('/') else {
                continue;
            };
            let text = match content {
                Ok(text) => text,
                Err(why) => {
                    diagnostics.push(super::unreadable_file(path, why, "this Mage file"));
                    continue;
                }
            };
            if let Some(doc) = parse_one(path, text, diagnostics) {
                let mut pipeline = pipeline(path, pipeline_dir, &doc, diagnostics);
                pipeline.triggers = triggers(
                    &format!("{prefix}{pipeline_dir}/triggers.yaml"),
                    files,
                    diagnostics,
                );
                sources.pipelines.push(pipeline);
            }
        }
    }

    let template_path = spec
        .env
        .iter()
        .find(|v| v.name == "K8S_CONFIG_FILE")
        .and_then(|v| v.value.as_deref().map(|value| (v, value)));
    if let Some((var, path)) = template_path {
        let index = spec
            .env
            .iter()
            .position(|v| std::ptr::eq(v, var))
            .unwrap_or(0);
        let candidates = [
            folder(path),
            spec.mage_project
                .as_deref()
                .map(|root| format!("{}/{}", folder(root), folder(path)))
                .unwrap_or_default(),
        ];
        match candidates.iter().find_map(|c| Some((c, files.get(c)?))) {
            Some((found, Ok(text))) => {
                if let Some(doc) = parse_one(found, text, diagnostics) {
                    sources.template = config_at(&doc, found, "", diagnostics);
                }
            }
            Some((found, Err(why))) => diagnostics.push(super::unreadable_file(
                found,
                why,
                "this K8S_CONFIG_FILE template",
            )),
            None => diagnostics.push(Diagnostic::error(
                &project.file,
                project.pos(&format!("/spec/env/{index}/value")),
                &format!("/spec/env/{index}/value"),
                format!("K8S_CONFIG_FILE `{path}` does not exist in the repository (nor in the Mage project folder)"),
            )),
        }
    }
    sources
}

fn parse_one(file: &str, text: &str, diagnostics: &mut Vec<Diagnostic>) -> Option<yaml::YamlDoc> {
    match yaml::parse(text) {
        Ok(mut docs) if !docs.is_empty() => Some(docs.remove(0)),
        Ok(_) => None,
        Err(err) => {
            diagnostics.push(Diagnostic::error(
                file,
                err.pos,
                "",
                format!("invalid YAML: {}", err.message),
            ));
            None
        }
    }
}

/// The executor config at `pointer` of a document, validated against its schema.
fn config_at(
    doc: &yaml::YamlDoc,
    file: &str,
    pointer: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<ConfigSource> {
    let value = doc.value.pointer(pointer)?.clone();
    if value.is_null() {
        return None;
    }
    let errors = schema::validate_at(Kind::ExecutorConfig, &value, &doc.spans, file, pointer);
    if !errors.is_empty() {
        diagnostics.extend(errors.into_iter().map(|e| e.diagnostic));
        return None;
    }
    let mut value = value;
    let mut spans = doc.spans.clone();
    canonicalise_at(&mut value, &mut spans, file, pointer, diagnostics);
    Some(ConfigSource {
        value,
        file: file.to_string(),
        pointer: pointer.to_string(),
        spans,
    })
}

fn pipeline(
    file: &str,
    dir: &str,
    doc: &yaml::YamlDoc,
    diagnostics: &mut Vec<Diagnostic>,
) -> Pipeline {
    let uuid = doc
        .value
        .get("uuid")
        .and_then(Value::as_str)
        .unwrap_or(dir)
        .to_string();
    let mut blocks = Vec::new();
    for (i, block) in doc
        .value
        .get("blocks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if block.get("executor_type").and_then(Value::as_str) != Some("k8s") {
            continue;
        }
        let pointer = format!("/blocks/{i}");
        let Some(uuid) = block.get("uuid").and_then(Value::as_str) else {
            diagnostics.push(Diagnostic::error(
                file,
                doc.spans.value(&pointer),
                &pointer,
                "a k8s block needs a `uuid`",
            ));
            continue;
        };
        blocks.push(Block {
            uuid: uuid.to_string(),
            pos: doc.spans.value(&pointer),
            pointer: pointer.clone(),
            config: config_at(
                doc,
                file,
                &format!("{pointer}/executor_config"),
                diagnostics,
            ),
        });
    }
    Pipeline {
        uuid,
        file: file.to_string(),
        blocks,
        triggers: Vec::new(),
    }
}

/// The named triggers of Mage's `triggers.yaml` (`triggers: [{name: ...}, ...]`), if the
/// file exists. Only the names matter to berth (job names); the rest is Mage's.
fn triggers(path: &str, files: &super::Files, diagnostics: &mut Vec<Diagnostic>) -> Vec<Trigger> {
    let text = match files.get(path) {
        None => return Vec::new(),
        Some(Err(why)) => {
            diagnostics.push(super::unreadable_file(path, why, "this Mage file"));
            return Vec::new();
        }
        Some(Ok(text)) => text,
    };
    let Some(doc) = parse_one(path, text, diagnostics) else {
        return Vec::new();
    };
    doc.value
        .get("triggers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, trigger)| {
            let pointer = format!("/triggers/{i}/name");
            Some(Trigger {
                name: trigger.get("name")?.as_str()?.to_string(),
                file: path.to_string(),
                pos: doc.spans.value(&pointer),
                pointer,
            })
        })
        .collect()
}
