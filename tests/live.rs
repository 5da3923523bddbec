//! `berth plan` and `berth apply` against a real cluster: the full control plane of
//! tests/support (kube-apiserver, etcd, kube-controller-manager, kube-scheduler, kwok nodes),
//! so StatefulSets really roll out and pods are really replaced. Each test copies
//! sample-repo with its own namespaces and ApplySet (tests/support/repo.rs), so tests
//! sharing the control plane never see each other's objects.

mod support;

use assert_cmd::Command;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::repo::{Repo, changes, text};

/// Generous deadlines for the controllers (they take about a second on an idle machine).
const ROLLOUT: Duration = Duration::from_secs(120);

fn rendered(repo: &Repo) -> Vec<Value> {
    repo.rendered()
}

/// The pod UID of each workspace of a namespace (`<ws>-0`).
fn pod_uids(pods: &BTreeMap<String, Pod>) -> BTreeMap<String, String> {
    pods.iter()
        .map(|(name, pod)| (name.clone(), support::uid(pod)))
        .collect()
}

async fn generations(client: &kube::Client, namespace: &str) -> BTreeMap<String, (i64, String)> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    api.list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| {
            let hash = s
                .spec
                .as_ref()
                .and_then(|sp| sp.template.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get("berth/env-hash").cloned())
                .unwrap_or_default();
            (
                s.metadata.name.unwrap(),
                (s.metadata.generation.unwrap(), hash),
            )
        })
        .collect()
}

#[tokio::test]
async fn apply_then_plan_reports_no_changes_for_every_object() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let repo = Repo::new("noop");
    let objects = rendered(&repo).len();
    let (code, plan) = repo.plan_json(&cp);
    assert_eq!(code, 2);
    assert_eq!(plan["summary"]["create"], objects);
    let out = repo.apply(&cp, &[]);
    assert!(
        out.contains(&format!("applied: {objects} created, 0 updated, 0 deleted")),
        "{out}"
    );
    let (code, plan) = repo.plan_json(&cp);
    assert_eq!(code, 0, "plan after apply: {plan:#}");
    assert_eq!(plan["summary"]["unchanged"], objects);
    // The server defaulted plenty berth never set; none of it is drift.
    let sts: Api<StatefulSet> = Api::namespaced(cp.client().await, &repo.analytics());
    let live = sts.get("etl-dev").await.unwrap();
    assert_eq!(
        live.spec.unwrap().pod_management_policy.as_deref(),
        Some("OrderedReady")
    );
}

#[tokio::test]
async fn no_op_plan_lists_once_per_kind_and_writes_nothing() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let repo = Repo::new("count");
    repo.apply(&cp, &[]);
    let cluster = berth::cluster::Cluster::connect(&berth::cluster::ConnectOptions {
        kubeconfig: Some(cp.kubeconfig_path().to_path_buf()),
        context: None,
    })
    .await
    .unwrap();
    let desired = berth::desired(
        berth::source::read_dir(repo.path()).unwrap(),
        &Default::default(),
    );
    let options = berth::cluster::PlanOptions {
        applyset: berth::cluster::applyset::ApplySet {
            name: "berth-test".into(),
            namespace: format!("{}-berth", repo.prefix),
        },
    };
    let live = berth::cluster::plan(&cluster, &desired.resolved, &options)
        .await
        .unwrap();
    assert!(!live.plan.has_changes(), "{:?}", live.plan.changes);
    let counts = cluster.requests.snapshot();
    let kinds: std::collections::BTreeSet<String> = rendered(&repo)
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.len() >= 8, "{kinds:?}");
    // One LIST per kind, one for the Secrets' metadata of the one namespace whose
    // workspaces reference Secrets, and one GET of the ApplySet parent. Nothing else.
    assert_eq!(
        counts,
        BTreeMap::from([
            ("GET".to_string(), 1),
            ("LIST".to_string(), kinds.len() as u64 + 1)
        ]),
        "{counts:?} for kinds {kinds:?}"
    );
}

