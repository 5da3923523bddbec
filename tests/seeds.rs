//! Seed fidelity: each rule of the seeds (`../shared/seeds/`) that berth checks, with the
//! sentence it comes from. Most run on in-memory repositories through the library; the
//! last one gives rendered output to kubectl (a YAML 1.1 reader: go-yaml v2) at a
//! server-side dry run against the test control plane. (tests/yaml.rs reads generated
//! documents back in kubectl, PyYAML, ruamel.yaml and serde_yaml.)

mod support;

use berth::load::SourceFile;
use berth::resolve::executor::precedence_text;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::Stdio;

fn files(list: &[(&str, String)]) -> Vec<SourceFile> {
    list.iter()
        .map(|(path, text)| SourceFile::new(*path, text.as_str()))
        .collect()
}

/// Diagnostics of a repository, one `file:line:column: severity: field: message` each.
fn diagnostics(list: &[(&str, String)]) -> Vec<String> {
    berth::validated(files(list))
        .diagnostics
        .iter()
        .map(|d| d.to_string())
        .collect()
}

fn has(found: &[String], prefix: &str, needle: &str) -> bool {
    found
        .iter()
        .any(|d| d.starts_with(prefix) && d.contains(needle))
}

const PROJECT: &str = "apiVersion: berth/v1alpha1
kind: Project
metadata: {name: p}
spec:
  namespace: p
  image: mageai/mageai:1
  mageProject: mage
";

/// A project without a Mage project folder.
const PLAIN: &str = "apiVersion: berth/v1alpha1
kind: Project
metadata: {name: p}
spec:
  namespace: p
  image: mageai/mageai:1
";

fn pipeline(config: &str) -> String {
    format!(
        "uuid: etl\nblocks:\n- uuid: load\n  executor_type: k8s\n  executor_config:\n{}",
        indent(config, 4)
    )
}

fn indent(text: &str, width: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(width)))
        .collect()
}

fn policy(enforce: bool, config: &str) -> String {
    format!(
        "apiVersion: berth/v1alpha1\nkind: Policy\nmetadata: {{name: defaults}}\nspec:\n  k8sExecutorDefaults:\n    enforce: {enforce}\n    config:\n{}",
        indent(config, 6)
    )
}

/// The Job of the only block of a repository, and its diagnostics.
fn job_of(list: &[(&str, String)]) -> (Value, Vec<String>) {
    let desired = berth::validated(files(list));
    let found: Vec<String> = desired.diagnostics.iter().map(|d| d.to_string()).collect();
    let jobs = berth::render::executor::jobs(&desired.resolved);
    (jobs.into_iter().next().unwrap_or(Value::Null), found)
}

// ---- Seed 001: Mage's Kubernetes executor --------------------------------------------

/// Seed 001: "Use this to enforce cluster-wide defaults (e.g. resource limits, service
/// account) that users cannot override", merged the way Mage merges: an enforced key wins
/// whole. Mage's own rules decide between its spellings: the top-level
/// `service_account_name` beats `pod.service_account_name` from any layer, so a block's
/// pod-level account cannot bypass an enforced account; a block's `container_config`
/// builds the container Mage merges *over* `container`'s, which a policy's `container`
/// cannot stop, and berth says so at the block (a guardrail `forbiddenExecutorSettings:
/// [container_config]` forbids it).
#[test]
fn an_enforced_policy_wins_whole_keys_and_mages_spellings_decide_the_rest() {
    let (job, found) = job_of(&[
        ("project.yaml", PROJECT.into()),
        ("workspace.yaml", WORKSPACE.into()),
        ("mage/metadata.yaml", "project_type: standalone\n".into()),
        (
            "mage/pipelines/etl/metadata.yaml",
            pipeline("pod:\n  service_account_name: block-sa\nresource_limits:\n  memory: 64Gi"),
        ),
        (
            "policy.yaml",
            policy(
                true,
                "service_account_name: policy-sa\nresource_limits:\n  memory: 1Gi",
            ),
        ),
    ]);
    assert_eq!(
        job["spec"]["template"]["spec"]["serviceAccountName"],
        "policy-sa"
    );
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"],
        json!({"memory": "1Gi"})
    );
    assert!(
        has(
            &found,
            "mage/pipelines/etl/metadata.yaml:8:5: warning: blocks[0].executor_config.resource_limits: ",
            "policy `defaults` enforces `resource_limits`"
        ),
        "{found:#?}"
    );
    let (job, found) = job_of(&[
        ("project.yaml", PROJECT.into()),
        ("workspace.yaml", WORKSPACE.into()),
        ("mage/metadata.yaml", "project_type: standalone\n".into()),
        (
            "mage/pipelines/etl/metadata.yaml",
            pipeline("container_config:\n  image: block/image:1"),
        ),
        (
            "policy.yaml",
            policy(true, "container:\n  image: policy/image:1"),
        ),
    ]);
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"], "block/image:1",
        "Mage's merge_containers"
    );
    assert_eq!(container["name"], "mage-data");
    assert!(
        has(
            &found,
            "mage/pipelines/etl/metadata.yaml:6:5: warning: blocks[0].executor_config.container_config: ",
            "merges over the enforced `container`"
        ),
        "{found:#?}"
    );
}

