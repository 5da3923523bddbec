//! ZenML's workspace server reads berth's workload-manager settings as berth says: the
//! environment berth renders (the ConfigMap `zenml-workload-manager`, for the sample
//! repository and for generated workload managers) goes through ZenML's own
//! `ServerConfiguration.get_server_config()` (the oracle, tests/zenml/), which must parse
//! it without errors, warnings or deprecations, read every `ZENML_SERVER_*` variable as a
//! field it has, and end with the values git gives (`maxConcurrentRuns`, the
//! implementation's class). The `ZENML_KUBERNETES_WORKLOAD_MANAGER_*` JSON values, read by
//! ZenML's closed plugin and not by this code, must read whole as their Kubernetes types.

mod support;

use berth::load::SourceFile;
use berth::render::RenderContext;
use k8s_openapi::api::batch::v1::PodFailurePolicy;
use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

const PLUGIN: &[&str] = &[
    "ZENML_KUBERNETES_WORKLOAD_MANAGER_",
    "ZENML_AWS_KUBERNETES_WORKLOAD_MANAGER_",
];

/// The ConfigMap data berth renders for the project `project` of `files`.
fn rendered_env(files: Vec<SourceFile>, project: &str) -> Result<BTreeMap<String, String>, String> {
    let desired = berth::desired(files, &RenderContext::default());
    let errors: Vec<String> = desired
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    let map = desired
        .objects
        .iter()
        .find(|o| {
            o["kind"] == "ConfigMap"
                && o["metadata"]["name"] == "zenml-workload-manager"
                && o["metadata"]["labels"][berth::render::PROJECT_LABEL] == project
        })
        .ok_or("no ConfigMap zenml-workload-manager")?;
    Ok(serde_json::from_value(map["data"].clone()).expect("string data"))
}

/// What git says the server must end with: `maxConcurrentRuns` and the implementation.
struct Expected {
    max_concurrent_runs: u64,
    implementation: &'static str,
}

fn class(implementation: &str) -> &'static str {
    match implementation {
        "aws" => "zenml_cloud_plugins.aws_kubernetes_workload_manager.AWSKubernetesWorkloadManager",
        "gcp" => "zenml_cloud_plugins.gcp_kubernetes_workload_manager.GCPKubernetesWorkloadManager",
        _ => "zenml_cloud_plugins.kubernetes_workload_manager.KubernetesWorkloadManager",
    }
}

/// ZenML's answer on `env`, checked against berth's; `Err` says what differs.
fn check(env: &BTreeMap<String, String>, expected: &Expected) -> Result<(), String> {
    let Some(oracle) = support::zenml::oracle() else {
        return Ok(());
    };
    let answer = oracle
        .lock()
        .unwrap()
        .ask(&json!({"id": "berth", "env": env}));
    let fail = |what: &str| Err(format!("{what}\nenv: {env:#?}\nZenML: {answer:#}"));
    if answer.get("oracle_error").is_some() || answer.get("error").is_some() {
        return fail("ZenML refused the environment");
    }
    if answer["warnings"] != json!([]) || answer["deprecations"] != json!([]) {
        return fail("ZenML warned while reading the environment");
    }
    if answer["extra"] != json!({}) {
        return fail("ZenML reads a variable as a field it does not have");
    }
    // Every variable is read by ZenML's server code or by its workload-manager plugin.
    for name in answer["ignored"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        if !PLUGIN.iter().any(|p| name.starts_with(p)) {
            return fail(&format!("ZenML's server does not read {name}"));
        }
    }
    for (name, value) in env {
        if name.starts_with("ZENML_SERVER_") {
            let Some(field) = answer["read"][name].as_str() else {
                return fail(&format!("ZenML does not read {name}"));
            };
            let effective = &answer["effective"][field];
            let as_text = match effective {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if as_text != *value {
                return fail(&format!(
                    "{name}: berth wrote {value}, ZenML has {effective}"
                ));
            }
        }
    }
    if answer["effective"]["max_concurrent_snapshot_runs"] != json!(expected.max_concurrent_runs) {
        return fail("max_concurrent_snapshot_runs is not git's maxConcurrentRuns");
    }
    if answer["effective"]["workload_manager_implementation_source"]
        != json!(expected.implementation)
        || answer["workload_manager_enabled"] != json!(true)
    {
        return fail("the workload manager is not git's implementation");
    }
    // The plugin's JSON values read whole as their Kubernetes types.
    let k8s = |suffix: &str| env.get(&format!("ZENML_KUBERNETES_WORKLOAD_MANAGER_{suffix}"));
    let parse = |text: &String| serde_json::from_str::<Value>(text).map_err(|e| e.to_string());
    for (suffix, result) in [
        (
            "POD_RESOURCES",
            k8s("POD_RESOURCES").map(|t| {
                parse(t).and_then(|v| berth_load::k8s::round_trip::<ResourceRequirements>(&v))
            }),
        ),
        (
            "NODE_SELECTOR",
            k8s("NODE_SELECTOR").map(|t| {
                parse(t).and_then(|v| berth_load::k8s::round_trip::<BTreeMap<String, String>>(&v))
            }),
        ),
        (
            "TOLERATIONS",
            k8s("TOLERATIONS")
                .map(|t| parse(t).and_then(|v| berth_load::k8s::round_trip::<Vec<Toleration>>(&v))),
        ),
        (
            "POD_FAILURE_POLICY",
            k8s("POD_FAILURE_POLICY").map(|t| {
                parse(t).and_then(|v| berth_load::k8s::round_trip::<PodFailurePolicy>(&v))
            }),
        ),
    ] {
        if let Some(Err(why)) = result {
            return fail(&format!("{suffix}: {why}"));
        }
    }
    Ok(())
}

fn read_dir(root: &Path, dir: &Path, out: &mut Vec<SourceFile>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read_dir(root, &path, out);
        } else {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push(SourceFile::from_bytes(rel, std::fs::read(&path).unwrap()));
        }
    }
}

