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

fn resolve_with(
    policy_text: Option<String>,
    project: &str,
    metadata: &str,
) -> (Vec<BlockExecutor>, Vec<Diagnostic>) {
    let mut files = vec![
        SourceFile::new("project.yaml", project),
        SourceFile::new("mage/metadata.yaml", metadata),
        SourceFile::new("mage/pipelines/etl/metadata.yaml", PIPELINE),
    ];
    if let Some(text) = policy_text {
        files.push(SourceFile::new("policy.yaml", text));
    }
    let loaded = crate::load::load(files);
    assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
    let (policies, mut diagnostics) = project_policies(&loaded.repo);
    let (executors, more) = super::resolve(&loaded.repo, &policies);
    diagnostics.extend(more);
    (executors, diagnostics)
}

fn value_and_layer(block: &BlockExecutor, pointer: &str) -> (String, String) {
    let value = block
        .value
        .pointer(pointer)
        .map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string()))
        .unwrap_or_default();
    (
        value,
        block
            .origins
            .get(pointer)
            .map(|o| o.layer.clone())
            .unwrap_or_default(),
    )
}

#[test]
fn without_policy_block_beats_project_beats_env_beats_hardcoded() {
    let (blocks, diagnostics) = resolve_with(None, PROJECT, MAGE_METADATA);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let names: Vec<_> = blocks.iter().map(|b| b.block.as_str()).collect();
    assert_eq!(names, ["load", "export"], "only k8s blocks");
    let load = &blocks[0];
    assert_eq!(
        value_and_layer(load, "/resource_limits/memory"),
        ("4Gi".into(), "block".into())
    );
    assert_eq!(
        value_and_layer(load, "/resource_limits/cpu"),
        ("1000m".into(), "project".into())
    );
    assert_eq!(
        value_and_layer(load, "/namespace"),
        ("project-ns".into(), "project".into())
    );
    assert_eq!(
        value_and_layer(load, "/service_account_name"),
        ("project-sa".into(), "project".into())
    );
    assert_eq!(
        value_and_layer(load, "/resource_requests/cpu"),
        (
            "250m".into(),
            "env K8S_EXECUTOR_DEFAULT_RESOURCE_REQUESTS_CPU".into()
        )
    );
    assert_eq!(
        value_and_layer(load, "/job_name_prefix"),
        ("data-prep".into(), "hardcoded default".into())
    );
    // Origins name the file and line.
    let origin = &load.origins["/resource_limits/memory"];
    assert_eq!(
        (origin.file.as_deref(), origin.line),
        (Some("mage/pipelines/etl/metadata.yaml"), Some(8))
    );
    let origin = &load.origins["/resource_limits/cpu"];
    assert_eq!(
        (origin.file.as_deref(), origin.line),
        (Some("mage/metadata.yaml"), Some(5))
    );
    // A block without executor_config gets the project's value.
    assert_eq!(
        value_and_layer(&blocks[1], "/resource_limits/memory"),
        ("2048Mi".into(), "project".into())
    );
}

#[test]
fn env_defaults_fill_what_project_leaves_unset() {
    let metadata = "k8s_executor_config:\n  resource_limits:\n    cpu: '2'\n";
    let (blocks, _) = resolve_with(None, PROJECT, metadata);
    let export = &blocks[1];
    assert_eq!(
        value_and_layer(export, "/resource_limits/memory"),
        (
            "1Gi".into(),
            "env K8S_EXECUTOR_DEFAULT_RESOURCE_LIMITS_MEMORY".into()
        )
    );
    assert_eq!(
        value_and_layer(export, "/service_account_name"),
        (
            "env-sa".into(),
            "env K8S_EXECUTOR_DEFAULT_SERVICE_ACCOUNT_NAME".into()
        )
    );
    assert_eq!(
        value_and_layer(export, "/namespace"),
        ("default".into(), "hardcoded default".into())
    );
}

