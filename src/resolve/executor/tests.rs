use super::*;
use crate::load::SourceFile;

const PROJECT: &str = r#"apiVersion: berth/v1alpha1
kind: Project
metadata: {name: p}
spec:
  namespace: p
  image: mageai/mageai:1
  mageProject: mage
  env:
    - {name: K8S_EXECUTOR_DEFAULT_RESOURCE_REQUESTS_CPU, value: 250m}
    - {name: K8S_EXECUTOR_DEFAULT_RESOURCE_LIMITS_MEMORY, value: 1Gi}
    - {name: K8S_EXECUTOR_DEFAULT_SERVICE_ACCOUNT_NAME, value: env-sa}
"#;

const MAGE_METADATA: &str = "project_uuid: x
k8s_executor_config:
  namespace: project-ns
  resource_limits:
    cpu: 1000m
    memory: 2048Mi
  service_account_name: project-sa
";

const PIPELINE: &str = "uuid: etl
blocks:
- uuid: load
  type: data_loader
  executor_type: k8s
  executor_config:
    resource_limits:
      memory: 4Gi
- uuid: plain
  type: transformer
  executor_type: local_python
- uuid: export
  type: data_exporter
  executor_type: k8s
";

fn policy(enabled: bool, enforce: bool, strict: bool) -> String {
    format!(
        "apiVersion: berth/v1alpha1
kind: Policy
metadata: {{name: defaults}}
spec:
  k8sExecutorDefaults:
    enabled: {enabled}
    enforce: {enforce}
    strictConflicts: {strict}
    config:
      resource_limits:
        memory: 512Mi
      resource_requests:
        memory: 256Mi
      job_name_prefix: policy-prefix
"
    )
}

const WORKSPACE: &str = "apiVersion: berth/v1alpha1
kind: Workspace
metadata: {name: w}
spec:
  project: p
";

fn resolve_with(
    policy_text: Option<String>,
    project: &str,
    metadata: &str,
) -> (
    Vec<BlockExecutor>,
    Vec<Diagnostic>,
    crate::resolve::Resolved,
) {
    let mut files = vec![
        SourceFile::new("project.yaml", project),
        SourceFile::new("workspace.yaml", WORKSPACE),
        SourceFile::new("mage/metadata.yaml", metadata),
        SourceFile::new("mage/pipelines/etl/metadata.yaml", PIPELINE),
    ];
    if let Some(text) = policy_text {
        files.push(SourceFile::new("policy.yaml", text));
    }
    let loaded = crate::load::load(files);
    assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
    let (resolved, diagnostics) = crate::resolve::resolve(&loaded.repo);
    (resolved.executors.clone(), diagnostics, resolved)
}

/// A top-level key's value (as text) and the layer it comes from.
fn value_and_layer(block: &BlockExecutor, key: &str) -> (String, String) {
    let value = block
        .config
        .get(key)
        .map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string()))
        .unwrap_or_default();
    (
        value,
        block
            .origins
            .get(key)
            .map(|o| o.layer.clone())
            .unwrap_or_default(),
    )
}

/// The Job of a block in the one workspace.
fn job_of(resolved: &crate::resolve::Resolved, block: &BlockExecutor) -> serde_json::Value {
    let ws = &resolved.workspaces[0];
    let pod = crate::render::server_pod(ws);
    crate::render::executor::job(block, &block.runs[0], ws, &pod).unwrap()
}

