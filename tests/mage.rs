//! berth's Mage is Mage's own: generated executor configurations (every layer, Mage's
//! spellings, quantities in several spellings, YAML 1.1 scalars, crashing keys) go through
//! berth (validate, then the Job `render --executor` prints) and through Mage's real
//! executor code (the oracle, tests/mage/). Both Jobs are then created with a server-side
//! dry-run on the test control plane, and the test asserts one of two things:
//! - berth's Job equals Mage's as the API server keeps both, in the same namespace; or
//! - berth refused the input at validate, in a Mage file, and Mage crashed on it or the
//!   API server refused what Mage sent.
//!
//! The generated space (see `layer`) holds what Mage's code and the seeds describe. Jinja
//! namespaces are left out: Mage renders them at run time, and berth only warns.

mod support;

use berth::load::SourceFile;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::OnceLock;

/// A YAML value as written: block-style at the top level of each file, flow style inside,
/// scalars plain (typed by the reader) or quoted (text).
#[derive(Debug, Clone)]
enum Y {
    Map(Vec<(String, Y)>),
    Seq(Vec<Y>),
    Plain(String),
    Quoted(String),
}

fn flow(y: &Y) -> String {
    match y {
        Y::Map(entries) => format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(k, v)| format!("{k}: {}", flow(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Y::Seq(items) => format!(
            "[{}]",
            items.iter().map(flow).collect::<Vec<_>>().join(", ")
        ),
        Y::Plain(s) => s.clone(),
        Y::Quoted(s) => format!("'{}'", s.replace('\'', "''")),
    }
}

/// Top-level keys one per line (so diagnostics have a line each), under `indent`.
fn block(entries: &[(String, Y)], indent: usize) -> String {
    entries
        .iter()
        .map(|(k, v)| format!("{}{k}: {}\n", " ".repeat(indent), flow(v)))
        .collect()
}

fn p(s: &str) -> Y {
    Y::Plain(s.into())
}
fn q(s: &str) -> Y {
    Y::Quoted(s.into())
}
fn map(entries: &[(&str, Y)]) -> Y {
    Y::Map(
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

fn pick<T: Clone + std::fmt::Debug + 'static>(items: Vec<T>) -> impl Strategy<Value = T> {
    proptest::sample::select(items)
}

/// Up to `max` entries of `choices`, in order, each key once.
fn some_of(
    choices: Vec<BoxedStrategy<(String, Y)>>,
    max: usize,
) -> impl Strategy<Value = Vec<(String, Y)>> {
    let n = choices.len();
    proptest::sample::subsequence((0..n).collect::<Vec<_>>(), 0..=max.min(n)).prop_flat_map(
        move |picked| {
            picked
                .into_iter()
                .map(|i| choices[i].clone())
                .collect::<Vec<_>>()
        },
    )
}

fn entry(
    key: &'static str,
    value: impl Strategy<Value = Y> + 'static,
) -> BoxedStrategy<(String, Y)> {
    value.prop_map(move |v| (key.to_string(), v)).boxed()
}

/// A quantity in the spellings people write: strings, plain numbers, YAML 1.1's `1_000`,
/// and one that is not a quantity.
fn quantity() -> impl Strategy<Value = Y> {
    pick(vec![
        p("500m"),
        p("1"),
        p("2"),
        p("0.5"),
        p("1_000"),
        q("250m"),
        p("2Gi"),
        p("1024Mi"),
        q("1.5Gi"),
        p("two"),
    ])
}

fn resources() -> impl Strategy<Value = Y> {
    some_of(
        vec![
            entry("cpu", quantity()),
            entry("memory", quantity()),
            entry("nvidia.com/gpu", pick(vec![p("1"), q("1")])),
        ],
        3,
    )
    .prop_map(Y::Map)
}

fn toleration() -> impl Strategy<Value = Y> {
    pick(vec![
        map(&[
            ("key", p("dedicated")),
            ("operator", p("Equal")),
            ("value", p("data")),
            ("effect", p("NoSchedule")),
        ]),
        map(&[("key", p("spot")), ("operator", p("Exists"))]),
        map(&[
            ("key", p("gone")),
            ("operator", p("Exists")),
            ("effect", p("NoExecute")),
            ("toleration_seconds", p("30")),
        ]),
        // Mage builds V1Toleration(**item): camelCase keys make it raise.
        map(&[
            ("key", p("gone")),
            ("operator", p("Exists")),
            ("effect", p("NoExecute")),
            ("tolerationSeconds", p("30")),
        ]),
    ])
}

fn volume() -> impl Strategy<Value = Y> {
    pick(vec![
        map(&[("name", p("v1")), ("empty_dir", map(&[]))]),
        map(&[
            ("name", p("v2")),
            ("secret", map(&[("secretName", p("s"))])),
        ]),
        // The client converts top-level keys only: `secret_name` inside is lost.
        map(&[
            ("name", p("v2")),
            ("secret", map(&[("secret_name", p("s"))])),
        ]),
        map(&[("name", p("v3")), ("config_map", map(&[("name", p("cm"))]))]),
        map(&[("name", p("v4")), ("emptyDir", map(&[]))]),
    ])
}

fn mount() -> impl Strategy<Value = Y> {
    pick(vec![
        map(&[("name", p("v1")), ("mount_path", p("/v1"))]),
        map(&[
            ("name", p("v2")),
            ("mount_path", p("/v2")),
            ("read_only", p("true")),
        ]),
        map(&[("name", p("v3")), ("mount_path", p("/v3"))]),
        map(&[("name", p("v9")), ("mount_path", p("/v9"))]),
    ])
}

fn env_var() -> impl Strategy<Value = Y> {
    pick(vec![
        map(&[("name", p("A")), ("value", q("1"))]),
        // PyYAML reads it as a number, which the API server refuses as an env value.
        map(&[("name", p("B")), ("value", p("1"))]),
        map(&[
            ("name", p("C")),
            (
                "value_from",
                map(&[("secretKeyRef", map(&[("name", p("s")), ("key", p("k"))]))]),
            ),
        ]),
        map(&[
            ("name", p("D")),
            (
                "valueFrom",
                map(&[("secretKeyRef", map(&[("name", p("s")), ("key", p("k"))]))]),
            ),
        ]),
        map(&[("name", p("KUBE_NAMESPACE")), ("value", p("p"))]),
    ])
}

fn affinity() -> impl Strategy<Value = Y> {
    let expression = map(&[
        ("key", p("pool")),
        ("operator", p("In")),
        ("values", Y::Seq(vec![p("jobs")])),
    ]);
    let term = map(&[
        (
            "labelSelector",
            map(&[("matchLabels", map(&[("app", p("mage"))]))]),
        ),
        ("topologyKey", p("kubernetes.io/hostname")),
    ]);
    let weighted = map(&[
        ("weight", p("50")),
        (
            "labelSelector",
            map(&[("matchLabels", map(&[("app", p("mage"))]))]),
        ),
        ("topologyKey", p("kubernetes.io/hostname")),
    ]);
    pick(vec![
        map(&[(
            "nodeAffinity",
            map(&[(
                "requiredDuringSchedulingIgnoredDuringExecution",
                map(&[(
                    "nodeSelectorTerms",
                    Y::Seq(vec![map(&[("matchExpressions", Y::Seq(vec![expression]))])]),
                )]),
            )]),
        )]),
        map(&[(
            "podAntiAffinity",
            map(&[(
                "preferredDuringSchedulingIgnoredDuringExecution",
                Y::Seq(vec![weighted.clone()]),
            )]),
        )]),
        // The Kubernetes shape of a required term: no weight, which Mage requires.
        map(&[(
            "podAntiAffinity",
            map(&[(
                "requiredDuringSchedulingIgnoredDuringExecution",
                Y::Seq(vec![term]),
            )]),
        )]),
        // With a weight, Mage builds a weighted term where the API wants a plain one.
        map(&[(
            "podAffinity",
            map(&[(
                "requiredDuringSchedulingIgnoredDuringExecution",
                Y::Seq(vec![weighted]),
            )]),
        )]),
    ])
}

fn list_of(item: impl Strategy<Value = Y> + 'static) -> impl Strategy<Value = Y> {
    proptest::collection::vec(item, 1..=2).prop_map(Y::Seq)
}

fn pod() -> impl Strategy<Value = Y> {
    some_of(
        vec![
            entry(
                "node_selector",
                pick(vec![p("jobs"), p("yes"), q("yes"), p("on")])
                    .prop_map(|v| map(&[("pool", v)])),
            ),
            entry("tolerations", list_of(toleration())),
            entry("volumes", list_of(volume())),
            entry("service_account_name", Just(p("pod-sa"))),
            entry("scheduler_name", Just(p("other-scheduler"))),
            entry("image_pull_secrets", Just(p("regcred"))),
            entry("affinity", affinity()),
        ],
        3,
    )
    .prop_map(Y::Map)
}

fn container() -> impl Strategy<Value = Y> {
    some_of(
        vec![
            entry("name", pick(vec![p("main"), p("~")])),
            entry("image", Just(p("registry.example/job:1"))),
            entry("image_pull_policy", Just(p("Always"))),
            entry("env", list_of(env_var())),
            entry("volume_mounts", list_of(mount())),
            entry(
                "resources",
                some_of(
                    vec![entry("limits", resources()), entry("requests", resources())],
                    2,
                )
                .prop_map(Y::Map),
            ),
        ],
        3,
    )
    .prop_map(Y::Map)
}

fn container_config() -> impl Strategy<Value = Y> {
    some_of(
        vec![
            entry("name", Just(p("cc"))),
            entry("image", Just(p("registry.example/cc:1"))),
            entry("working_dir", Just(p("/work"))),
            entry(
                "env",
                Just(Y::Seq(vec![map(&[("name", p("E")), ("value", q("e"))])])),
            ),
            entry("resources", resources().prop_map(|r| map(&[("limits", r)]))),
        ],
        3,
    )
    .prop_map(Y::Map)
}

/// One layer of executor configuration: any of Mage's top-level keys.
fn layer(max: usize) -> impl Strategy<Value = Vec<(String, Y)>> {
    some_of(
        vec![
            entry(
                "job_name_prefix",
                pick(vec![
                    p("etl"),
                    p("etl-{trigger_name}"),
                    p("Bad_Prefix"),
                    p(&"x".repeat(60)),
                    p("a-{x}-{trigger_name}"),
                ]),
            ),
            entry("namespace", pick(vec![p("p"), p("team-b")])),
            entry("service_account_name", Just(p("top-sa"))),
            entry("resource_limits", resources()),
            entry("resource_requests", resources()),
            entry("pod", pod()),
            entry("container", container()),
            entry("container_config", container_config()),
            entry(
                "metadata",
                some_of(
                    vec![
                        entry("labels", Just(map(&[("team", p("data"))]))),
                        entry("annotations", Just(map(&[("note", q("x"))]))),
                        entry("namespace", pick(vec![p("p"), p("team-b")])),
                    ],
                    3,
                )
                .prop_map(Y::Map),
            ),
            entry(
                "job",
                some_of(
                    vec![
                        entry("backoff_limit", Just(p("2"))),
                        entry("active_deadline_seconds", Just(p("600"))),
                        entry("ttl_seconds_after_finished", Just(p("60"))),
                    ],
                    3,
                )
                .prop_map(Y::Map),
            ),
            entry("foo", Just(p("1"))),
        ],
        max,
    )
}

/// A policy's config: berth's own YAML, so only what its schema takes.
fn policy_config() -> impl Strategy<Value = Vec<(String, Y)>> {
    some_of(
        vec![
            entry("service_account_name", Just(q("policy-sa"))),
            entry("resource_limits", Just(map(&[("memory", q("1Gi"))]))),
            entry(
                "pod",
                Just(map(&[("node_selector", map(&[("pool", q("policy"))]))])),
            ),
            entry("job", Just(map(&[("backoff_limit", p("1"))]))),
        ],
        2,
    )
}

#[derive(Debug, Clone)]
struct Case {
    project: Vec<(String, Y)>,
    block: Option<Vec<(String, Y)>>,
    template: Option<Vec<(String, Y)>>,
    policy: Option<(bool, Vec<(String, Y)>)>,
    env: Vec<(&'static str, &'static str)>,
    trigger: &'static str,
}

fn case() -> impl Strategy<Value = Case> {
    (
        layer(4),
        proptest::option::of(layer(3)),
        proptest::option::weighted(0.4, layer(2)),
        proptest::option::weighted(0.3, (any::<bool>(), policy_config())),
        proptest::sample::subsequence(
            vec![
                ("K8S_EXECUTOR_DEFAULT_RESOURCE_REQUESTS_CPU", "250m"),
                ("K8S_EXECUTOR_DEFAULT_RESOURCE_LIMITS_MEMORY", "1Gi"),
                ("K8S_EXECUTOR_DEFAULT_SERVICE_ACCOUNT_NAME", "env-sa"),
                ("MAGE_CLUSTER_UUID", "prod"),
                ("MAGE_CONTAINER_NAME", "workspace"),
            ],
            0..=3,
        ),
        pick(vec!["Daily Run", "nightly_sync", "2am", "Weekly"]),
    )
        .prop_map(|(project, block, template, policy, env, trigger)| Case {
            project,
            block,
            template,
            policy,
            env,
            trigger,
        })
}

const TEMPLATE_IN_CONTAINER: &str = "/home/src/p/job_template.yaml";

/// The case as berth's repository files and as Mage's files.
struct Files {
    berth: Vec<(String, String)>,
    project_metadata: String,
    pipeline_metadata: String,
    template: Option<String>,
}

fn files(case: &Case) -> Files {
    let mut env = String::new();
    for (name, value) in &case.env {
        env.push_str(&format!("    - {{name: {name}, value: '{value}'}}\n"));
    }
    if case.template.is_some() {
        env.push_str(&format!(
            "    - {{name: K8S_CONFIG_FILE, value: {TEMPLATE_IN_CONTAINER}}}\n"
        ));
    }
    let project = format!(
        "apiVersion: berth/v1alpha1\nkind: Project\nmetadata: {{name: p}}\nspec:\n  namespace: p\n  image: mageai/mageai:0.9.80\n  userCodePath: /home/src/p\n  mageProject: mage\n{}",
        if env.is_empty() {
            String::new()
        } else {
            format!("  env:\n{env}")
        }
    );
    let workspace =
        "apiVersion: berth/v1alpha1\nkind: Workspace\nmetadata: {name: w}\nspec:\n  project: p\n"
            .to_string();
    let project_metadata = if case.project.is_empty() {
        "project_type: standalone\n".to_string()
    } else {
        format!(
            "project_type: standalone\nk8s_executor_config:\n{}",
            block(&case.project, 2)
        )
    };
    let pipeline_metadata = format!(
        "uuid: etl\nblocks:\n- uuid: load\n  type: data_loader\n  executor_type: k8s\n{}",
        match &case.block {
            Some(entries) if !entries.is_empty() =>
                format!("  executor_config:\n{}", block(entries, 4)),
            _ => String::new(),
        }
    );
    let triggers = format!(
        "triggers:\n- name: {}\n  schedule_type: time\n",
        case.trigger
    );
    let template = case.template.as_ref().map(|t| {
        if t.is_empty() {
            "{}\n".to_string()
        } else {
            block(t, 0)
        }
    });
    let mut berth = vec![
        ("projects/p.yaml".to_string(), project),
        ("workspaces/w.yaml".to_string(), workspace),
        ("mage/metadata.yaml".to_string(), project_metadata.clone()),
        (
            "mage/pipelines/etl/metadata.yaml".to_string(),
            pipeline_metadata.clone(),
        ),
        ("mage/pipelines/etl/triggers.yaml".to_string(), triggers),
    ];
    if let Some(text) = &template {
        berth.push(("mage/job_template.yaml".to_string(), text.clone()));
    }
    if let Some((enforce, config)) = &case.policy {
        let config = if config.is_empty() {
            "      {}\n".to_string()
        } else {
            block(config, 6)
        };
        berth.push((
            "policies/executor.yaml".to_string(),
            format!("apiVersion: berth/v1alpha1\nkind: Policy\nmetadata: {{name: executor}}\nspec:\n  k8sExecutorDefaults:\n    enforce: {enforce}\n    config:\n{config}"),
        ));
    }
    Files {
        berth,
        project_metadata,
        pipeline_metadata,
        template,
    }
}

const MAGE_FILES: &[&str] = &[
    "mage/metadata.yaml",
    "mage/pipelines/etl/metadata.yaml",
    "mage/pipelines/etl/triggers.yaml",
    "mage/job_template.yaml",
    "policies/executor.yaml",
];

const BLOCK_RUN_ID: &str = "17";
const PIPELINE_RUN_ID: &str = "5";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Runtime::new().expect("tokio runtime"))
}

/// Creates a Job with a server-side dry-run: what the API server keeps, or why it refuses.
async fn dry_run(client: &kube::Client, namespace: &str, job: &Value) -> Result<Value, String> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &ApiResource::erase::<Job>(&()));
    let object: DynamicObject =
        serde_json::from_value(job.clone()).map_err(|e| format!("not an object: {e}"))?;
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match api.create(&params, &object).await {
        Ok(kept) => Ok(normalise(serde_json::to_value(kept).unwrap_or_default())),
        Err(kube::Error::Api(status)) => Err(status.message),
        Err(other) => Err(other.to_string()),
    }
}