#[tokio::test]
async fn drift_from_another_manager_is_reported_and_healed() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let repo = Repo::new("drift");
    repo.apply(&cp, &[]);
    let client = cp.client().await;
    let ns = repo.analytics();
    // kubectl-style edits: one of a field berth owns, one of a field berth does not set.
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    sts.patch(
        "etl-prod",
        &PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        },
        &Patch::Merge(
            json!({"spec": {"replicas": 5}, "metadata": {"labels": {"owner": "someone"}}}),
        ),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    cms.patch(
        "etl-dev-env",
        &PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"metadata": {"annotations": {"note": "hello"}}})),
    )
    .await
    .unwrap();

    let (code, plan) = repo.plan_json(&cp);
    assert_eq!(code, 2);
    assert_eq!(changes(&plan), ["update StatefulSet/etl-prod"], "{plan:#}");
    assert_eq!(plan["changes"][0]["fields"], json!(["spec.replicas"]));
    let diff = plan["changes"][0]["diff"].as_str().unwrap();
    assert!(
        diff.contains("-  replicas: 5") && diff.contains("+  replicas: 1"),
        "{diff}"
    );
    assert!(
        plan["changes"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("kubectl-edit"),
        "{plan:#}"
    );

    // Without --force-conflicts nothing is applied, and the other manager is named.
    let out = repo.berth(&cp, "apply", &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("kubectl-edit")
            && err.contains("--force-conflicts")
            && err.contains("nothing was applied"),
        "{err}"
    );
    assert_eq!(
        sts.get("etl-prod").await.unwrap().spec.unwrap().replicas,
        Some(5)
    );

    repo.apply(&cp, &["--force-conflicts"]);
    let healed = sts.get("etl-prod").await.unwrap();
    assert_eq!(healed.spec.unwrap().replicas, Some(1));
    assert_eq!(
        healed
            .metadata
            .labels
            .unwrap()
            .get("owner")
            .map(String::as_str),
        Some("someone"),
        "fields of other managers stay"
    );
    let (code, _) = repo.plan_json(&cp);
    assert_eq!(code, 0);
}