#[test]
fn sample_repo_workload_manager_is_read_by_zenml_as_berth_says() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-repo");
    let mut files = Vec::new();
    read_dir(&root, &root, &mut files);
    let env = rendered_env(files, "ml-platform").unwrap();
    assert_eq!(env["ZENML_SERVER_MAX_CONCURRENT_SNAPSHOT_RUNS"], "4");
    let expected = Expected {
        max_concurrent_runs: 4,
        implementation: class("kubernetes"),
    };
    check(&env, &expected).unwrap();
}

/// The oracle tells the difference: the seed's variable name is a deprecation to ZenML.
#[test]
fn zenml_reports_the_seeds_variable_name_as_deprecated() {
    let Some(oracle) = support::zenml::oracle() else {
        return;
    };
    let answer = oracle.lock().unwrap().ask(&json!({"id": "seed", "env": {
        "ZENML_SERVER_MAX_CONCURRENT_TEMPLATE_RUNS": "4",
    }}));
    assert_eq!(
        answer["effective"]["max_concurrent_snapshot_runs"], 4,
        "{answer:#}"
    );
    let deprecations = answer["deprecations"].as_array().unwrap();
    assert!(
        deprecations.len() == 1
            && deprecations[0]
                .as_str()
                .unwrap()
                .contains("ZENML_SERVER_MAX_CONCURRENT_SNAPSHOT_RUNS"),
        "{answer:#}"
    );
}

fn pick<T: Clone + std::fmt::Debug + 'static>(items: Vec<T>) -> impl Strategy<Value = T> {
    proptest::sample::select(items)
}

fn quantity(unit: &'static [&'static str]) -> impl Strategy<Value = String> {
    (1u32..4000, pick(unit.to_vec()), any::<bool>()).prop_map(|(n, u, quoted)| {
        if u.is_empty() && !quoted {
            n.to_string()
        } else {
            format!("\"{n}{u}\"")
        }
    })
}

fn resources() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(
        (
            proptest::option::of(quantity(&["m", ""])),
            proptest::option::of(quantity(&["Mi", "Gi", "M"])),
        )
            .prop_map(|(cpu, memory)| {
                let mut parts = Vec::new();
                if let Some(c) = cpu {
                    parts.push(format!("cpu: {c}"));
                }
                if let Some(m) = memory {
                    parts.push(format!("memory: {m}"));
                }
                format!("{{requests: {{{}}}}}", parts.join(", "))
            }),
    )
}

fn toleration() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            pick(vec!["dedicated", "example.com/pool", "gpu"]),
            pick(vec!["runners", "a-b", ""]),
            pick(vec!["NoSchedule", "PreferNoSchedule"])
        )
            .prop_map(|(k, v, e)| format!(
                "{{key: {k}, operator: Equal, value: \"{v}\", effect: {e}}}"
            )),
        (
            pick(vec!["dedicated", "node.kubernetes.io/unreachable"]),
            0i64..86400
        )
            .prop_map(|(k, s)| format!(
                "{{key: {k}, operator: Exists, effect: NoExecute, tolerationSeconds: {s}}}"
            )),
        Just("{operator: Exists}".to_string()),
    ]
}