/// What differs between any two creations: identities, times, the controller's uid.
fn normalise(mut job: Value) -> Value {
    if let Some(meta) = job.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
            "generation",
        ] {
            meta.remove(key);
        }
    }
    for labels in ["/metadata/labels", "/spec/template/metadata/labels"] {
        if let Some(map) = job.pointer_mut(labels).and_then(Value::as_object_mut) {
            map.remove("controller-uid");
            map.remove("batch.kubernetes.io/controller-uid");
        }
    }
    if let Some(spec) = job.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("selector");
    }
    if let Some(obj) = job.as_object_mut() {
        obj.remove("status");
    }
    job
}

async fn ensure_namespaces(client: &kube::Client) {
    let api: Api<Namespace> = Api::all(client.clone());
    for name in ["p", "team-b"] {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => panic!("creating namespace {name}: {e}"),
        }
    }
}

/// Cases so far: (Jobs equal, refused by both), printed every 64 cases so a run shows what
/// it covered.
static TALLY: std::sync::Mutex<(usize, usize)> = std::sync::Mutex::new((0, 0));

fn tally(equal: bool) {
    let mut t = TALLY.lock().unwrap_or_else(|e| e.into_inner());
    if equal {
        t.0 += 1;
    } else {
        t.1 += 1;
    }
    if (t.0 + t.1).is_multiple_of(64) {
        eprintln!(
            "mage: {} cases: {} Jobs equal, {} refused by berth and by Mage or the API server",
            t.0 + t.1,
            t.0,
            t.1
        );
    }
}