/// The core promise, where users feel it: after an inherited variable changes, exactly the
/// workspaces that inherit it get new pods (the StatefulSet controller replaces them), the
/// new pods start with the new environment, and every other workspace keeps its pod.
#[tokio::test]
async fn inherited_variable_change_restarts_exactly_the_inheriting_workspaces() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let repo = Repo::new("restart");
    repo.apply(&cp, &[]);
    let client = cp.client().await;
    let before_a = generations(&client, &repo.analytics()).await;
    let before_m = generations(&client, &repo.ml()).await;
    let pods_a = pod_uids(&support::wait_rolled_out(&client, &repo.analytics(), ROLLOUT).await);
    let pods_m = pod_uids(&support::wait_rolled_out(&client, &repo.ml(), ROLLOUT).await);
    // Every workspace runs, except the suspended legacy-reports.
    assert_eq!(
        pods_a.keys().collect::<Vec<_>>(),
        ["etl-dev-0", "etl-prod-0", "reporting-dev-0"]
    );
    assert_eq!(
        pods_m.keys().collect::<Vec<_>>(),
        ["serving-prod-0", "training-dev-0"]
    );

    // DEV_ENV_BUCKET reaches analytics' dev workspaces only (byEnvironment.dev).
    repo.edit(
        "projects/analytics.yaml",
        "s3://analytics-dev-scratch",
        "s3://analytics-dev-v2",
    );
    let (code, plan) = repo.plan_json(&cp);
    assert_eq!(code, 2);
    let restarts: Vec<(String, String, bool)> = plan["restarts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["workspace"].as_str().unwrap().into(),
                r["variables"][0]["name"].as_str().unwrap().into(),
                r.get("pending").is_some(),
            )
        })
        .collect();
    assert_eq!(
        restarts,
        [
            ("etl-dev".into(), "DEV_ENV_BUCKET".into(), false),
            ("reporting-dev".into(), "DEV_ENV_BUCKET".into(), true)
        ]
    );
    assert_eq!(
        changes(&plan),
        [
            "update ConfigMap/etl-dev-env",
            "update ConfigMap/reporting-dev-env",
            "update StatefulSet/etl-dev"
        ]
    );

    repo.apply(&cp, &[]);
    let after_a = generations(&client, &repo.analytics()).await;
    let after_m = generations(&client, &repo.ml()).await;
    for (name, (generation, hash)) in &after_a {
        let (old_generation, old_hash) = &before_a[name];
        if name == "etl-dev" {
            assert_eq!(
                *generation,
                old_generation + 1,
                "etl-dev's pod template changed"
            );
            assert_ne!(hash, old_hash);
        } else {
            assert_eq!(
                (generation, hash),
                (old_generation, old_hash),
                "{name} must not restart"
            );
        }
    }
    assert_eq!(after_m, before_m, "ml-platform workspaces must not restart");

    // The StatefulSet controller replaces etl-dev's pod, and only that one.
    let old = pods_a["etl-dev-0"].clone();
    support::wait_for(ROLLOUT, "a new etl-dev pod", || async {
        let pods = support::pods(&client, &repo.analytics()).await;
        match pods.get("etl-dev-0") {
            Some(p) if support::uid(p) != old && support::is_ready(p) => Ok(()),
            other => Err(format!(
                "{:?}",
                other.map(|p| (support::uid(p), support::is_ready(p)))
            )),
        }
    })
    .await;
    let now_a = support::wait_rolled_out(&client, &repo.analytics(), ROLLOUT).await;
    let now_m = support::wait_rolled_out(&client, &repo.ml(), ROLLOUT).await;
    for (name, uid) in &pods_a {
        if name != "etl-dev-0" {
            assert_eq!(&support::uid(&now_a[name]), uid, "{name} was replaced");
        }
    }
    assert_eq!(pod_uids(&now_m), pods_m, "ml-platform pods were replaced");

    // The new pod starts with the new environment and the new hash; reporting-dev's pod
    // (restart: manual) still runs with the old one: its restart is pending.
    let etl_dev = &now_a["etl-dev-0"];
    let env = workspace_env(&client, etl_dev).await;
    assert_eq!(env["DEV_ENV_BUCKET"], "s3://analytics-dev-v2", "{env:?}");
    assert_eq!(env_hash(etl_dev), after_a["etl-dev"].1);
    assert_eq!(
        env_hash(&now_a["reporting-dev-0"]),
        before_a["reporting-dev"].1,
        "reporting-dev's pod runs the old environment until `berth restart`"
    );

    // The manual workspace stays pending until `berth restart`.
    let (code, plan) = repo.plan_json(&cp);
    assert_eq!(code, 0, "{plan:#}");
    let out = repo.berth(&cp, "restart", &["reporting-dev"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let restarted = generations(&client, &repo.analytics()).await;
    assert_ne!(
        restarted["reporting-dev"].1, before_a["reporting-dev"].1,
        "hash updated by restart"
    );
    let reporting = wait_replaced(&client, &repo.analytics(), "reporting-dev-0", &pods_a).await;
    assert_eq!(
        workspace_env(&client, &reporting).await["DEV_ENV_BUCKET"],
        "s3://analytics-dev-v2"
    );
    // An ad-hoc restart with an unchanged environment still rolls the workspace.
    let out = repo.berth(&cp, "restart", &["etl-prod"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let again = generations(&client, &repo.analytics()).await;
    assert_eq!(again["etl-prod"].0, restarted["etl-prod"].0 + 1);
    wait_replaced(&client, &repo.analytics(), "etl-prod-0", &pods_a).await;
    // …and a plan afterwards is still clean: the restart stamp belongs to another manager.
    let (code, plan) = repo.plan_json(&cp);
    assert_eq!(code, 0, "{plan:#}");
    // Through all this, ml-platform's pods were never touched.
    let now_m = support::wait_rolled_out(&client, &repo.ml(), ROLLOUT).await;
    assert_eq!(pod_uids(&now_m), pods_m);
}

/// Waits until `pod` is a new pod (another UID than in `before`), Ready, and its
/// StatefulSets rolled out; returns it.
async fn wait_replaced(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    before: &BTreeMap<String, String>,
) -> Pod {
    let old = before[pod].clone();
    support::wait_for(ROLLOUT, &format!("a new {pod}"), || async {
        let pods = support::pods(client, namespace).await;
        match pods.get(pod) {
            Some(p) if support::uid(p) != old && support::is_ready(p) => Ok(()),
            other => Err(format!(
                "{:?}",
                other.map(|p| (support::uid(p), support::is_ready(p)))
            )),
        }
    })
    .await;
    support::wait_rolled_out(client, namespace, ROLLOUT).await[pod].clone()
}

/// The environment the workspace container of a pod starts with.
async fn workspace_env(client: &kube::Client, pod: &Pod) -> BTreeMap<String, String> {
    let container = pod.spec.as_ref().unwrap().containers[0].name.clone();
    support::container_env(client, pod, &container)
        .await
        .unwrap()
}

fn env_hash(pod: &Pod) -> String {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("berth/env-hash"))
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn shared_secret_data_change_restarts_the_workspaces_using_it() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let repo = Repo::new("secret");
    let client = cp.client().await;
    // The namespace must exist for the Secret: apply once, then add the Secret.
    repo.apply(&cp, &[]);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &repo.analytics());
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "warehouse-credentials"}, "stringData": {"password": "first-password-value"}})).unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    // The Secret's first version restarts all four, in batches of one (10% of four).
    repo.apply(&cp, &["--wait", "--timeout", "180"]);
    let (code, _) = repo.plan_json(&cp);
    assert_eq!(code, 0);

    secrets
        .patch(
            "warehouse-credentials",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": "second-password-value"}})),
        )
        .await
        .unwrap();
    let (code, plan) = repo.plan_json(&cp);
    assert_eq!(code, 2);
    let restarted: Vec<&str> = plan["restarts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["workspace"].as_str().unwrap())
        .collect();
    // Every analytics workspace inherits DB_PASSWORD (userDefinedVars, shared secrets).
    assert_eq!(
        restarted,
        ["etl-dev", "etl-prod", "legacy-reports", "reporting-dev"]
    );
    assert_eq!(plan["restarts"][0]["variables"][0]["name"], "DB_PASSWORD");
    let everything = serde_json::to_string(&plan).unwrap();
    assert!(!everything.contains("password-value"));
}

