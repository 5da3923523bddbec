//! Destructive paths are safe by construction, checked where users feel it: on the full
//! test control plane (controllers, kwok nodes, a volume provisioner), a namespace berth
//! stops managing keeps what others put in it, a workspace's claims outlive it, storage
//! grows without touching the pods, and one object's problem never hides the others.

mod support;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::time::Duration;
use support::repo::{Repo, changes, text};

const ROLLOUT: Duration = Duration::from_secs(90);

async fn create_foreign(client: &kube::Client, namespace: &str) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = serde_json::from_value(
        json!({"metadata": {"name": "someone-elses-data"}, "data": {"k": "v"}}),
    )
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = serde_json::from_value(
        json!({"metadata": {"name": "someone-elses-secret"}, "stringData": {"k": "v"}}),
    )
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

fn remove_ml_project(repo: &Repo) {
    std::fs::remove_file(repo.path().join("projects/ml-platform.yaml")).unwrap();
    std::fs::remove_dir_all(repo.path().join("workspaces/ml")).unwrap();
}

/// Seen: removing the ml-platform project deleted Namespace/ml-platform, and with it other
/// tools' objects and the workspaces' claims. Now the namespace is kept and released.
#[tokio::test]
async fn a_namespace_leaving_git_is_kept_with_foreign_objects_and_claims() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let repo = Repo::new("ns-keep");
    repo.apply(&cp, &[]);
    support::wait_rolled_out(&client, &repo.ml(), ROLLOUT).await;
    create_foreign(&client, &repo.ml()).await;

    remove_ml_project(&repo);
    let out = repo.berth(&cp, "apply", &["--allow-mass-prune"]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("= keep  Namespace/{}", repo.ml()))
            && stdout.contains("berth does not delete namespaces"),
        "{stdout}"
    );
    assert!(
        stdout.contains("keeps its volume claims and their data (data-training-dev-0)"),
        "the plan names the claims it keeps:\n{stdout}"
    );

    // The namespace, what others put in it and the workspaces' data are all there.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = namespaces.get(&repo.ml()).await.unwrap();
    assert!(ns.metadata.deletion_timestamp.is_none(), "not terminating");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &repo.ml());
    assert!(cms.get_opt("someone-elses-data").await.unwrap().is_some());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &repo.ml());
    assert!(
        secrets
            .get_opt("someone-elses-secret")
            .await
            .unwrap()
            .is_some()
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &repo.ml());
    for claim in ["data-training-dev-0", "data-serving-prod-0"] {
        assert!(
            claims.get_opt(claim).await.unwrap().is_some(),
            "{claim} kept"
        );
    }
    // berth's own workloads there are gone, and the namespace is no longer berth's.
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &repo.ml());
    assert!(sts.get_opt("training-dev").await.unwrap().is_none());
    let labels = ns.metadata.labels.unwrap_or_default();
    assert!(
        !labels.contains_key("applyset.kubernetes.io/part-of"),
        "{labels:?}"
    );
    let (code, plan) = repo.plan_json(&cp);
    assert_eq!(code, 0, "nothing left to do: {plan}");
}