/// Seed 001: "You can override these defaults at the block level, project level, or with
/// a full Kubernetes job template." The template is under block and project config, key by
/// top-level key (`BaseConfig.load`), and its `metadata` makes Mage use
/// `metadata.namespace` (else KUBE_NAMESPACE) whatever `namespace` the block sets: berth
/// follows that and says so at the block's `namespace`.
#[test]
fn the_job_template_fills_top_level_keys_and_its_metadata_picks_the_namespace() {
    let project = format!(
        "{PROJECT}  userCodePath: /home/src/p\n  env:\n    - {{name: K8S_CONFIG_FILE, value: /home/src/p/template.yaml}}\n"
    );
    let (job, found) = job_of(&[
        ("project.yaml", project),
        ("workspace.yaml", WORKSPACE.into()),
        ("mage/metadata.yaml", "project_type: standalone\n".into()),
        (
            "mage/pipelines/etl/metadata.yaml",
            pipeline("namespace: block-ns\nservice_account_name: block-sa"),
        ),
        (
            "mage/template.yaml",
            "metadata:\n  labels: {team: data}\npod:\n  service_account_name: template-sa\n".into(),
        ),
    ]);
    assert_eq!(
        job["metadata"]["namespace"], "p",
        "KUBE_NAMESPACE: {found:#?}"
    );
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["team"],
        "data"
    );
    assert_eq!(
        job["spec"]["template"]["spec"]["serviceAccountName"],
        "block-sa"
    );
    assert!(
        has(
            &found,
            "mage/pipelines/etl/metadata.yaml:6:5: warning: blocks[0].executor_config.namespace: ",
            "Mage ignores it"
        ),
        "{found:#?}"
    );
}

/// Seed 001 names the policy's keys "the same structure as project-level
/// k8s_executor_config", and a policy's `forbiddenExecutorSettings` names them as Mage
/// writes them: each spelling is a setting of its own.
#[test]
fn forbidden_executor_settings_name_mages_keys_as_written() {
    let guardrail = "apiVersion: berth/v1alpha1\nkind: Policy\nmetadata: {name: g}\nspec:\n  guardrails:\n    forbiddenExecutorSettings: [pod.service_account_name, container_config]\n";
    let found = diagnostics(&[
        ("project.yaml", PROJECT.into()),
        ("workspace.yaml", WORKSPACE.into()),
        ("mage/metadata.yaml", "project_type: standalone\n".into()),
        (
            "mage/pipelines/etl/metadata.yaml",
            pipeline("service_account_name: sa\ncontainer_config:\n  image: x:1"),
        ),
        ("policy.yaml", guardrail.into()),
    ]);
    assert_eq!(
        found,
        [
            "mage/pipelines/etl/metadata.yaml:7:5: error: blocks[0].executor_config.container_config: `container_config` is forbidden (help: policy `g` (policy.yaml:6:59))",
        ]
    );
}