#[tokio::test]
async fn removed_workspace_is_pruned_and_mass_prune_is_refused() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let repo = Repo::new("prune");
    repo.apply(&cp, &[]);
    let client = cp.client().await;
    // An object berth does not own, in a namespace it manages.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &repo.ml());
    let foreign: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "not-berths"}, "data": {"a": "b"}}))
            .unwrap();
    cms.create(&PostParams::default(), &foreign).await.unwrap();

    std::fs::remove_file(repo.path().join("workspaces/ml/serving-prod.yaml")).unwrap();
    let (code, plan) = repo.plan_json(&cp);
    assert_eq!(code, 2);
    assert_eq!(
        changes(&plan),
        [
            "delete StatefulSet/serving-prod",
            "delete Service/serving-prod",
            "delete ConfigMap/serving-prod-env"
        ]
    );
    assert!(
        plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["reason"] == "no longer in git")
    );
    repo.apply(&cp, &[]);
    assert!(cms.get_opt("serving-prod-env").await.unwrap().is_none());
    assert!(
        cms.get_opt("not-berths").await.unwrap().is_some(),
        "foreign objects are never pruned"
    );
    assert!(cms.get_opt("training-dev-env").await.unwrap().is_some());

    // An empty repository would prune everything: refused, and nothing is deleted.
    for entry in ["projects", "workspaces", "policies", "mage"] {
        std::fs::remove_dir_all(repo.path().join(entry)).unwrap();
    }
    let out = repo.berth(&cp, "apply", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--allow-mass-prune"),
        "{}",
        text(&out.stderr)
    );
    assert!(cms.get_opt("training-dev-env").await.unwrap().is_some());
}