#[test]
fn enforced_policy_wins_over_block_and_project_and_warns() {
    let (blocks, diagnostics) =
        resolve_with(Some(policy(true, true, false)), PROJECT, MAGE_METADATA);
    let load = &blocks[0];
    assert_eq!(
        value_and_layer(load, "/resource_limits/memory"),
        ("512Mi".into(), "policy defaults".into())
    );
    assert_eq!(
        value_and_layer(load, "/resource_requests/memory"),
        ("256Mi".into(), "policy defaults".into())
    );
    assert_eq!(
        value_and_layer(load, "/job_name_prefix"),
        ("policy-prefix".into(), "policy defaults".into())
    );
    // Keys the policy does not set still come from block and project.
    assert_eq!(
        value_and_layer(load, "/resource_limits/cpu"),
        ("1000m".into(), "project".into())
    );
    // The override of a different value is a warning at the overridden line.
    let warnings: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(diagnostics.iter().all(|d| !d.is_error()));
    assert!(warnings.iter().any(|w| w.starts_with("mage/pipelines/etl/metadata.yaml:8:7: warning: blocks[0].executor_config.resource_limits.memory: policy `defaults` enforces \"512Mi\" over \"4Gi\" set by the block")), "{warnings:#?}");
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("mage/metadata.yaml:6:5: warning")),
        "{warnings:#?}"
    );
}

#[test]
fn strict_conflict_checking_makes_overrides_errors() {
    let (_, diagnostics) = resolve_with(Some(policy(true, true, true)), PROJECT, MAGE_METADATA);
    assert!(
        diagnostics
            .iter()
            .any(|d| d.is_error() && d.message.contains("enforces \"512Mi\" over")),
        "{diagnostics:#?}"
    );
}

#[test]
fn non_enforced_policy_only_fills_gaps() {
    let (blocks, diagnostics) =
        resolve_with(Some(policy(true, false, true)), PROJECT, MAGE_METADATA);
    assert!(
        diagnostics.is_empty(),
        "no conflicts without enforce: {diagnostics:?}"
    );
    let load = &blocks[0];
    assert_eq!(
        value_and_layer(load, "/resource_limits/memory"),
        ("4Gi".into(), "block".into())
    );
    assert_eq!(
        value_and_layer(load, "/resource_requests/memory"),
        ("256Mi".into(), "policy defaults".into())
    );
    // The policy sits above env-var defaults and hardcoded defaults.
    assert_eq!(
        value_and_layer(load, "/job_name_prefix"),
        ("policy-prefix".into(), "policy defaults".into())
    );
    assert_eq!(
        value_and_layer(load, "/resource_requests/cpu"),
        (
            "250m".into(),
            "env K8S_EXECUTOR_DEFAULT_RESOURCE_REQUESTS_CPU".into()
        )
    );
}

#[test]
fn disabled_policy_does_nothing() {
    let (with_disabled, diagnostics) =
        resolve_with(Some(policy(false, true, true)), PROJECT, MAGE_METADATA);
    let (without, _) = resolve_with(None, PROJECT, MAGE_METADATA);
    assert!(diagnostics.is_empty());
    assert_eq!(with_disabled[0].value, without[0].value);
    assert_eq!(with_disabled[0].origins, without[0].origins);
}

#[test]
fn job_names_interpolate_and_are_checked_not_bent() {
    assert_eq!(
        job_name("data-prep", "daily", "42"),
        "mage-data-prep-block-42"
    );
    // Interpolated as is: a name Kubernetes refuses is reported, never cleaned up.
    assert_eq!(
        job_name("etl-{trigger_name}", "Nightly Run", "7"),
        "mage-etl-Nightly Run-block-7"
    );
    assert!(check_job_name("mage-etl-Nightly Run-block-7").is_err());
    assert!(check_job_name(&job_name("data-prep", "", LONGEST_BLOCK_RUN_ID)).is_ok());
    // 57 characters fit (pods add `-xxxxx` up to 63), 58 do not.
    let fits = format!("mage-{}-block-{LONGEST_BLOCK_RUN_ID}", "x".repeat(35));
    assert_eq!(fits.len(), 57);
    assert!(check_job_name(&fits).is_ok());
    let long = format!("mage-{}-block-{LONGEST_BLOCK_RUN_ID}", "x".repeat(36));
    let why = check_job_name(&long).unwrap_err();
    assert!(why.contains("58 characters; at most 57"), "{why}");
}