/// With the project's opt-in, a namespace is deleted only when it holds nothing berth does
/// not own; a namespace that still holds claims (data) is kept, and says why.
#[tokio::test]
async fn an_opted_in_namespace_is_deleted_only_when_nothing_foreign_is_left() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let repo = Repo::new("ns-optin");
    repo.edit(
        "projects/ml-platform.yaml",
        "  image: mageai/mageai:0.9.76\n",
        "  image: mageai/mageai:0.9.76\n  pruneNamespace: true\n",
    );
    repo.apply(&cp, &[]);
    support::wait_rolled_out(&client, &repo.ml(), ROLLOUT).await;

    // Claims are data: the namespace stays, and the plan says what holds it.
    remove_ml_project(&repo);
    let out = repo.berth(&cp, "plan", &[]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("= keep  Namespace/{}", repo.ml()))
            && stdout.contains("PersistentVolumeClaim/data-training-dev-0"),
        "{stdout}\n{}",
        text(&out.stderr)
    );

    // An opted-in namespace that holds only berth's objects is deleted, and really goes
    // (the namespace controller finalizes it).
    let empty = Repo::new("ns-empty");
    empty.edit(
        "projects/ml-platform.yaml",
        "  image: mageai/mageai:0.9.76\n",
        "  image: mageai/mageai:0.9.76\n  pruneNamespace: true\n",
    );
    std::fs::remove_dir_all(empty.path().join("workspaces/ml")).unwrap();
    empty.apply(&cp, &[]);
    std::fs::remove_file(empty.path().join("projects/ml-platform.yaml")).unwrap();
    let stdout = empty.apply(&cp, &["--allow-mass-prune"]);
    assert!(
        stdout.contains(&format!("- delete  Namespace/{}", empty.ml())),
        "{stdout}"
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    support::wait_for(
        Duration::from_secs(60),
        "the namespace to be gone",
        || async {
            match namespaces.get_opt(&empty.ml()).await {
                Ok(None) => Ok(()),
                Ok(Some(ns)) => Err(format!("{:?}", ns.status)),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
}

/// Seen: changing storage.size failed the whole plan with a raw API error. Growing it now
/// expands the claim and re-creates the StatefulSet without touching its pod.
#[tokio::test]
async fn growing_storage_expands_the_claim_and_keeps_the_pod() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let repo = Repo::new("grow");
    repo.apply(&cp, &[]);
    let pods = support::wait_rolled_out(&client, &repo.analytics(), ROLLOUT).await;
    let before = support::uid(&pods["etl-dev-0"]);

    repo.edit(
        "workspaces/analytics/etl-dev.yaml",
        "size: 20Gi",
        "size: 30Gi",
    );
    let (code, plan) = repo.plan_json(&cp);
    assert_eq!(code, 2);
    assert_eq!(changes(&plan), ["recreate StatefulSet/etl-dev"], "{plan:#}");
    let notes = plan["changes"][0]["notes"].to_string();
    assert!(
        notes.contains("expands data-etl-dev-0 from 20Gi to 30Gi")
            && notes.contains("without deleting its pods"),
        "{notes}"
    );

    let stdout = repo.apply(&cp, &[]);
    assert!(stdout.contains("1 re-created"), "{stdout}");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &repo.analytics());
    let claim = claims.get("data-etl-dev-0").await.unwrap();
    let requested = claim.spec.unwrap().resources.unwrap().requests.unwrap();
    assert_eq!(requested["storage"].0, "30Gi");
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &repo.analytics());
    let template = sts
        .get("etl-dev")
        .await
        .unwrap()
        .spec
        .unwrap()
        .volume_claim_templates;
    let size = serde_json::to_value(template).unwrap();
    assert_eq!(size[0]["spec"]["resources"]["requests"]["storage"], "30Gi");
    // The re-created StatefulSet adopted the running pod: same pod, never restarted.
    let pods = support::wait_rolled_out(&client, &repo.analytics(), ROLLOUT).await;
    assert_eq!(support::uid(&pods["etl-dev-0"]), before, "the pod was kept");
    let (code, plan) = repo.plan_json(&cp);
    assert_eq!(code, 0, "{plan:#}");
}