#[tokio::test]
async fn invalid_tree_changes_nothing_in_the_cluster() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let repo = Repo::new("invalid");
    repo.apply(&cp, &[]);
    let client = cp.client().await;
    let before = generations(&client, &repo.analytics()).await;
    repo.edit(
        "workspaces/analytics/etl-dev.yaml",
        "environment: dev",
        "environment: dev\n  replicas: 3",
    );
    std::fs::remove_file(repo.path().join("workspaces/ml/serving-prod.yaml")).unwrap();
    let out = repo.berth(&cp, "apply", &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "workspaces/analytics/etl-dev.yaml:11:3: error: spec.replicas: unknown field `replicas`"
        ),
        "{err}"
    );
    assert!(err.contains("nothing was applied"));
    assert_eq!(generations(&client, &repo.analytics()).await, before);
    let cms: Api<ConfigMap> = Api::namespaced(client, &repo.ml());
    assert!(
        cms.get_opt("serving-prod-env").await.unwrap().is_some(),
        "no prune from an invalid tree"
    );
}

#[tokio::test]
async fn secret_values_never_appear_in_any_output() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let repo = Repo::new("leak");
    repo.apply(&cp, &[]);
    let client = cp.client().await;
    const VALUE: &str = "SUPER-SECRET-VALUE-4711";
    for (ns, name, key) in [
        (repo.analytics(), "warehouse-credentials", "password"),
        (repo.ml(), "huggingface", "token"),
    ] {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let secret: Secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {key: VALUE}}))
                .unwrap();
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }
    let mut outputs = Vec::new();
    for (command, args) in [
        ("validate", vec![]),
        ("render", vec![]),
        ("plan", vec!["--format", "text"]),
        ("plan", vec!["--format", "markdown"]),
        ("plan", vec!["--format", "json"]),
        ("apply", vec!["--force-conflicts"]),
        ("restart", vec!["etl-dev"]),
        ("plan", vec!["--format", "json"]),
    ] {
        let out = repo.berth(&cp, command, &args);
        outputs.push((command, text(&out.stdout) + &text(&out.stderr)));
    }
    for (command, output) in outputs {
        assert!(
            !output.contains(VALUE),
            "`berth {command}` printed a secret value"
        );
        assert!(
            !output.contains(&base64_of(VALUE)),
            "`berth {command}` printed a secret value (base64)"
        );
    }
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// `kubectl apply --server-side --dry-run=server` of everything berth renders, RBAC and the
/// executor's Job templates included: the real API server accepts all of it.
#[tokio::test]
async fn rendered_objects_and_executor_jobs_pass_server_side_dry_run() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let repo = Repo::new("dryrun");
    let objects = rendered(&repo);
    // Namespaces must exist for a dry-run of what lives in them.
    let namespaces: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "Namespace")
        .collect();
    let kubectl_apply = |yaml: String, dry_run: bool| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("objects.yaml");
        std::fs::write(&file, yaml).unwrap();
        let mut cmd = cp.kubectl();
        cmd.args(["apply", "--server-side", "--field-manager", "berth", "-f"])
            .arg(&file);
        if dry_run {
            cmd.arg("--dry-run=server");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "kubectl apply failed:\n{}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let to_yaml = |items: Vec<&Value>| {
        berth::render::to_yaml(&items.into_iter().cloned().collect::<Vec<_>>())
    };
    kubectl_apply(to_yaml(namespaces), false);
    let out = kubectl_apply(to_yaml(objects.iter().collect()), true);
    assert_eq!(out.lines().count(), objects.len(), "{out}");
    for kind in [
        "role.rbac.authorization.k8s.io",
        "rolebinding.rbac.authorization.k8s.io",
        "lease.coordination.k8s.io",
        "statefulset.apps",
    ] {
        assert!(out.contains(kind), "{kind} missing in:\n{out}");
    }
    assert!(
        out.lines()
            .all(|l| l.ends_with("serverside-applied (server dry run)")),
        "{out}"
    );

    // The Job of every k8s block, with Mage's run-time placeholders filled in.
    let out = Command::cargo_bin("berth")
        .unwrap()
        .args(["render", "--executor"])
        .arg(repo.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let jobs = text(&out.stdout)
        .replace("{trigger_name}", "nightly")
        .replace("{block_run_id}", "42")
        .replace(
            "namespace: analytics\n",
            &format!("namespace: {}\n", repo.analytics()),
        );
    assert!(
        !jobs.contains("namespace: default"),
        "jobs run in the project's namespace here"
    );
    let out = kubectl_apply(jobs, true);
    // Three k8s blocks, each run by the project's four workspaces.
    assert_eq!(out.matches("job.batch/").count(), 12, "{out}");
}