/// Guardrails judge the Job Mage builds: a block's `resource_limits: {memory: 4Gi}` over a
/// project's `{cpu: 1, memory: 2Gi}` leaves the Job without a CPU limit (Mage's
/// `merge_dict` replaces the section), which `requiredExecutorLimits: [cpu]` refuses at
/// the block's section; `maxExecutorResources` judges the values the Job has.
#[test]
fn executor_guardrails_judge_the_job_mage_builds() {
    let guardrail = |rules: &str| {
        format!(
            "apiVersion: berth/v1alpha1\nkind: Policy\nmetadata: {{name: g}}\nspec:\n  guardrails:\n{}",
            indent(rules, 4)
        )
    };
    let repo = |rules: &str| {
        diagnostics(&[
            ("project.yaml", PROJECT.into()),
            ("workspace.yaml", WORKSPACE.into()),
            (
                "mage/metadata.yaml",
                "k8s_executor_config:\n  resource_limits: {cpu: '1', memory: 2Gi}\n".into(),
            ),
            (
                "mage/pipelines/etl/metadata.yaml",
                pipeline("resource_limits:\n  memory: 4Gi"),
            ),
            ("policy.yaml", guardrail(rules)),
        ])
    };
    let found = repo("requiredExecutorLimits: [cpu]");
    assert!(
        has(
            &found,
            "mage/pipelines/etl/metadata.yaml:6:5: error: blocks[0].executor_config.resource_limits: ",
            "the Job of k8s block `load` has no cpu limit"
        ),
        "{found:#?}"
    );
    let found = repo("maxExecutorResources:\n  limits: {memory: 3Gi}");
    assert!(
        has(
            &found,
            "mage/pipelines/etl/metadata.yaml:6:5: error: ",
            "limits 4Gi of memory, above the maximum 3Gi"
        ),
        "{found:#?}"
    );
    // Within bounds, no error (the block's section still warns that it drops the CPU).
    let found = repo("maxExecutorResources:\n  limits: {memory: 8Gi}");
    assert!(found.iter().all(|d| !d.contains(": error: ")), "{found:#?}");
    assert!(
        has(
            &found,
            "mage/pipelines/etl/metadata.yaml:6:5: warning: ",
            "the Job gets none of cpu: \"1\""
        ),
        "{found:#?}"
    );
}

/// Seed 001's settings are "environment variables" of the Mage server, which runs in the
/// workspace: a project variable no workspace inherits configures nothing (the sample
/// lists `K8S_*` in `userDefinedVars`), and says so at the variable.
#[test]
fn executor_settings_no_workspace_inherits_are_warned_about() {
    let project = format!(
        "{PROJECT}  inheritance:\n    userDefinedVars: [A]\n  env:\n    - {{name: A, value: a}}\n    - {{name: K8S_EXECUTOR_DEFAULT_RESOURCE_LIMITS_CPU, value: 500m}}\n"
    );
    let repo = |project: String| {
        diagnostics(&[
            ("project.yaml", project),
            ("workspace.yaml", WORKSPACE.into()),
            ("mage/metadata.yaml", "project_type: standalone\n".into()),
            (
                "mage/pipelines/etl/metadata.yaml",
                pipeline("job: {backoff_limit: 1}"),
            ),
        ])
    };
    let found = repo(project.clone());
    assert!(
        has(
            &found,
            "project.yaml:12:7: warning: spec.env[1]: ",
            "Mage's executor reads K8S_EXECUTOR_DEFAULT_RESOURCE_LIMITS_CPU in the workspaces' Mage servers, and no workspace of project `p` inherits it"
        ),
        "{found:#?}"
    );
    let inherited = project.replace("userDefinedVars: [A]", "userDefinedVars: [A, \"K8S_*\"]");
    assert_eq!(repo(inherited), Vec::<String>::new());
}

/// Seed 001: "So when enforce: true, the policy has the highest priority; when enforce:
/// false, block and project are higher and the policy only supplies missing values." The
/// precedence is stated once in code; `explain` prints it and the README says it in the
/// same words.
#[test]
fn the_precedence_is_stated_once_in_explain_and_readme() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    for enforce in [Some(true), Some(false), None] {
        let line = precedence_text(enforce);
        assert!(readme.contains(&line), "README lacks `{line}`");
    }
    assert_eq!(
        precedence_text(Some(true)),
        "policy (enforced) → block → project → template → env-var defaults → defaults"
    );
    assert_eq!(
        precedence_text(Some(false)),
        "block → project → policy (fills gaps) → template → env-var defaults → defaults"
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-repo");
    let desired = berth::validated(berth::source::read_dir(&root).unwrap());
    let text =
        berth::explain::explain(&desired.resolved, "analytics/etl_daily/load_orders").unwrap();
    assert!(
        text.contains(&format!(
            "precedence (highest first, per top-level key: Mage merges no deeper): {}",
            precedence_text(Some(true))
        )),
        "{text}"
    );
}

