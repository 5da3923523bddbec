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
                .text
                .replace("namespace: analytics", &format!("namespace: {prefix}-a"))
                .replace("namespace: ml-platform", &format!("namespace: {prefix}-m"));
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
        let mut cmd = Command::cargo_bin("berth").unwrap();
        cmd.arg(command);
        if command == "restart" {
            cmd.arg(args[0]).arg(self.path()).args(&args[1..]);
        } else {
            cmd.arg(self.path()).args(args);
        }
        cmd.arg("--kubeconfig")
            .arg(cp.kubeconfig_path())
            .args(["--applyset", "berth-test", "--applyset-namespace"])
            .arg(format!("{}-berth", self.prefix))
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "debug");
        cmd.output().unwrap()
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
    let (code, plan) = repo.plan_json(&cp);
    assert_eq!(code, 2);
    assert_eq!(plan["summary"]["create"], 20);
    let out = repo.apply(&cp, &[]);
    assert!(
        out.contains("applied: 20 created, 0 updated, 0 deleted"),
        "{out}"
    );
    let (code, plan) = repo.plan_json(&cp);
    assert_eq!(code, 0, "plan after apply: {plan:#}");
    assert_eq!(plan["summary"]["unchanged"], 20);
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
    // 4 kinds (Namespace, ConfigMap, Service, StatefulSet) + the Secrets' metadata of the
    // one namespace whose workspaces reference Secrets; one GET of the ApplySet parent.
    assert_eq!(
        counts,
        BTreeMap::from([("GET".to_string(), 1), ("LIST".to_string(), 5)]),
        "{counts:?}"
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
    for entry in ["projects", "workspaces", "policies"] {
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
