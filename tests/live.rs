//! `berth plan` and `berth apply` against a real kube-apiserver (tests/support starts it).
//! Each test copies sample-repo with its own namespaces and ApplySet, so tests sharing the
//! control plane never see each other's objects.

mod support;

use assert_cmd::Command;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use support::ControlPlane;

/// A copy of sample-repo whose namespaces and ApplySet are unique to one test.
struct Repo {
    dir: tempfile::TempDir,
    prefix: String,
}

impl Repo {
    fn new(test: &str) -> Repo {
        let prefix = support::unique_name(test);
        let dir = tempfile::tempdir().unwrap();
        let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sample-repo");
        for file in berth::source::read_dir(&sample).unwrap() {
            let target = dir.path().join(&file.path);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            let text = file
                .text()
                .unwrap()
                .replace("namespace: analytics", &format!("namespace: {prefix}-a"))
                .replace("namespace: ml-platform", &format!("namespace: {prefix}-m"))
                .replace(
                    "namespace: zenml-runners",
                    &format!("namespace: {prefix}-z"),
                );
            std::fs::write(target, text).unwrap();
        }
        Repo { dir, prefix }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn analytics(&self) -> String {
        format!("{}-a", self.prefix)
    }

    fn ml(&self) -> String {
        format!("{}-m", self.prefix)
    }

    fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} lacks {from}");
        std::fs::write(&path, text.replace(from, to)).unwrap();
    }

    /// `berth <command> <repo> --kubeconfig … --applyset-namespace …` plus `args`.
    fn berth(&self, cp: &ControlPlane, command: &str, args: &[&str]) -> std::process::Output {
        self.berth_as(cp.kubeconfig_path(), command, args)
            .output()
            .unwrap()
    }

    /// The berth command, run with the identity of `kubeconfig`.
    fn berth_as(&self, kubeconfig: &Path, command: &str, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("berth"));
        cmd.arg(command);
        if command == "restart" {
            cmd.arg(args[0]).arg(self.path()).args(&args[1..]);
        } else {
            cmd.arg(self.path()).args(args);
        }
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--applyset", "berth-test", "--applyset-namespace"])
            .arg(format!("{}-berth", self.prefix))
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "debug");
        cmd
    }

    fn apply(&self, cp: &ControlPlane, args: &[&str]) -> String {
        let out = self.berth(cp, "apply", args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "apply failed:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn plan_json(&self, cp: &ControlPlane) -> (i32, Value) {
        let out = self.berth(cp, "plan", &["--format", "json"]);
        let code = out.status.code().unwrap_or(-1);
        assert!(
            code == 0 || code == 2,
            "plan failed:\n{}",
            text(&out.stderr)
        );
        (code, serde_json::from_slice(&out.stdout).unwrap())
    }
}

/// The objects berth renders for a repository.
fn rendered(repo: &Repo) -> Vec<Value> {
    let desired = berth::desired(
        berth::source::read_dir(repo.path()).unwrap(),
        &Default::default(),
    );
    assert!(!desired.has_errors(), "{:?}", desired.diagnostics);
    desired.objects
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn changes(plan: &Value) -> Vec<String> {
    plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}/{}",
                c["action"].as_str().unwrap(),
                c["object"]["kind"].as_str().unwrap(),
                c["object"]["name"].as_str().unwrap()
            )
        })
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
    let Some(cp) = support::control_plane().await else {
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
    let Some(cp) = support::control_plane().await else {
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
    let Some(cp) = support::control_plane().await else {
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

#[tokio::test]
async fn inherited_variable_change_restarts_exactly_the_inheriting_workspaces() {
    let Some(cp) = support::control_plane().await else {
        return;
    };
    let repo = Repo::new("restart");
    repo.apply(&cp, &[]);
    let client = cp.client().await;
    let before_a = generations(&client, &repo.analytics()).await;
    let before_m = generations(&client, &repo.ml()).await;

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
    // An ad-hoc restart with an unchanged environment still rolls the workspace.
    let out = repo.berth(&cp, "restart", &["etl-prod"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let again = generations(&client, &repo.analytics()).await;
    assert_eq!(again["etl-prod"].0, restarted["etl-prod"].0 + 1);
    // …and a plan afterwards is still clean: the restart stamp belongs to another manager.
    let (code, plan) = repo.plan_json(&cp);
    assert_eq!(code, 0, "{plan:#}");
}

#[tokio::test]
async fn shared_secret_data_change_restarts_the_workspaces_using_it() {
    let Some(cp) = support::control_plane().await else {
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
    repo.apply(&cp, &[]);
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
    let Some(cp) = support::control_plane().await else {
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
    let Some(cp) = support::control_plane().await else {
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
    let Some(cp) = support::control_plane().await else {
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
    let Some(cp) = support::control_plane().await else {
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
    assert_eq!(out.matches("job.batch/").count(), 3, "{out}");
}

/// `--wait` waits for StatefulSets to roll out. No controller runs here: the test plays the
/// StatefulSet controller and writes the rolled-out status itself.
#[tokio::test]
async fn apply_waits_for_rollouts_and_names_the_late_ones() {
    let Some(cp) = support::control_plane().await else {
        return;
    };
    let repo = Repo::new("wait");
    let client = cp.client().await;
    let mut child = repo
        .berth_as(
            cp.kubeconfig_path(),
            "apply",
            &["--wait", "--timeout", "60"],
        )
        // Little output: nothing reads the pipes until the child ends.
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let names = ["etl-dev", "etl-prod", "legacy-reports", "reporting-dev"];
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &repo.analytics());
    let ml: Api<StatefulSet> = Api::namespaced(client.clone(), &repo.ml());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let a = sts.list(&Default::default()).await.unwrap().items.len();
        let m = ml.list(&Default::default()).await.unwrap().items.len();
        if a == names.len() && m == 2 {
            break;
        }
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "StatefulSets never appeared:\n{}\n{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for name in names {
        support::mark_statefulset_rolled_out(&client, &repo.analytics(), name)
            .await
            .unwrap();
    }
    for name in ["serving-prod", "training-dev"] {
        support::mark_statefulset_rolled_out(&client, &repo.ml(), name)
            .await
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("rolled out: 6 StatefulSet(s)"),
        "{}",
        text(&out.stdout)
    );

    // A change nobody rolls out: --wait gives up after its timeout and names the workspace.
    repo.edit(
        "workspaces/ml/serving-prod.yaml",
        "value: \"3\"",
        "value: \"4\"",
    );
    let out = repo.berth(&cp, "apply", &["--wait", "--timeout", "2"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "StatefulSet {}/serving-prod did not roll out within 2s",
            repo.ml()
        )),
        "{err}"
    );
    assert!(!err.contains("training-dev"), "{err}");
}

/// An identity that may create namespaces and ConfigMaps but not ServiceAccounts: apply
/// fails at the first forbidden object and applies nothing after it.
#[tokio::test]
async fn apply_stops_at_the_first_failure() {
    let Some(cp) = support::control_plane().await else {
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
    let err = text(&out.stderr);
    assert!(
        err.contains("applying ServiceAccount/") && err.contains("forbidden"),
        "{err}"
    );
    assert!(err.contains("nothing was applied after it"), "{err}");
    // Namespaces came first and exist; ConfigMaps and StatefulSets came later and do not.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &repo.analytics());
    assert!(cms.get_opt("etl-dev-env").await.unwrap().is_none());
    let sts: Api<StatefulSet> = Api::namespaced(client, &repo.analytics());
    assert!(
        sts.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}
