//! Mage project folders: a Project's `mageProject` names a folder holding Mage's own files —
//! `metadata.yaml` (the project-level `k8s_executor_config`) and `pipelines/*/metadata.yaml`
//! (blocks with `executor_type: k8s` and their `executor_config`) — and K8S_CONFIG_FILE, a
//! path inside the Mage container, may name a full job template there. Mage's files carry
//! many keys berth does not care about; only the executor configuration in them is
//! validated. They are read as Mage reads them: with PyYAML's YAML 1.1 typing, and as
//! written (no key is renamed or moved).

use super::schema::{self, Kind};
use super::yaml::{self, Spans};
use super::{Diagnostic, Loaded, Located};
use crate::model::{ProjectDocument, WorkspaceDocument};
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
        for (key, message) in super::names::map_problems(entries, labels) {
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

/// Warnings for keys of the `pod`, `container` and `job` sections that Mage ignores; then
/// the values the API server would refuse (in `diagnostics`).
pub fn check_layer(
    value: &Value,
    file: &str,
    spans: &Spans,
    pointer: &str,
    diagnostics: &mut Vec<Diagnostic>,
) {
    ignored_keys(value, file, spans, pointer, diagnostics);
    check_values(value, file, spans, pointer, diagnostics);
}

fn ignored_keys(
    value: &Value,
    file: &str,
    spans: &Spans,
    pointer: &str,
    diagnostics: &mut Vec<Diagnostic>,
) {
    use crate::model::{CONTAINER_KEYS, JOB_KEYS, POD_KEYS};
    for (section, known) in [
        ("pod", POD_KEYS),
        ("container", CONTAINER_KEYS),
        ("job", JOB_KEYS),
    ] {
        let Some(map) = value.get(section).and_then(Value::as_object) else {
            continue;
        };
        for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
            let at = format!("{pointer}/{section}/{}", yaml::escape_segment(key));
            diagnostics.push(
                Diagnostic::warning(
                    file,
                    spans.key(&at),
                    &at,
                    format!("Mage ignores `{section}.{key}`: it reads only {}", known.join(", ")),
                )
                .with_help(if section == "container" {
                    "other container fields go in `container_config` (a whole V1Container, snake_case keys)"
                } else {
                    "remove it, or check its spelling"
                }),
            );
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub value: Value,
    pub file: String,
    /// Pointer of `value` inside its document.
    pub pointer: String,
    pub spans: Spans,
    /// What Mage or the API server would refuse in this layer, by the top-level key it is
    /// under: an error where a block's configuration takes that key from this layer, a
    /// warning where none does (Mage merges whole top-level keys, so a higher layer's
    /// section hides this one's).
    pub problems: Vec<(String, Diagnostic)>,
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

    /// The document pointer of a key inside this configuration.
    pub fn written_at(&self, pointer: &str) -> String {
        format!("{}{pointer}", self.pointer)
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
    /// The job templates K8S_CONFIG_FILE may name (the project's value and its
    /// workspaces'), by the variable's value.
    pub templates: Vec<Template>,
    pub pipelines: Vec<Pipeline>,
}

impl ExecutorSources {
    /// Every layer berth can read: the project's config, the templates, the blocks'.
    pub fn layers(&self) -> impl Iterator<Item = &ConfigSource> {
        self.project_config
            .iter()
            .chain(self.templates.iter().filter_map(|t| t.source.as_ref()))
            .chain(
                self.pipelines
                    .iter()
                    .flat_map(|p| p.blocks.iter().filter_map(|b| b.config.as_ref())),
            )
    }
}

/// A K8S_CONFIG_FILE value and the file it names in the repository, if berth can see it.
#[derive(Debug, Clone)]
pub struct Template {
    /// The variable's value: a path inside the Mage container.
    pub value: String,
    /// The template, when the path lies in the Mage project folder (the project's code
    /// path); `None` when it lies elsewhere in the container (a mounted ConfigMap…).
    pub source: Option<ConfigSource>,
}

/// Mage's working directory in its image: where a relative K8S_CONFIG_FILE is opened.
pub const MAGE_WORKDIR: &str = "/home/src";
/// Mage's default USER_CODE_PATH.
pub const DEFAULT_USER_CODE_PATH: &str = "/home/src/default_repo";

/// Normalise a repository-relative folder path.
pub fn folder(path: &str) -> String {
    path.trim_start_matches("./").trim_matches('/').to_string()
}

/// Read the executor configuration of every project.
pub fn load(loaded: &mut Loaded) {
    let mut all = Vec::new();
    // Grouped once: a scan of every workspace per project is quadratic at fleet size.
    let mut by_project: std::collections::HashMap<&str, Vec<&Located<WorkspaceDocument>>> =
        std::collections::HashMap::new();
    for w in &loaded.repo.workspaces {
        by_project.entry(&w.doc.spec.project).or_default().push(w);
    }
    for project in &loaded.repo.projects {
        let workspaces = by_project
            .get(project.doc.metadata.name.as_str())
            .cloned()
            .unwrap_or_default();
        let sources = load_project(
            project,
            &workspaces,
            &loaded.repo.files,
            &mut loaded.diagnostics,
        );
        for config in sources.layers() {
            ignored_keys(
                &config.value,
                &config.file,
                &config.spans,
                &config.pointer,
                &mut loaded.diagnostics,
            );
        }
        if sources.project_config.is_some()
            || !sources.templates.is_empty()
            || !sources.pipelines.is_empty()
        {
            all.push(sources);
        }
    }
    loaded.repo.executor = all;
}

fn load_project(
    project: &Located<ProjectDocument>,
    workspaces: &[&Located<WorkspaceDocument>],
    files: &super::Files,
    diagnostics: &mut Vec<Diagnostic>,
) -> ExecutorSources {
    let spec = &project.doc.spec;
    let mut sources = ExecutorSources {
        project: project.doc.metadata.name.clone(),
        ..Default::default()
    };
    if spec.k8s_executor.is_some() {
        diagnostics.push(
            Diagnostic::error(
                &project.file,
                project.spans.key("/spec/k8sExecutor"),
                "/spec/k8sExecutor",
                "Mage never reads a Project's `k8sExecutor`: its project-level executor config is `k8s_executor_config` in the Mage project's metadata.yaml",
            )
            .with_help("move these settings under `k8s_executor_config:` in the metadata.yaml of `mageProject`"),
        );
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
                    sources.project_config = Some(config);
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

    sources.templates = templates(project, workspaces, files, diagnostics);
    sources
}

/// The K8S_CONFIG_FILE values of a project and its workspaces, each with the file it names.
/// The value is a path inside the Mage container, opened by Mage at run time: relative
/// to Mage's working directory, and in the repository only where it lies under the
/// project's code path (where Mage finds the `mageProject` folder).
fn templates(
    project: &Located<ProjectDocument>,
    workspaces: &[&Located<WorkspaceDocument>],
    files: &super::Files,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Template> {
    let spec = &project.doc.spec;
    let code_path = spec
        .code_path()
        .unwrap_or(DEFAULT_USER_CODE_PATH)
        .trim_end_matches('/');
    let mut out: Vec<Template> = Vec::new();
    let setters = std::iter::once((&project.file, &project.spans, &spec.env)).chain(
        workspaces
            .iter()
            .map(|w| (&w.file, &w.spans, &w.doc.spec.env)),
    );
    for (file, spans, env) in setters {
        for (i, var) in env.iter().enumerate() {
            let (true, Some(value)) = (var.name == "K8S_CONFIG_FILE", var.value.as_deref()) else {
                continue;
            };
            if out.iter().any(|t| t.value == value) {
                continue;
            }
            let at = format!("/spec/env/{i}/value");
            let setter = Setter {
                file,
                pos: spans.value(&at),
                pointer: &at,
            };
            let root = spec.mage_project.as_deref();
            out.push(template(
                value,
                &setter,
                code_path,
                root,
                files,
                diagnostics,
            ));
        }
    }
    out
}

/// Where a K8S_CONFIG_FILE value is set: the file, and the value's position and field.
struct Setter<'a> {
    file: &'a str,
    pos: yaml::Pos,
    pointer: &'a str,
}

/// One K8S_CONFIG_FILE value and the file it names in the repository, read when it is
/// there (`root` is the project's `mageProject` folder, `code_path` its place in the
/// container); what keeps berth from reading it is said at the setter.
fn template(
    value: &str,
    setter: &Setter,
    code_path: &str,
    root: Option<&str>,
    files: &super::Files,
    diagnostics: &mut Vec<Diagnostic>,
) -> Template {
    let in_container = if value.starts_with('/') {
        value.to_string()
    } else {
        let absolute = format!("{MAGE_WORKDIR}/{}", value.trim_start_matches("./"));
        diagnostics.push(
            Diagnostic::warning(
                setter.file,
                setter.pos,
                setter.pointer,
                format!("K8S_CONFIG_FILE `{value}` is a path in the Mage container, opened from Mage's working directory: `{absolute}`"),
            )
            .with_help(format!("write the absolute path, e.g. `{code_path}/{}` for a file of the Mage project folder", folder(value))),
        );
        absolute
    };
    let relative = in_container
        .strip_prefix(code_path)
        .and_then(|rest| rest.strip_prefix('/'));
    let (Some(relative), Some(root)) = (relative, root) else {
        diagnostics.push(
            Diagnostic::warning(
                setter.file,
                setter.pos,
                setter.pointer,
                format!("K8S_CONFIG_FILE `{in_container}` lies outside the Mage project folder (`{code_path}` in the container): berth cannot read it, so its predictions of the executor Jobs leave it out"),
            )
            .with_help("keep the template in the Mage project folder (`mageProject`) to have it checked and shown"),
        );
        return Template {
            value: value.to_string(),
            source: None,
        };
    };
    let path = format!("{}/{}", folder(root), folder(relative));
    let source = match files.get(&path) {
        Some(Ok(text)) => parse_one(&path, text, diagnostics)
            .and_then(|doc| config_at(&doc, &path, "", diagnostics)),
        Some(Err(why)) => {
            diagnostics.push(super::unreadable_file(
                &path,
                why,
                "this K8S_CONFIG_FILE template",
            ));
            None
        }
        None => {
            diagnostics.push(
                Diagnostic::error(
                    setter.file,
                    setter.pos,
                    setter.pointer,
                    format!("K8S_CONFIG_FILE `{in_container}` would be `{path}` in the repository, which does not exist: Mage fails every k8s block (FileNotFoundError)"),
                )
                .with_help(format!("the Mage project folder `{}` is `{code_path}` in the container", folder(root))),
            );
            None
        }
    };
    Template {
        value: value.to_string(),
        source,
    }
}

/// A Mage file's first document, typed as PyYAML types it.
fn parse_one(file: &str, text: &str, diagnostics: &mut Vec<Diagnostic>) -> Option<yaml::YamlDoc> {
    match yaml::parse_with(text, yaml::Schema::PyYaml) {
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
    let Some(map) = value.as_object() else {
        let errors = schema::validate_at(Kind::ExecutorConfig, &value, &doc.spans, file, pointer);
        diagnostics.extend(errors.into_iter().map(|e| e.diagnostic));
        return None;
    };
    // Each top-level key on its own, so that each problem is kept with its key.
    let mut problems = Vec::new();
    for (key, section) in map {
        let alone = Value::Object([(key.clone(), section.clone())].into_iter().collect());
        let mut found: Vec<Diagnostic> =
            schema::validate_at(Kind::ExecutorConfig, &alone, &doc.spans, file, pointer)
                .into_iter()
                .map(|e| e.diagnostic)
                .collect();
        check_values(&alone, file, &doc.spans, pointer, &mut found);
        problems.extend(found.into_iter().map(|d| (key.clone(), d)));
    }
    Some(ConfigSource {
        value,
        file: file.to_string(),
        pointer: pointer.to_string(),
        spans: doc.spans.clone(),
        problems,
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
