//! Least privilege, checked by the API server itself: deploy/'s RBAC gives berth's identity
//! no Secret outside the namespaces it manages, the admission policy in deploy/ refuses any
//! Role or RoleBinding berth writes that grants more than berth's own rules, and workspace
//! pods meet the "restricted" Pod Security Standard.

mod support;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::rbac::v1::Role;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::repo::{Repo, text};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

fn kubectl_ok(cp: &support::ControlPlane, args: &[&str], file: Option<&Path>) {
    let mut cmd = cp.kubectl();
    cmd.args(args);
    if let Some(file) = file {
        cmd.arg(file);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        text(&out.stderr)
    );
}

fn role(rules: serde_json::Value) -> Role {
    serde_json::from_value(
        json!({"metadata": {"name": support::unique_name("probe")}, "rules": rules}),
    )
    .unwrap()
}

fn refused(result: &Result<Role, kube::Error>) -> Option<String> {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => Some(s.message.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn berth_reads_no_foreign_secret_and_cannot_grant_more_than_its_rules() {
    let Some(cp) = support::control_plane().await else {
        return;
    };
    let admin = cp.client().await;
    for file in ["00-namespace.yaml", "10-rbac.yaml", "40-admission.yaml"] {
        kubectl_ok(&cp, &["apply", "-f"], Some(&deploy(file)));
    }
    let dir = tempfile::tempdir().unwrap();
    // berth's identity in deploy/.
    let kubeconfig = support::identity::kubeconfig_as(&cp, "berth-system", "berth", dir.path());
    let berth = support::identity::client_of(&kubeconfig).await;
    let probe_ns = cp.namespace("probe").await;
    let roles: Api<Role> = Api::namespaced(berth.clone(), &probe_ns);

    // berth's own kind of rule is allowed (a workspace viewer's)…
    let viewer = role(
        json!([{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get"], "resourceNames": ["w-0"]}]),
    );
    // …once the policy is in force (the API server loads it within moments).
    let star = role(json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]));
    let message = support::wait_for(
        Duration::from_secs(30),
        "the admission policy to refuse `*`",
        || async {
            let result = roles.create(&PostParams::default(), &star).await;
            refused(&result).ok_or_else(|| format!("{result:?}"))
        },
    )
    .await;
    assert!(
        message.contains("berth-rbac-guard") && message.contains("berth may not grant"),
        "{message}"
    );
    roles.create(&PostParams::default(), &viewer).await.unwrap();
    for rules in [
        json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]),
        json!([{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["escalate"]}]),
        json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]),
    ] {
        let result = roles
            .create(&PostParams::default(), &role(rules.clone()))
            .await;
        assert!(refused(&result).is_some(), "{rules}: {result:?}");
    }

    // No Secret can be read cluster-wide, nor in a namespace berth does not manage.
    let all: Api<Secret> = Api::all(berth.clone());
    assert!(
        matches!(all.list_metadata(&ListParams::default()).await, Err(kube::Error::Api(s)) if s.code == 403)
    );
    let foreign: Api<Secret> = Api::namespaced(berth.clone(), &probe_ns);
    assert!(
        matches!(foreign.list_metadata(&ListParams::default()).await, Err(kube::Error::Api(s)) if s.code == 403)
    );

    // berth, as itself, applies a repository: its RBAC is enough, the admission policy lets
    // its own Roles through, and it may then read Secrets of the namespaces it manages.
    let repo = Repo::new("least");
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &repo.analytics());
    kubectl_ok(&cp, &["create", "namespace", &repo.analytics()], None);
    let secret = serde_json::from_value(
        json!({"metadata": {"name": "warehouse-credentials"}, "stringData": {"password": "p"}}),
    )
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    // As the reconciler would: its ApplySet in berth-system, where its account lives.
    let berth_cmd = |command: &str, args: &[&str]| {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("berth"))
            .arg(command)
            .arg(repo.path())
            .args(args)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--applyset", &format!("berth-{}", repo.prefix)])
            .args(["--applyset-namespace", "berth-system"])
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let apply = |args: &[&str]| berth_cmd("apply", args);
    let out = apply(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let managed: Api<Secret> = Api::namespaced(berth.clone(), &repo.analytics());
    assert!(managed.list_metadata(&ListParams::default()).await.is_ok());
    assert!(
        matches!(foreign.list_metadata(&ListParams::default()).await, Err(kube::Error::Api(s)) if s.code == 403)
    );
    // The Secret versions berth could not read at the first apply are learnt without
    // restarting anything, then the plan is empty.
    let plan = berth_cmd("plan", &["--format", "json"]);
    let value: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(value["restarts"], json!([]), "{value:#}");
    let out = apply(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan = berth_cmd("plan", &[]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stdout));
}

/// Every workspace pod berth renders is admitted by the API server's Pod Security Admission
/// at "restricted".
#[tokio::test]
async fn workspace_pods_meet_the_restricted_pod_security_standard() {
    let Some(cp) = support::control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let ns = cp.namespace("restricted").await;
    kubectl_ok(
        &cp,
        &[
            "label",
            "namespace",
            &ns,
            "pod-security.kubernetes.io/enforce=restricted",
        ],
        None,
    );
    let repo = Repo::new("psa");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut checked = 0;
    for object in repo.rendered() {
        if object["kind"] != "StatefulSet" {
            continue;
        }
        let sts: StatefulSet = serde_json::from_value(object).unwrap();
        let name = format!("{}-0", sts.metadata.name.unwrap());
        let template = sts.spec.unwrap().template;
        let mut spec = template.spec.unwrap();
        // The claim the StatefulSet controller adds to each of its pods.
        spec.volumes.get_or_insert_with(Vec::new).push(
            serde_json::from_value(json!({"name": "data", "persistentVolumeClaim": {"claimName": format!("data-{name}")}}))
                .unwrap(),
        );
        let pod = Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                labels: template.metadata.and_then(|m| m.labels),
                ..Default::default()
            },
            spec: Some(spec),
            ..Default::default()
        };
        let params = PostParams {
            dry_run: true,
            ..Default::default()
        };
        if let Err(e) = pods.create(&params, &pod).await {
            panic!("{name} is not admitted at restricted: {e}");
        }
        checked += 1;
    }
    assert_eq!(checked, 6, "every sample workspace was checked");
}