#[test]
fn a_block_section_replaces_the_project_section_whole() {
    let (blocks, diagnostics, resolved) = resolve_with(None, PROJECT, MAGE_METADATA);
    // Warnings only: the project's namespace is not the workspace's (berth grants nothing
    // there), once per block; and the block's `resource_limits` drops the project's CPU
    // limit, at the block's section.
    assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:?}");
    let outside = diagnostics
        .iter()
        .filter(|d| {
            d.message
                .contains("berth grants Mage's executor nothing there")
        })
        .count();
    assert_eq!(outside, 2, "one per block: {diagnostics:?}");
    let narrowed: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.message.contains("replaces the project's"))
        .map(|d| d.to_string())
        .collect();
    assert_eq!(
        narrowed,
        [
            "mage/pipelines/etl/metadata.yaml:7:5: warning: blocks[0].executor_config.resource_limits: this `resource_limits` replaces the project's (mage/metadata.yaml:4) whole, as Mage merges top-level keys only: the Job gets none of cpu: \"1000m\" (help: repeat here what the block should keep of the project's section)"
        ]
    );
    let names: Vec<_> = blocks.iter().map(|b| b.block.as_str()).collect();
    assert_eq!(names, ["load", "export"], "only k8s blocks");
    let load = &blocks[0];
    assert_eq!(
        value_and_layer(load, "resource_limits"),
        (r#"{"memory":"4Gi"}"#.into(), "block".into())
    );
    assert_eq!(
        value_and_layer(load, "namespace"),
        ("project-ns".into(), "project".into())
    );
    // No CPU limit from the project: Mage's merge_dict replaces the section.
    let job = job_of(&resolved, load);
    let resources = &job["spec"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(resources["limits"], serde_json::json!({"memory": "4Gi"}));
    // Origins name the file and line.
    let origin = &load.origins["resource_limits"];
    assert_eq!(
        (origin.file.as_deref(), origin.line),
        (Some("mage/pipelines/etl/metadata.yaml"), Some(7))
    );
    let origin = &load.origins["service_account_name"];
    assert_eq!(
        (origin.file.as_deref(), origin.line),
        (Some("mage/metadata.yaml"), Some(7))
    );
    // A block without executor_config gets the project's sections.
    assert_eq!(
        value_and_layer(&blocks[1], "resource_limits"),
        (
            r#"{"cpu":"1000m","memory":"2048Mi"}"#.into(),
            "project".into()
        )
    );
}

#[test]
fn env_defaults_replace_only_mages_hardcoded_defaults() {
    let (blocks, _, resolved) = resolve_with(None, PROJECT, MAGE_METADATA);
    let job = job_of(&resolved, &blocks[1]);
    let spec = &job["spec"]["template"]["spec"];
    // The project sets limits and an account; requests are left to Mage's default (none),
    // which the env-var default replaces.
    assert_eq!(
        spec["containers"][0]["resources"]["requests"]["cpu"],
        "250m"
    );
    assert_eq!(
        spec["containers"][0]["resources"]["limits"]["memory"],
        "2048Mi"
    );
    assert_eq!(spec["serviceAccountName"], "project-sa");
    let metadata = "k8s_executor_config:\n  resource_limits:\n    cpu: '2'\n";
    let (blocks, _, resolved) = resolve_with(None, PROJECT, metadata);
    let job = job_of(&resolved, &blocks[1]);
    let spec = &job["spec"]["template"]["spec"];
    assert_eq!(
        spec["containers"][0]["resources"]["limits"]["memory"],
        "1Gi"
    );
    assert_eq!(spec["serviceAccountName"], "env-sa");
    // KUBE_NAMESPACE, which every workspace gets, is where the Jobs go.
    assert_eq!(job["metadata"]["namespace"], "p");
}

#[test]
fn an_enforced_policy_replaces_sections_whole_and_says_so() {
    let (blocks, diagnostics, _) =
        resolve_with(Some(policy(true, true, false)), PROJECT, MAGE_METADATA);
    let load = &blocks[0];
    assert_eq!(
        value_and_layer(load, "resource_limits"),
        (r#"{"memory":"512Mi"}"#.into(), "policy defaults".into())
    );
    assert_eq!(
        value_and_layer(load, "job_name_prefix"),
        ("policy-prefix".into(), "policy defaults".into())
    );
    // Keys the policy does not set still come from block and project.
    assert_eq!(
        value_and_layer(load, "namespace"),
        ("project-ns".into(), "project".into())
    );
    let warnings: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(diagnostics.iter().all(|d| !d.is_error()), "{warnings:#?}");
    assert!(warnings.iter().any(|w| w.starts_with("mage/pipelines/etl/metadata.yaml:7:5: warning: blocks[0].executor_config.resource_limits: policy `defaults` enforces `resource_limits` ({\"memory\":\"512Mi\"}), which replaces the block's")), "{warnings:#?}");
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("mage/metadata.yaml:4:3: warning")),
        "{warnings:#?}"
    );
}

#[test]
fn strict_conflict_checking_makes_replacements_errors() {
    let (_, diagnostics, _) = resolve_with(Some(policy(true, true, true)), PROJECT, MAGE_METADATA);
    assert!(
        diagnostics
            .iter()
            .any(|d| d.is_error() && d.message.contains("enforces `resource_limits`")),
        "{diagnostics:#?}"
    );
}

#[test]
fn a_policy_that_does_not_enforce_fills_top_level_gaps() {
    let (blocks, diagnostics, _) =
        resolve_with(Some(policy(true, false, true)), PROJECT, MAGE_METADATA);
    assert!(
        diagnostics.iter().all(|d| !d.message.contains("enforces")),
        "no conflicts without enforce: {diagnostics:?}"
    );
    let load = &blocks[0];
    assert_eq!(
        value_and_layer(load, "resource_limits"),
        (r#"{"memory":"4Gi"}"#.into(), "block".into())
    );
    assert_eq!(
        value_and_layer(load, "resource_requests"),
        (r#"{"memory":"256Mi"}"#.into(), "policy defaults".into())
    );
    assert_eq!(
        value_and_layer(load, "job_name_prefix"),
        ("policy-prefix".into(), "policy defaults".into())
    );
}

#[test]
fn a_disabled_policy_does_nothing() {
    let (with_disabled, diagnostics, _) =
        resolve_with(Some(policy(false, true, true)), PROJECT, MAGE_METADATA);
    let (without, same, _) = resolve_with(None, PROJECT, MAGE_METADATA);
    assert_eq!(diagnostics, same);
    assert_eq!(with_disabled[0].config, without[0].config);
    assert_eq!(with_disabled[0].origins, without[0].origins);
}

#[test]
fn job_names_are_what_the_api_server_takes() {
    use crate::mage::executor::{ServerEnv, job_name, job_name_prefix};
    let env = ServerEnv::default();
    let prefix = job_name_prefix(
        Some(&serde_json::json!("etl-{trigger_name}")),
        "Nightly Run",
    );
    assert_eq!(
        job_name(&env, &prefix.unwrap(), "7"),
        "mage-etl-nightly-run-block-7"
    );
    assert!(check_job_name("mage-etl-Nightly Run-block-7").is_err());
    // 63 characters fit (the Job's name is a label value of its pods), 64 do not.
    let fits = format!("mage-{}-block-{LONGEST_BLOCK_RUN_ID}", "x".repeat(41));
    assert_eq!(fits.len(), 63);
    assert!(check_job_name(&fits).is_ok());
    let long = format!("mage-{}-block-{LONGEST_BLOCK_RUN_ID}", "x".repeat(42));
    let why = check_job_name(&long).unwrap_err();
    assert!(why.contains("64 characters; at most 63"), "{why}");
}