fn pod_failure_policy() -> impl Strategy<Value = String> {
    let rule = prop_oneof![
        (
            pick(vec!["FailJob", "Ignore", "Count"]),
            proptest::collection::btree_set(1i32..256, 1..4),
            any::<bool>()
        )
            .prop_map(|(a, codes, named)| {
                let codes: Vec<String> = codes.iter().map(|c| c.to_string()).collect();
                let container = if named { "containerName: main, " } else { "" };
                format!(
                    "{{action: {a}, onExitCodes: {{{container}operator: In, values: [{}]}}}}",
                    codes.join(", ")
                )
            }),
        (
            pick(vec!["FailJob", "Ignore", "Count"]),
            pick(vec!["True", "False", "Unknown"])
        )
            .prop_map(|(a, s)| format!(
                "{{action: {a}, onPodConditions: [{{type: DisruptionTarget, status: \"{s}\"}}]}}"
            )),
        Just("{action: Ignore, onExitCodes: {operator: NotIn, values: [0, 1]}}".to_string()),
    ];
    proptest::collection::vec(rule, 1..4)
        .prop_map(|rules| format!("{{rules: [{}]}}", rules.join(", ")))
}

#[derive(Debug, Clone)]
struct Case {
    implementation: Option<&'static str>,
    build: bool,
    region: bool,
    logs: bool,
    resources: Option<String>,
    ttl: Option<u32>,
    node_selector: Option<String>,
    tolerations: Vec<String>,
    backoff: Option<u32>,
    policy: Option<String>,
    max_runs: Option<u32>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (
            proptest::option::of(pick(vec!["kubernetes", "aws", "gcp"])),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            resources(),
            proptest::option::of(0u32..=2_147_483_647),
        ),
        (
            proptest::option::of(
                pick(vec![
                    "{pool: runners}",
                    "{example.com/pool: a, tier: \"2\"}",
                ])
                .prop_map(String::from),
            ),
            proptest::collection::vec(toleration(), 0..3),
            proptest::option::of(0u32..10),
            proptest::option::of(pod_failure_policy()),
            proptest::option::of(prop_oneof![1u32..10, 1u32..=u32::MAX]),
        ),
    )
        .prop_map(
            |(
                (implementation, build, region, logs, resources, ttl),
                (node_selector, tolerations, backoff, policy, max_runs),
            )| Case {
                implementation,
                build,
                region,
                logs,
                resources,
                ttl,
                node_selector,
                tolerations,
                backoff,
                policy,
                max_runs,
            },
        )
}