/// `--wait` waits for the StatefulSet controller to really roll out what apply changed, and
/// names the StatefulSets that do not finish in time.
#[tokio::test]
async fn apply_waits_for_rollouts_and_names_the_late_ones() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let repo = Repo::new("wait");
    let client = cp.client().await;
    let out = repo
        .berth_as(
            cp.kubeconfig_path(),
            "apply",
            &["--wait", "--timeout", "120"],
        )
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("rolled out: 6 StatefulSet(s)"),
        "{}",
        text(&out.stdout)
    );
    // berth returned only once the rollouts were done: right now, without waiting, every
    // StatefulSet is rolled out and every workspace's pod is Ready.
    for ns in [repo.analytics(), repo.ml()] {
        let api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
        for sts in api.list(&Default::default()).await.unwrap().items {
            assert!(
                support::rolled_out(&sts),
                "{}",
                support::rollout_state(&sts)
            );
        }
        let pods = support::pods(&client, &ns).await;
        assert!(!pods.is_empty());
        for (name, pod) in &pods {
            assert!(
                support::is_ready(pod),
                "{name} is not ready: {:?}",
                pod.status
            );
        }
    }

    // A change that cannot roll out: serving-prod's new pod asks for a node that no node
    // is. The controller deletes the old pod, the new one stays Pending (unschedulable),
    // --wait gives up after its timeout and names the workspace, and only it.
    repo.edit(
        "workspaces/ml/serving-prod.yaml",
        "value: \"3\"",
        "value: \"4\"\n  kubernetes:\n    nodeSelector:\n      pool: nowhere",
    );
    let started = Instant::now();
    let out = repo.berth(&cp, "apply", &["--wait", "--timeout", "5"]);
    assert!(started.elapsed() >= Duration::from_secs(5));
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "{:?}\n{}\n{err}",
        out.status,
        text(&out.stdout)
    );
    assert!(
        err.contains(&format!(
            "StatefulSet {}/serving-prod did not roll out",
            repo.ml()
        )),
        "{err}"
    );
    assert!(!err.contains("training-dev"), "{err}");
    // …and the cluster agrees: the new pod is there, unschedulable.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &repo.ml());
    let pod = support::wait_for(ROLLOUT, "serving-prod-0 to be unschedulable", || async {
        let pod = pods
            .get_opt("serving-prod-0")
            .await
            .map_err(|e| e.to_string())?;
        let unschedulable = pod.as_ref().is_some_and(|p| {
            p.status.as_ref().is_some_and(|s| {
                s.conditions.iter().flatten().any(|c| {
                    c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable")
                })
            })
        });
        if unschedulable {
            Ok(pod.unwrap())
        } else {
            Err(format!("{:?}", pod.and_then(|p| p.status)))
        }
    })
    .await;
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));

    // Fixed in git. With the default pod management (OrderedReady) the StatefulSet
    // controller does not replace a pod that never became Ready, even once the template is
    // reverted: Kubernetes' documented "forced rollback" is to delete that pod by hand.
    repo.edit(
        "workspaces/ml/serving-prod.yaml",
        "\n  kubernetes:\n    nodeSelector:\n      pool: nowhere",
        "",
    );
    repo.apply(&cp, &[]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &repo.ml());
    pods.delete("serving-prod-0", &Default::default())
        .await
        .unwrap();
    let now = support::wait_rolled_out(&client, &repo.ml(), ROLLOUT).await;
    assert!(support::is_ready(&now["serving-prod-0"]));
    let (code, plan) = repo.plan_json(&cp);
    assert_eq!(code, 0, "{plan:#}");
}