/// Seed 001: "The Kubernetes job name is in this format: mage-{job_name_prefix}-block-
/// {block_run_id}" and "You can interpolate the trigger name in the job_name_prefix field
/// with the format {trigger_name}", as Mage's code does it: `{MAGE_CLUSTER_UUID}-…`, the
/// trigger's name cleaned (`clean_name`: lower case, other characters to `-`). A prefix
/// that makes a name the API server refuses (over 63 characters, or not a DNS name) is an
/// error at validate, at the line that sets it; triggers Mage cleans up are not.
#[test]
fn job_names_the_api_server_would_refuse_are_errors_at_validate() {
    let found = diagnostics(&[
        ("project.yaml", PROJECT.into()),
        ("workspace.yaml", WORKSPACE.into()),
        (
            "mage/metadata.yaml",
            "k8s_executor_config:\n  job_name_prefix: Data_Prep\n".into(),
        ),
        (
            "mage/pipelines/etl/metadata.yaml",
            pipeline("resource_limits: {cpu: '1'}"),
        ),
    ]);
    assert!(
        has(
            &found,
            "mage/metadata.yaml:2:3: error: k8s_executor_config.job_name_prefix: ",
            "gives Job names like `mage-Data_Prep-block-2147483647`, which the API server refuses"
        ),
        "{found:#?}"
    );
    let long = "x".repeat(42);
    let found = diagnostics(&[
        ("project.yaml", PROJECT.into()),
        ("workspace.yaml", WORKSPACE.into()),
        ("mage/metadata.yaml", "project_type: standalone\n".into()),
        (
            "mage/pipelines/etl/metadata.yaml",
            pipeline(&format!("job_name_prefix: {long}")),
        ),
    ]);
    assert!(
        has(
            &found,
            "mage/pipelines/etl/metadata.yaml:6:5: error: blocks[0].executor_config.job_name_prefix: ",
            "it is 64 characters; at most 63"
        ),
        "{found:#?}"
    );
    // Mage cleans trigger names: `Ad Hoc` and `nightly_sync` make valid names.
    let repo = [
        ("project.yaml", PROJECT.to_string()),
        ("workspace.yaml", WORKSPACE.to_string()),
        ("mage/metadata.yaml", "k8s_executor_config:\n  job_name_prefix: etl-{trigger_name}\n".to_string()),
        ("mage/pipelines/etl/metadata.yaml", pipeline("resource_limits: {cpu: '1'}")),
        (
            "mage/pipelines/etl/triggers.yaml",
            "triggers:\n- name: nightly_sync\n  schedule_type: time\n- name: Ad Hoc\n  schedule_type: api\n".to_string(),
        ),
    ];
    assert_eq!(diagnostics(&repo), Vec::<String>::new());
    // A trigger whose cleaned name is too long is reported at the trigger.
    let mut repo = repo;
    repo[4].1 = format!(
        "triggers:\n- name: {}\n  schedule_type: time\n",
        "Long ".repeat(10)
    );
    assert!(
        has(
            &diagnostics(&repo),
            "mage/pipelines/etl/triggers.yaml:2:9: error: triggers[0].name: ",
            "trigger `Long Long"
        ),
        "{:#?}",
        diagnostics(&repo)
    );
}