/// The project file of `case`: one `workloadManager` line per field.
fn project(case: &Case) -> String {
    let aws = case.implementation == Some("aws");
    let mut wm = String::new();
    let mut line = |s: String| wm.push_str(&format!("    {s}\n"));
    if let Some(i) = case.implementation {
        line(format!("implementation: {i}"));
    }
    line("namespace: zenml-runners".into());
    line("serviceAccount: zenml-runner".into());
    if case.build {
        line("buildRunnerImage: true".into());
        line("dockerRegistry: registry.example.com/zenml".into());
    } else {
        line("runnerImage: zenmldocker/zenml:0.98.0".into());
    }
    if aws && (case.build || case.region) {
        line("region: eu-west-1".into());
    }
    if aws && case.logs {
        line("externalLogs: {enabled: true, bucket: runner-logs}".into());
    }
    if let Some(r) = &case.resources {
        line(format!("podResources: {r}"));
    }
    if let Some(t) = case.ttl {
        line(format!("ttlSecondsAfterFinished: {t}"));
    }
    if let Some(n) = &case.node_selector {
        line(format!("nodeSelector: {n}"));
    }
    if !case.tolerations.is_empty() {
        line(format!("tolerations: [{}]", case.tolerations.join(", ")));
    }
    if let Some(b) = case.backoff {
        line(format!("jobBackoffLimit: {b}"));
    }
    if let Some(p) = &case.policy {
        line(format!("podFailurePolicy: {p}"));
    }
    if let Some(m) = case.max_runs {
        line(format!("maxConcurrentRuns: {m}"));
    }
    format!(
        "apiVersion: berth/v1alpha1\nkind: Project\nmetadata: {{name: ml}}\nspec:\n  image: mageai/mageai:0.9.80\n  namespace: ml\n  workloadManager:\n{wm}"
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn generated_workload_managers_are_read_by_zenml_as_berth_says(case in case()) {
        let text = project(&case);
        let env = rendered_env(vec![SourceFile::new("projects/ml.yaml", text.as_str())], "ml")
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let expected = Expected {
            max_concurrent_runs: case.max_runs.unwrap_or(2).into(),
            implementation: class(case.implementation.unwrap_or("kubernetes")),
        };
        check(&env, &expected).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
    }
}

// ---- The plugin's Kubernetes values, judged by the API server ------------------------

/// A value of one field, valid or not in the ways people write them wrong.
#[derive(Debug, Clone)]
struct Values {
    resources: Option<&'static str>,
    node_selector: Option<&'static str>,
    tolerations: Option<&'static str>,
    policy: Option<&'static str>,
}

fn values() -> impl Strategy<Value = Values> {
    (
        proptest::option::of(pick(vec![
            "{requests: {cpu: 500m, memory: 1Gi}, limits: {cpu: \"2\", memory: 4Gi}}",
            "{requests: {cpu: \"4\"}, limits: {cpu: \"2\"}}",
            "{requests: {cpu: two}}",
        ])),
        proptest::option::of(pick(vec!["{pool: runners}", "{pool: \"bad value!\"}"])),
        proptest::option::of(pick(vec![
            "[{key: dedicated, operator: Equal, value: runners, effect: NoSchedule}]",
            "[{key: dedicated, operator: Exists, value: runners}]",
            "[{key: gone, operator: Equal, value: x, effect: NoSchedule, tolerationSeconds: 5}]",
            "[{key: gone, operator: Exists, effect: NoExecute, tolerationSeconds: 5}]",
        ])),
        proptest::option::of(pick(vec![
            "{rules: [{action: FailJob, onExitCodes: {operator: In, values: [42]}}]}",
            "{rules: [{action: FailJob, onExitCodes: {operator: In, values: [0, 42]}}]}",
            "{rules: [{action: FailJob, onExitCodes: {operator: In, values: [42, 3]}}]}",
            "{rules: [{action: FailIndex, onExitCodes: {operator: In, values: [42]}}]}",
            "{rules: [{action: Ignore, onPodConditions: [{type: DisruptionTarget, status: \"True\"}]}]}",
            "{rules: [{action: Ignore, onExitCodes: {operator: In, values: [1]}, onPodConditions: [{type: DisruptionTarget}]}]}",
        ])),
    )
        .prop_map(|(resources, node_selector, tolerations, policy)| Values {
            resources,
            node_selector,
            tolerations,
            policy,
        })
}

/// A runner Job with the values where ZenML's plugin puts them: the pod's resources,
/// node selector and tolerations, and the Job's failure policy.
fn runner_job(v: &Values) -> Value {
    let parse = |text: Option<&str>| -> Value {
        text.map(|t| serde_yaml::from_str::<Value>(t).expect("the case is YAML"))
            .unwrap_or(Value::Null)
    };
    let mut container = json!({"name": "main", "image": "zenmldocker/zenml:0.98.0"});
    if v.resources.is_some() {
        container["resources"] = parse(v.resources);
    }
    let mut pod = json!({"restartPolicy": "Never", "containers": [container]});
    if v.node_selector.is_some() {
        pod["nodeSelector"] = parse(v.node_selector);
    }
    if v.tolerations.is_some() {
        pod["tolerations"] = parse(v.tolerations);
    }
    let mut spec = json!({"template": {"spec": pod}});
    if v.policy.is_some() {
        spec["podFailurePolicy"] = parse(v.policy);
    }
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "zenml-runner"}, "spec": spec})
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Runtime::new().expect("tokio runtime"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// berth's validate refuses a workload manager's Kubernetes values exactly when the API
    /// server refuses a runner Job that carries them (server-side dry-run).
    #[test]
    fn validate_refuses_the_plugins_values_exactly_when_the_api_server_does(v in values()) {
        let Some(client) = runtime().block_on(async {
            let cp = support::control_plane().await?;
            Some(cp.client().await)
        }) else {
            return Ok(());
        };
        let mut case = Case {
            implementation: None,
            build: false,
            region: false,
            logs: false,
            resources: v.resources.map(String::from),
            ttl: None,
            node_selector: v.node_selector.map(String::from),
            tolerations: Vec::new(),
            backoff: None,
            policy: v.policy.map(String::from),
            max_runs: None,
        };
        if let Some(t) = v.tolerations {
            case.tolerations = vec![t.trim_start_matches('[').trim_end_matches(']').to_string()];
        }
        let text = project(&case);
        let desired = berth::validated(vec![SourceFile::new("projects/ml.yaml", text.as_str())]);
        let errors: Vec<String> = desired
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.to_string())
            .collect();
        let job = runner_job(&v);
        let refused = runtime().block_on(async {
            let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
                client.clone(),
                "default",
                &kube::api::ApiResource::erase::<k8s_openapi::api::batch::v1::Job>(&()),
            );
            let object: kube::api::DynamicObject = serde_json::from_value(job.clone()).unwrap();
            let params = kube::api::PostParams { dry_run: true, ..Default::default() };
            api.create(&params, &object).await.err().map(|e| e.to_string())
        });
        prop_assert_eq!(
            !errors.is_empty(),
            refused.is_some(),
            "berth: {:#?}\nAPI server: {:?}\n{}",
            errors,
            refused,
            text
        );
    }
}