fn check(case: &Case, client: &kube::Client) -> Result<(), TestCaseError> {
    let oracle = support::mage::oracle().expect("checked before");
    let files = files(case);
    let desired = berth::validated(
        files
            .berth
            .iter()
            .map(|(path, text)| SourceFile::new(path.as_str(), text.as_str()))
            .collect(),
    );
    let errors: Vec<String> = desired
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    // berth refuses nothing outside Mage's files in these repositories, and each refusal
    // is at the line of the setting it is about: every top-level key is on a line of its
    // own (its inside in flow style), and so is every trigger's name.
    for error in &errors {
        prop_assert!(
            MAGE_FILES
                .iter()
                .any(|f| error.starts_with(&format!("{f}:"))),
            "berth refused outside Mage's files: {error}\n{:#?}",
            files.berth
        );
        let mut parts = error.splitn(3, ':');
        let (file, line) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let text = files
            .berth
            .iter()
            .find(|(path, _)| path == file)
            .map(|(_, t)| t.as_str());
        let at = line
            .parse::<usize>()
            .ok()
            .and_then(|n| text?.lines().nth(n.checked_sub(1)?))
            .unwrap_or_default();
        let setting = at.trim_start().trim_start_matches("- ");
        prop_assert!(
            setting
                .split_once(':')
                .is_some_and(|(key, _)| !key.is_empty()
                    && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')),
            "{error}: not at a setting's line (`{at}`)\n{:#?}",
            files.berth
        );
    }

    // Mage's side: the environment of the workspace's Mage server, its files, its pod.
    let ws = desired
        .resolved
        .workspaces
        .first()
        .expect("the workspace resolves");
    let pod = berth::render::server_pod(ws);
    let dir = tempfile::tempdir().expect("temp dir");
    let template_path = dir.path().join("job_template.yaml").display().to_string();
    let mut env = serde_json::Map::new();
    env.insert("KUBE_NAMESPACE".into(), json!(ws.namespace));
    env.insert("HOSTNAME".into(), json!(format!("{}-0", ws.name)));
    for (name, value) in &case.env {
        env.insert(name.to_string(), json!(value));
    }
    let mut mage_files = serde_json::Map::new();
    if let Some(text) = &files.template {
        env.insert("K8S_CONFIG_FILE".into(), json!(template_path));
        mage_files.insert(template_path.clone(), json!(text));
    }
    let policy = desired.resolved.executor_policies.first().map(|p| {
        json!({"enabled": p.defaults.enabled, "enforce": p.defaults.enforce, "config": p.defaults.config})
    });
    let block = desired.resolved.executors.first();
    let command: Vec<String> = match block {
        Some(block) => berth::render::executor::command(ws, block)
            .into_iter()
            .map(|a| {
                a.replace("{block_run_id}", BLOCK_RUN_ID)
                    .replace("{pipeline_run_id}", PIPELINE_RUN_ID)
            })
            .collect(),
        None => vec!["mage".into()],
    };
    let answer = oracle
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .ask(&json!({
            "id": "generated",
            "mode": "job",
            "env": env,
            "files": mage_files,
            "project_metadata_yaml": files.project_metadata,
            "pipeline_metadata_yaml": files.pipeline_metadata,
            "pipeline_uuid": "etl",
            "block_uuid": "load",
            "policy": policy,
            "trigger_name": case.trigger,
            "block_run_id": 17,
            "server_pod": pod,
            "command": command,
        }));

    let mage_verdict: Result<(String, Value), String> =
        match (answer.get("error"), answer.get("job")) {
            (Some(error), _) => Err(format!("Mage raised {error}")),
            (None, Some(job)) => {
                let namespace = answer["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_string();
                runtime()
                    .block_on(dry_run(client, &namespace, job))
                    .map(|kept| (namespace, kept))
                    .map_err(|why| format!("the API server refused Mage's Job: {why}"))
            }
            (None, None) => Err(format!("no Job from Mage: {answer}")),
        };

    match (errors.is_empty(), mage_verdict) {
        (false, Err(_)) => {
            tally(false);
            Ok(())
        }
        (false, Ok((_, kept))) => Err(TestCaseError::fail(format!(
            "berth refused what Mage runs:\n{errors:#?}\nMage's Job: {kept:#}\nfiles: {:#?}",
            files.berth
        ))),
        (true, Err(why)) => Err(TestCaseError::fail(format!(
            "berth accepted what Mage cannot run: {why}\nfiles: {:#?}\ndiagnostics: {:#?}",
            files.berth,
            desired
                .diagnostics
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
        ))),
        (true, Ok((namespace, mage_kept))) => {
            let block = block.expect("a k8s block");
            let run = block.runs.first().expect("a run in the workspace");
            let mut ours = berth::render::executor::job(block, run, ws, &pod)
                .map_err(|c| TestCaseError::fail(format!("berth's Job: {}", c.error)))?;
            let name = berth::mage::executor::clean_trigger_name(case.trigger);
            let text = serde_json::to_string(&ours)
                .unwrap_or_default()
                .replace("{block_run_id}", BLOCK_RUN_ID)
                .replace("{pipeline_run_id}", PIPELINE_RUN_ID)
                .replace("{trigger_name}", &name);
            ours = serde_json::from_str(&text).unwrap_or_default();
            let predicted = ours["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            prop_assert_eq!(
                &predicted,
                &namespace,
                "namespace; files: {:#?}",
                files.berth
            );
            let berth_kept = runtime()
                .block_on(dry_run(client, &namespace, &ours))
                .map_err(|why| {
                    TestCaseError::fail(format!(
                        "the API server refused berth's Job: {why}\n{ours:#}"
                    ))
                })?;
            prop_assert_eq!(
                &berth_kept,
                &mage_kept,
                "berth's Job (left) differs from Mage's (right); files: {:#?}",
                files.berth
            );
            tally(true);
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("BERTH_MAGE_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn berths_job_is_mages_job_or_berth_refuses_what_mage_cannot_run(case in case()) {
        let Some(client) = runtime().block_on(async {
            let cp = support::control_plane().await?;
            let client = cp.client().await;
            ensure_namespaces(&client).await;
            Some(client)
        }) else {
            return Ok(());
        };
        if support::mage::oracle().is_none() {
            return Ok(());
        }
        check(&case, &client)?;
    }
}

// ---- Idle termination: Mage's instance manager against berth's agent and reconciler ----

/// A status time in the spellings Mage's `str(datetime)` writes: with microseconds and an
/// offset (a user request), whole seconds with an offset, or naive (SQLite's run times).
fn status_time() -> impl Strategy<Value = Option<String>> {
    proptest::option::weighted(
        0.9,
        (0i64..7200, 0u32..1_000_000, 0usize..3).prop_map(|(ago, micros, form)| {
            let t = berth_now().as_second() - ago;
            let t = k8s_openapi::jiff::Timestamp::from_second(t).unwrap();
            let civil = t.strftime("%Y-%m-%d %H:%M:%S").to_string();
            match form {
                0 => format!("{civil}.{micros:06}+00:00"),
                1 => format!("{civil}+00:00"),
                _ => civil,
            }
        }),
    )
}

fn berth_now() -> k8s_openapi::jiff::Timestamp {
    "2026-12-02T12:00:00Z".parse().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("BERTH_MAGE_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    /// For any status a workspace's Mage reports, Mage's own instance manager
    /// (`check_auto_termination`) stops the workspace exactly when berth's reconciler finds
    /// it idle from the Lease berth's agent writes for that status.
    #[test]
    fn berth_suspends_exactly_when_mages_instance_manager_stops(
        running in 0i64..3,
        user in status_time(),
        scheduler in status_time(),
        max_idle in pick(vec![60i64, 600, 1800, 3600]),
    ) {
        let Some(oracle) = support::mage::oracle() else {
            return Ok(());
        };
        let status = json!({
            "is_instance_manager": false,
            "project_type": "sub",
            "active_pipeline_run_count": running,
            "last_user_request": user,
            "last_scheduler_activity": scheduler,
        });
        let answer = oracle.lock().unwrap_or_else(|e| e.into_inner()).ask(&json!({
            "id": "idle",
            "mode": "idle",
            "env": {"KUBE_NAMESPACE": "p", "HOSTNAME": "manager-0"},
            "now": "2026-12-02T12:00:00+00:00",
            "workspaces": [{
                "name": "w",
                "config": {"lifecycle_config": {"termination_policy": {"enable_auto_termination": true, "max_idle_seconds": max_idle}}},
                "activity": status,
            }],
        }));
        let mage_stops = answer["stop"]["w"].as_bool();
        prop_assert!(mage_stops.is_some(), "{answer}");
        let parsed: berth::mage::activity::Status = serde_json::from_value(status.clone()).unwrap();
        let now = berth_now();
        prop_assert_eq!(berth::mage::activity::stops(&parsed, now, max_idle), mage_stops.unwrap(), "{}", status);
        // The agent's Lease for this status, judged by the reconciler.
        let renew = berth::mage::activity::renew_time(&parsed, now);
        let lease: k8s_openapi::api::coordination::v1::Lease = serde_json::from_value(json!({
            "metadata": {"name": "w-activity", "namespace": "p",
                "annotations": {berth::activity::HEARTBEAT: "2026-12-02T12:00:00Z"}},
            "spec": {"renewTime": renew.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()},
        })).unwrap();
        let timeouts = std::collections::BTreeMap::from([("p/w".to_string(), max_idle as u64)]);
        let idle = berth::reconcile::idle::idle_at(&timeouts, &[lease], now);
        prop_assert_eq!(idle.contains_key("p/w"), mage_stops.unwrap(), "{}", status);
    }
}