/// The Job Mage builds adds the workspace's pod to the config (its volumes after the
/// config's, its mounts where not equal to one of the config's), and the API server holds
/// a pod's volume names and each container's mount paths unique: a repeat, in the config or
/// against the workspace's pod, is an error at the config's key, not a Job refused at run
/// time (found by tests/mage.rs against Mage and the API server).
#[test]
fn volumes_and_mount_paths_the_job_repeats_are_errors_at_the_config() {
    let repo = |config: &str| {
        diagnostics(&[
            ("project.yaml", PROJECT.into()),
            ("workspace.yaml", WORKSPACE.into()),
            (
                "mage/metadata.yaml",
                format!("k8s_executor_config:\n{}", indent(config, 2)),
            ),
            (
                "mage/pipelines/etl/metadata.yaml",
                pipeline("resource_limits: {cpu: '1'}"),
            ),
        ])
    };
    let volume = "pod: {volumes: [{name: v, config_map: {name: cm}}]}\n";
    let found = repo(&format!(
        "{volume}container: {{volume_mounts: [{{name: v, mount_path: /v}}, {{name: v, mount_path: /v, read_only: true}}]}}\n"
    ));
    assert!(
        has(
            &found,
            "mage/metadata.yaml:3:3: error: k8s_executor_config.container: ",
            "mounts two volumes at `/v`"
        ),
        "{found:#?}"
    );
    // The workspace's Mage server mounts its data at /home/src: the Job has it too.
    let found = repo(&format!(
        "{volume}container: {{volume_mounts: [{{name: v, mount_path: /home/src}}]}}\n"
    ));
    assert!(
        has(
            &found,
            "mage/metadata.yaml:3:3: error: k8s_executor_config.container: ",
            "mounts two volumes at `/home/src`"
        ),
        "{found:#?}"
    );
    let found = repo(
        "pod: {volumes: [{name: v, config_map: {name: a}}, {name: v, config_map: {name: b}}]}\ncontainer: {volume_mounts: [{name: v, mount_path: /v}]}\n",
    );
    assert!(
        has(
            &found,
            "mage/metadata.yaml:2:3: error: k8s_executor_config.pod: ",
            "has two volumes named `v`"
        ),
        "{found:#?}"
    );
    // One volume at two paths is fine.
    let found = repo(&format!(
        "{volume}container: {{volume_mounts: [{{name: v, mount_path: /v}}, {{name: v, mount_path: /w}}]}}\n"
    ));
    assert!(!found.iter().any(|d| d.contains(": error: ")), "{found:#?}");
}

/// Seed 001's default policy file: "tolerations: []", "volumes: []", "env: []",
/// "volume_mounts: []" with "enforce: true". Mage merges top-level keys whole, so an
/// enforced `pod` replaces every block's and project's `pod`: a warning at each replaced
/// section says what goes.
#[test]
fn an_enforced_section_warns_at_each_section_it_replaces() {
    let found = diagnostics(&[
        ("project.yaml", PROJECT.into()),
        ("workspace.yaml", WORKSPACE.into()),
        (
            "mage/metadata.yaml",
            "k8s_executor_config:\n  pod:\n    tolerations:\n    - {key: dedicated, operator: Exists}\n".into(),
        ),
        (
            "mage/pipelines/etl/metadata.yaml",
            "uuid: etl\nblocks:\n- uuid: load\n  executor_type: k8s\n- uuid: train\n  executor_type: k8s\n  executor_config:\n    pod:\n      volumes: [{name: v, empty_dir: {}}]\n".into(),
        ),
        ("policy.yaml", policy(true, "pod:\n  tolerations: []\n  volumes: []\ncontainer:\n  env: []")),
    ]);
    assert!(
        has(
            &found,
            "mage/metadata.yaml:2:3: warning: k8s_executor_config.pod: ",
            "policy `defaults` enforces `pod` ({\"tolerations\":[],\"volumes\":[]}), which replaces the project's `pod`"
        ),
        "{found:#?}"
    );
    assert!(
        has(
            &found,
            "mage/pipelines/etl/metadata.yaml:8:5: warning: blocks[1].executor_config.pod: ",
            "which replaces the block's `pod`"
        ),
        "{found:#?}"
    );
    // No block or project sets `container`: nothing is replaced, nothing said.
    assert!(
        !found.iter().any(|d| d.contains("`container`")),
        "{found:#?}"
    );
}

// ---- Seed 000: Mage Pro workspaces ----------------------------------------------------