/// Workspace Services are headless. One that an earlier berth made with a virtual IP
/// cannot change in place (spec.clusterIP is immutable): the plan says it is re-created,
/// apply does it without --allow-replace, and the workspace's pod is not touched.
#[tokio::test]
async fn a_service_with_a_virtual_ip_is_re_created_headless_and_the_pod_kept() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let repo = Repo::new("headless");
    repo.apply(&cp, &[]);
    let pods = support::wait_rolled_out(&client, &repo.analytics(), ROLLOUT).await;
    let before = support::uid(&pods["etl-dev-0"]);

    // The Service as an earlier berth applied it: same labels and owner, no clusterIP.
    let services: Api<Service> = Api::namespaced(client.clone(), &repo.analytics());
    let live = services.get("etl-dev").await.unwrap();
    assert_eq!(
        live.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("None")
    );
    let old = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "etl-dev",
            "labels": live.metadata.labels,
            "annotations": live.metadata.annotations,
        },
        "spec": {
            "selector": live.spec.as_ref().unwrap().selector,
            "ports": [{"name": "http", "port": 6789, "targetPort": "http"}],
        },
    });
    services
        .delete("etl-dev", &DeleteParams::default())
        .await
        .unwrap();
    support::wait_for(ROLLOUT, "the old Service to go", || async {
        match services.get_opt("etl-dev").await.unwrap() {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    services
        .patch("etl-dev", &PatchParams::apply("berth"), &Patch::Apply(&old))
        .await
        .unwrap();
    let ip = services
        .get("etl-dev")
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip;
    assert!(ip.as_deref().is_some_and(|ip| ip != "None"), "{ip:?}");

    let (code, plan) = repo.plan_json(&cp);
    assert_eq!(code, 2);
    assert_eq!(changes(&plan), ["recreate Service/etl-dev"], "{plan:#}");
    let notes = plan["changes"][0]["notes"].to_string();
    assert!(
        notes.contains("spec.clusterIP cannot change in place") && notes.contains("headless"),
        "{notes}"
    );

    let stdout = repo.apply(&cp, &[]);
    assert!(stdout.contains("1 re-created"), "{stdout}");
    let service = services.get("etl-dev").await.unwrap();
    assert_eq!(service.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    let pods = support::wait_rolled_out(&client, &repo.analytics(), ROLLOUT).await;
    assert_eq!(support::uid(&pods["etl-dev-0"]), before, "the pod was kept");
    let (code, plan) = repo.plan_json(&cp);
    assert_eq!(code, 0, "{plan:#}");
}

/// A shrink is refused at the field, with file:line; the rest of the plan still applies,
/// and apply says how many objects failed.
#[tokio::test]
async fn shrinking_storage_is_refused_and_the_rest_still_applies() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let repo = Repo::new("shrink");
    repo.apply(&cp, &[]);
    let line = storage_line_of(&repo, "size: 20Gi");
    repo.edit(
        "workspaces/analytics/etl-dev.yaml",
        "size: 20Gi",
        "size: 10Gi",
    );
    repo.edit(
        "workspaces/analytics/etl-prod.yaml",
        "team: analytics",
        "team: analytics-platform",
    );

    let out = repo.berth(&cp, "plan", &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "workspaces/analytics/etl-dev.yaml:{line}:11: error: spec.storage.size: StatefulSet/{}/etl-dev: storage.size cannot shrink (20Gi → 10Gi)",
            repo.analytics()
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("ApiError") && !stderr.contains("Status {"),
        "{stderr}"
    );
    assert!(
        stdout.contains("StatefulSet/") && stdout.contains("etl-prod"),
        "{stdout}"
    );

    let out = repo.berth(&cp, "apply", &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("; 1 failed"), "{stdout}");
    assert!(
        stderr.contains("1 object(s) failed (named above); the others were applied"),
        "{stderr}"
    );
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &repo.analytics());
    let prod = sts.get("etl-prod").await.unwrap();
    assert_eq!(
        prod.metadata.labels.unwrap()["team"],
        "analytics-platform",
        "the other workspace was applied"
    );
    let dev = serde_json::to_value(sts.get("etl-dev").await.unwrap()).unwrap();
    assert_eq!(
        dev["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"], "20Gi",
        "the refused one is untouched"
    );
}

/// Seen: after applying a literal variable's change inherited by a `restart: manual`
/// workspace, the next plan blamed a Secret. The reason names the variable, across applies.
#[tokio::test]
async fn a_pending_restart_names_the_variable_across_applies() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let repo = Repo::new("pending");
    repo.apply(&cp, &[]);
    repo.edit(
        "projects/analytics.yaml",
        "value: s3://analytics-dev-scratch",
        "value: s3://analytics-dev-scratch-2",
    );
    for _ in 0..2 {
        repo.apply(&cp, &[]);
        let (_, plan) = repo.plan_json(&cp);
        let pending: Vec<&Value> = plan["restarts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["workspace"] == "reporting-dev")
            .collect();
        assert_eq!(pending.len(), 1, "{plan:#}");
        let variables = pending[0]["variables"].as_array().unwrap();
        assert_eq!(variables.len(), 1, "{plan:#}");
        assert_eq!(variables[0]["name"], "DEV_ENV_BUCKET");
        assert!(
            !variables[0]["source"].as_str().unwrap().contains("Secret"),
            "{plan:#}"
        );
    }
}

/// A Secret a workspace references but that does not exist is said, per workspace.
#[tokio::test]
async fn missing_secrets_and_keys_are_reported() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let repo = Repo::new("secrets");
    let out = repo.berth(&cp, "plan", &[]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "warning: workspace {}/etl-dev: Secret warehouse-credentials does not exist (variable DB_PASSWORD)",
            repo.analytics()
        )),
        "{stdout}"
    );
    // The Secret exists, without the key: said for the workspaces this plan starts.
    repo.apply(&cp, &[]);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &repo.analytics());
    let secret = serde_json::from_value(
        json!({"metadata": {"name": "warehouse-credentials"}, "stringData": {"user": "u"}}),
    )
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let out = repo.berth(&cp, "plan", &[]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("Secret warehouse-credentials has no key password (variable DB_PASSWORD)"),
        "{stdout}"
    );
    assert!(!stdout.contains("does not exist"), "{stdout}");
}

/// Immutable changes are planned in review too: `berth diff` between two revisions shows a
/// growing storage.size as a re-creation that keeps the pods, and refuses a shrink at its
/// file:line, with no cluster involved.
#[test]
fn diff_plans_growth_and_refuses_a_shrink_between_revisions() {
    let repo = Repo::new("diff-storage");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(repo.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "base"]);
    let diff = |base: &str| {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("berth"))
            .args(["diff", "--base", base, "--head", "HEAD"])
            .arg(repo.path())
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    repo.edit(
        "workspaces/analytics/etl-dev.yaml",
        "size: 20Gi",
        "size: 50Gi",
    );
    git(&["commit", "-qam", "grow"]);
    let out = diff("HEAD~1");
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("re-create  StatefulSet/") && stdout.contains("from 20Gi to 50Gi"),
        "{stdout}"
    );
    let line = storage_line_of(&repo, "size: 50Gi");
    repo.edit(
        "workspaces/analytics/etl-dev.yaml",
        "size: 50Gi",
        "size: 5Gi",
    );
    git(&["commit", "-qam", "shrink"]);
    let out = diff("HEAD~1");
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{stderr}",
        text(&out.stdout)
    );
    assert!(
        stderr.contains(&format!(
            "workspaces/analytics/etl-dev.yaml:{line}:11: error: spec.storage.size:"
        )) && stderr.contains("cannot shrink (50Gi → 5Gi)"),
        "{stderr}"
    );
}

fn storage_line_of(repo: &Repo, needle: &str) -> usize {
    let text =
        std::fs::read_to_string(repo.path().join("workspaces/analytics/etl-dev.yaml")).unwrap();
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}