/// An identity that may create namespaces and ConfigMaps but nothing else: every object it
/// may write is applied, every other one is named with the API's reason, and apply exits 1
/// with the count.
#[tokio::test]
async fn one_refused_object_never_stops_the_others() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let repo = Repo::new("partial");
    let client = cp.client().await;
    let grant = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": format!("{}-partial", repo.prefix)},
        "rules": [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["namespaces", "configmaps"], "verbs": ["create", "patch"]},
        ],
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{}-partial", repo.prefix)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{}-partial", repo.prefix)},
        "subjects": [{"kind": "User", "name": support::UNPRIVILEGED_USER, "apiGroup": "rbac.authorization.k8s.io"}],
    });
    for (object, plural) in [(grant, "clusterroles"), (binding, "clusterrolebindings")] {
        let resource = kube::core::ApiResource {
            group: "rbac.authorization.k8s.io".into(),
            version: "v1".into(),
            api_version: "rbac.authorization.k8s.io/v1".into(),
            kind: object["kind"].as_str().unwrap().into(),
            plural: plural.into(),
        };
        let api: Api<kube::api::DynamicObject> = Api::all_with(client.clone(), &resource);
        let object: kube::api::DynamicObject = serde_json::from_value(object).unwrap();
        api.create(&PostParams::default(), &object).await.unwrap();
    }
    let out = repo
        .berth_as(cp.unprivileged_kubeconfig_path(), "apply", &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let (stdout, err) = (text(&out.stdout), text(&out.stderr));
    // Each refused object is named with the API's reason, in one line; the count says how
    // many failed, and everything the identity may write was written.
    // (Lines that are not berth's own words are RUST_LOG=debug's, which this test sets.)
    let failures: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("  failed  "))
        .collect();
    assert!(
        failures
            .iter()
            .any(|l| l.starts_with("  failed  ServiceAccount/") && l.contains(": Forbidden: ")),
        "{err}"
    );
    assert!(
        failures
            .iter()
            .all(|l| !l.contains("Status {") && !l.contains("ApiError")),
        "{err}"
    );
    let failed = failures.len();
    assert!(
        err.contains(&format!(
            "error: {failed} object(s) failed (named above); the others were applied"
        )),
        "{err}"
    );
    assert!(stdout.contains(&format!("; {failed} failed")), "{stdout}");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &repo.analytics());
    assert!(
        cms.get_opt("etl-dev-env").await.unwrap().is_some(),
        "a ConfigMap (allowed) was applied although earlier objects failed"
    );
    let sts: Api<StatefulSet> = Api::namespaced(client, &repo.analytics());
    assert!(
        sts.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "StatefulSets (forbidden) were not"
    );
}