const SECRET_PROJECT: &str = "apiVersion: berth/v1alpha1
kind: Project
metadata: {name: p}
spec:
  namespace: p
  image: mageai/mageai:1
  env:
    - {name: DB_PASSWORD, secretRef: {name: db, key: password}}
    - {name: SHARE_SECRETS_ACROSS_WORKSPACES, value: \"1\"}
";

const WORKSPACE: &str = "apiVersion: berth/v1alpha1
kind: Workspace
metadata: {name: ws}
spec:
  project: p
  environment: dev
";

fn env_of(list: &[(&str, String)]) -> BTreeMap<String, String> {
    let desired = berth::validated(files(list));
    assert!(!desired.has_errors(), "{:#?}", desired.diagnostics);
    desired.resolved.workspaces[0]
        .env
        .iter()
        .map(|v| {
            let value = match &v.value {
                berth::resolve::VarValue::Literal(text) => text.clone(),
                berth::resolve::VarValue::Secret(s) => format!("secret {}/{}", s.name, s.key),
            };
            (v.name.clone(), format!("{value} ({})", v.source))
        })
        .collect()
}

/// Seed 000: "To share secrets across different workspaces developers need to create a
/// custom environment variable called SHARE_SECRETS_ACROSS_WORKSPACES then set the value
/// to 1 to enable this feature." Set that way on the project, secrets are shared (not
/// half: the secret crosses, and the workspace gets the variable); any other value, or
/// one that contradicts `shareSecretsAcrossWorkspaces`, is an error at the value.
#[test]
fn share_secrets_set_the_seeds_way_shares_secrets() {
    let env = env_of(&[
        ("p.yaml", SECRET_PROJECT.into()),
        ("ws.yaml", WORKSPACE.into()),
    ]);
    assert_eq!(env["DB_PASSWORD"], "secret db/password (project env)");
    assert_eq!(env["SHARE_SECRETS_ACROSS_WORKSPACES"], "1 (built-in)");

    let off = SECRET_PROJECT.replace("value: \"1\"", "value: \"0\"");
    let env = env_of(&[("p.yaml", off.clone()), ("ws.yaml", WORKSPACE.into())]);
    assert!(
        !env.contains_key("DB_PASSWORD") && !env.contains_key("SHARE_SECRETS_ACROSS_WORKSPACES"),
        "{env:#?}"
    );

    let found = diagnostics(&[(
        "p.yaml",
        SECRET_PROJECT.replace("value: \"1\"", "value: \"yes\""),
    )]);
    assert_eq!(
        found,
        [
            "p.yaml:9:54: error: spec.env[1].value: SHARE_SECRETS_ACROSS_WORKSPACES is `yes`; Mage Pro reads `1` (share secrets across workspaces) or `0` (help: or use `shareSecretsAcrossWorkspaces: true`)"
        ]
    );
    let found = diagnostics(&[(
        "p.yaml",
        format!("{off}  shareSecretsAcrossWorkspaces: true\n"),
    )]);
    assert!(
        has(
            &found,
            "p.yaml:9:54: error: spec.env[1].value: ",
            "SHARE_SECRETS_ACROSS_WORKSPACES=0 contradicts `shareSecretsAcrossWorkspaces: true`"
        ),
        "{found:#?}"
    );
    let found = diagnostics(&[(
        "p.yaml",
        format!("{SECRET_PROJECT}  shareSecretsAcrossWorkspaces: false\n"),
    )]);
    assert!(
        has(
            &found,
            "p.yaml:9:54: error: ",
            "contradicts `shareSecretsAcrossWorkspaces: false`"
        ),
        "{found:#?}"
    );
}

/// Seed 000: "{pattern}: wildcard/regex pattern for matching variables." berth's regexes
/// carry `re:`; one written without it would match nothing as a wildcard, so validate
/// refuses it with the spelling that works, at its position.
#[test]
fn a_regex_without_re_is_refused_not_silently_empty() {
    let project = |pattern: &str| {
        format!("{SECRET_PROJECT}  inheritance:\n    byEnvironment:\n      prod: [\"{pattern}\"]\n")
    };
    let found = diagnostics(&[("p.yaml", project("^PROD_.*$"))]);
    assert_eq!(
        found,
        [
            "p.yaml:12:14: error: spec.inheritance.byEnvironment.prod[0]: invalid pattern `^PROD_.*$`: reads as a regular expression, but without `re:` it is a wildcard that matches no variable names: write `re:^PROD_.*$`"
        ]
    );
    let found = diagnostics(&[("p.yaml", project("re:^DB_.*$"))]);
    assert!(found.is_empty(), "{found:#?}");
}

/// Seed 000: "It accepts a comma-separated list of variable names … If USER_DEFINED_VARS is
/// set: only the specified variables will be inherited." and, of the same list, "(e.g.
/// DEV_ENV_*)". Entries are names or patterns (the same patterns as byEnvironment); the
/// workspace says which pattern brought a variable.
#[test]
fn user_defined_vars_take_wildcards() {
    let project = "apiVersion: berth/v1alpha1
kind: Project
metadata: {name: p}
spec:
  namespace: p
  image: mageai/mageai:1
  env:
    - {name: DEV_ENV_BUCKET, value: s3://dev}
    - {name: DB_HOST, value: db}
    - {name: OTHER, value: x}
  inheritance:
    mode: self-hosted
    userDefinedVars: [DB_HOST, \"DEV_ENV_*\"]
";
    let env = env_of(&[("p.yaml", project.into()), ("ws.yaml", WORKSPACE.into())]);
    assert_eq!(
        env["DEV_ENV_BUCKET"],
        "s3://dev (project env via userDefinedVars `DEV_ENV_*`)"
    );
    assert_eq!(env["DB_HOST"], "db (project env via userDefinedVars)");
    assert!(!env.contains_key("OTHER"));
    // Mage's comma-separated form in one item matches nothing: said, with the fix.
    let found = diagnostics(&[(
        "p.yaml",
        project.replace("[DB_HOST, \"DEV_ENV_*\"]", "[\"DB_HOST,OTHER\"]"),
    )]);
    assert!(
        has(
            &found,
            "p.yaml:13:23: error: spec.inheritance.userDefinedVars[0]: ",
            "never contain `,`; list one name or pattern per item"
        ),
        "{found:#?}"
    );
}

/// Seed 000: "If you've modified the default USER_CODE_PATH environment variable in the
/// base project (Mage Pro management portal), update your Kubernetes configuration". A
/// project variable USER_CODE_PATH is the project's code path, not replaced by Mage's
/// default; a workspace's own `userCodePath` still wins.
#[test]
fn a_project_user_code_path_variable_is_honoured() {
    let project =
        format!("{PLAIN}  env:\n    - {{name: USER_CODE_PATH, value: /home/src/analytics}}\n");
    let env = env_of(&[("p.yaml", project.clone()), ("ws.yaml", WORKSPACE.into())]);
    assert_eq!(env["USER_CODE_PATH"], "/home/src/analytics (built-in)");
    let own = format!("{WORKSPACE}  userCodePath: /home/src/mine\n");
    let env = env_of(&[("p.yaml", project.clone()), ("ws.yaml", own)]);
    assert_eq!(env["USER_CODE_PATH"], "/home/src/mine (built-in)");
    let found = diagnostics(&[(
        "p.yaml",
        format!("{project}  userCodePath: /home/src/other\n"),
    )]);
    assert!(
        has(
            &found,
            "p.yaml:8:37: error: spec.env[0].value: ",
            "USER_CODE_PATH `/home/src/analytics` contradicts `userCodePath: /home/src/other`"
        ),
        "{found:#?}"
    );
}

/// Seed 000: "These scripts must include a get_custom_configs method that returns a
/// dictionary of configurations." Checked at validate with a Python parser, at the line.
#[test]
fn pre_start_scripts_must_define_get_custom_configs() {
    let workspace = format!("{WORKSPACE}  lifecycle:\n    preStart: {{script: scripts/pre.py}}\n");
    let found = diagnostics(&[
        ("p.yaml", PLAIN.into()),
        ("ws.yaml", workspace.clone()),
        (
            "scripts/pre.py",
            "import os\n\ndef get_config():\n    return {}\n".into(),
        ),
    ]);
    assert_eq!(
        found,
        [
            "ws.yaml:8:24: error: spec.lifecycle.preStart.script: pre-start script `scripts/pre.py` does not define `get_custom_configs()` at module level; Mage Pro's pre-start scripts must, and berth calls it"
        ]
    );
    let found = diagnostics(&[
        ("p.yaml", PLAIN.into()),
        ("ws.yaml", workspace),
        (
            "scripts/pre.py",
            "def get_custom_configs():\n    print('configured')\n".into(),
        ),
    ]);
    assert_eq!(
        found,
        [
            "scripts/pre.py:1:5: error: pre-start script: `get_custom_configs` never returns a value, so it returns None; it must return a dict (help: used by workspace `ws` (ws.yaml:8))"
        ]
    );
}

// ---- Seed 002: ZenML's workload manager ---------------------------------------------

/// Seed 002: "Dedicated namespace for runner pods". A runner namespace that is also a
/// project's (where workspaces run) is refused.
#[test]
fn the_runner_namespace_is_dedicated() {
    let project = |namespace: &str| {
        format!(
            "{PLAIN}  workloadManager:\n    namespace: {namespace}\n    serviceAccount: runner\n    runnerImage: zenml:1\n"
        )
    };
    let other =
        "apiVersion: berth/v1alpha1\nkind: Project\nmetadata: {name: q}\nspec:\n  namespace: q\n";
    for (namespace, whose) in [
        ("p", "this project's namespace (p.yaml:5:14)"),
        ("q", "the namespace of project `q` (q.yaml:5:14)"),
    ] {
        let found = diagnostics(&[("p.yaml", project(namespace)), ("q.yaml", other.into())]);
        assert_eq!(
            found,
            [format!(
                "p.yaml:8:16: error: spec.workloadManager.namespace: `{namespace}` is {whose}; ZenML's runner pods need a dedicated namespace (help: name a namespace no project uses, e.g. `zenml-runners`)"
            )]
        );
    }
    assert!(diagnostics(&[("p.yaml", project("runners")), ("q.yaml", other.into())]).is_empty());
}

// ---- Render output is for kubectl, which reads YAML 1.1 ------------------------------

/// Values a YAML 1.1 reader takes for something else than a string.
const YAML_1_1: &[&str] = &[
    "off",
    "on",
    "y",
    "n",
    "yes",
    "no",
    "Y",
    "N",
    "ON",
    "Off",
    "0o17",
    "1_000",
    "12:30",
    "2001-12-14",
    "0x_1F",
    "~",
    "=",
    "1e3",
    ".5",
    "+1",
    "0B1",
];

fn yaml11_repo(namespace: &str) -> Vec<(&'static str, String)> {
    let env: String = YAML_1_1
        .iter()
        .enumerate()
        .map(|(i, v)| format!("    - {{name: V{i}, value: \"{v}\"}}\n"))
        .collect();
    vec![
        (
            "p.yaml",
            format!("apiVersion: berth/v1alpha1\nkind: Project\nmetadata:\n  name: p\n  labels: {{flag: \"on\"}}\nspec:\n  namespace: {namespace}\n  image: mageai/mageai:1\n  mageProject: mage\n  env:\n{env}"),
        ),
        (
            "ws.yaml",
            "apiVersion: berth/v1alpha1\nkind: Workspace\nmetadata:\n  name: ws\n  labels: {\"y\": \"n\", gpu: \"yes\", tier: \"off\"}\nspec:\n  project: p\n  kubernetes:\n    nodeSelector: {\"on\": \"no\"}\n".into(),
        ),
        ("mage/metadata.yaml", "k8s_executor_config:\n  pod:\n    node_selector: {'y': 'off'}\n  metadata:\n    labels: {'n': 'on'}\n".into()),
        ("mage/pipelines/etl/metadata.yaml", pipeline("container_config:\n  env:\n  - {name: FLAG, value: 'yes'}")),
    ]
}

/// `berth render` is meant for `kubectl apply -f -`. With values like `off`, `y`, `yes`,
/// `12:30` in ConfigMaps, labels and the executor's Job files, kubectl (YAML 1.1) accepts
/// every object at a server-side dry run; the same objects written by serde_yaml are
/// refused, so this test can fail.
#[tokio::test]
async fn rendered_yaml_1_1_values_pass_a_server_side_dry_run() {
    let Some(cp) = support::control_plane().await else {
        return;
    };
    let namespace = cp.namespace("seeds").await;
    let desired = berth::desired(files(&yaml11_repo(&namespace)), &Default::default());
    assert!(!desired.has_errors(), "{:#?}", desired.diagnostics);
    let ours = berth::render::to_yaml(&desired.objects);
    for value in YAML_1_1 {
        assert!(
            ours.contains(&format!("'{value}'")),
            "`{value}` is not quoted"
        );
    }
    let apply = |text: &str| {
        let mut child = cp
            .kubectl()
            .args(["apply", "--dry-run=server", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("writing to kubectl");
        child.wait_with_output().expect("kubectl output")
    };
    let out = apply(&ours);
    assert!(
        out.status.success(),
        "kubectl refused berth's render:\n{}\n{ours}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: String = desired
        .objects
        .iter()
        .map(|o| format!("---\n{}", serde_yaml::to_string(o).unwrap()))
        .collect();
    let out = apply(&theirs);
    assert!(
        !out.status.success(),
        "serde_yaml's text was accepted: the test cannot fail"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot unmarshal bool"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
