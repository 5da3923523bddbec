//! Least privilege, checked by the API server itself: deploy/'s RBAC gives berth's identity
//! no Secret outside the namespaces it manages, the admission policy in deploy/ refuses any
//! Role or RoleBinding berth writes that grants more than berth's own rules, every identity
//! berth creates reaches only what docs/tenancy.md's "Who can reach what" says, and
//! workspace pods meet the "restricted" Pod Security Standard. (The namespace fence itself
//! is tests/tenancy.rs.)

mod support;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
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

/// `kubectl auth can-i` as `user` (with `groups`), as the API server's authorizer answers.
fn can_i(cp: &support::ControlPlane, user: &str, groups: &[&str], args: &[&str]) -> bool {
    let mut cmd = cp.kubectl();
    cmd.args(["auth", "can-i"]).args(args).args(["--as", user]);
    for group in groups {
        cmd.args(["--as-group", group]);
    }
    let out = cmd.output().unwrap();
    match text(&out.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!("kubectl auth can-i {args:?}: {other} {}", text(&out.stderr)),
    }
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
    for file in [
        "00-namespace.yaml",
        "10-rbac.yaml",
        "15-tenancy.yaml",
        "40-admission.yaml",
    ] {
        kubectl_ok(&cp, &["apply", "-f"], Some(&deploy(file)));
    }
    let repo = Repo::new("least");
    // The administrators' rule: this test's namespaces. berth writes only in namespaces it
    // manages (tests/tenancy.rs): the probe namespace is handed to it with berth's label.
    let allowed = format!("{}-*, probe-*", repo.prefix);
    let patch = json!({"data": {"allowedNamespaces": allowed}}).to_string();
    kubectl_ok(
        &cp,
        &[
            "-n",
            "berth-system",
            "patch",
            "configmap",
            "berth-tenancy",
            "--type=merge",
            "-p",
            &patch,
        ],
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    // berth's identity in deploy/.
    let kubeconfig = support::identity::kubeconfig_as(&cp, "berth-system", "berth", dir.path());
    let berth = support::identity::client_of(&kubeconfig).await;
    let probe_ns = cp.namespace("probe").await;
    let managed = "app.kubernetes.io/managed-by=berth";
    kubectl_ok(&cp, &["label", "namespace", &probe_ns, managed], None);
    let roles: Api<Role> = Api::namespaced(berth.clone(), &probe_ns);

    // berth's own kind of rule is allowed (a workspace viewer's)…
    let viewer = role(
        json!([{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get"], "resourceNames": ["w-0"]}]),
    );
    // …once the policies are in force (the API server loads them, their bindings and
    // parameters within moments): the tenancy fence refuses a write in kube-system and lets
    // one in the probe namespace through…
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let probe: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "probe"}})).unwrap();
    support::wait_for(
        Duration::from_secs(30),
        "the tenancy policy in force",
        || async {
            let outside = Api::<ConfigMap>::namespaced(berth.clone(), "kube-system")
                .create(&dry_run, &probe)
                .await;
            let inside = Api::<ConfigMap>::namespaced(berth.clone(), &probe_ns)
                .create(&dry_run, &probe)
                .await;
            match (&outside, &inside) {
                (Err(kube::Error::Api(s)), Ok(_)) if s.message.contains("berth-tenancy") => Ok(()),
                _ => Err(format!("{outside:?} / {inside:?}")),
            }
        },
    )
    .await;
    // …and the RBAC guard refuses `*`.
    let star = role(json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]));
    let message = support::wait_for(
        Duration::from_secs(30),
        "the admission policy to refuse `*`",
        || async {
            let result = roles.create(&PostParams::default(), &star).await;
            refused(&result)
                .filter(|m| m.contains("berth-rbac-guard"))
                .ok_or_else(|| format!("{result:?}"))
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

    // berth, as itself, applies a repository: its RBAC is enough, the admission policies let
    // its own Roles through and its writes inside the tenancy rule, and it may then read
    // Secrets of the namespaces it manages. The analytics namespace exists already (with a
    // Secret in it): an administrator hands it to berth with berth's label.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &repo.analytics());
    kubectl_ok(&cp, &["create", "namespace", &repo.analytics()], None);
    kubectl_ok(
        &cp,
        &["label", "namespace", &repo.analytics(), managed],
        None,
    );
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

    // Who can reach what (docs/tenancy.md), as the API server's authorizer answers for
    // each identity berth created or bound.
    let (a, m, z) = (repo.analytics(), repo.ml(), format!("{}-z", repo.prefix));
    let berth_user = "system:serviceaccount:berth-system:berth";
    // berth: Secrets of the namespaces it manages, and no others; RBAC lets it patch a
    // StatefulSet anywhere, the admission policy does not (tests/tenancy.rs).
    assert!(can_i(&cp, berth_user, &[], &["list", "secrets", "-n", &a]));
    assert!(!can_i(
        &cp,
        berth_user,
        &[],
        &["list", "secrets", "-n", "kube-system"]
    ));
    assert!(can_i(
        &cp,
        berth_user,
        &[],
        &["patch", "statefulsets", "-n", "kube-system"]
    ));
    assert!(!can_i(
        &cp,
        berth_user,
        &[],
        &["create", "pods", "-n", &a, "--subresource=exec"]
    ));
    // Workspace pods run as their namespace's `default` account (no token mounted; see
    // the restricted test below), which holds nothing.
    let default_sa = format!("system:serviceaccount:{a}:default");
    assert!(!can_i(&cp, &default_sa, &[], &["get", "pods", "-n", &a]));
    // The activity agent of etl-dev: its own Lease, get and patch, nothing else.
    let agent = format!("system:serviceaccount:{a}:etl-dev");
    assert!(can_i(
        &cp,
        &agent,
        &[],
        &[
            "patch",
            "leases.coordination.k8s.io/etl-dev-activity",
            "-n",
            &a
        ]
    ));
    assert!(can_i(
        &cp,
        &agent,
        &[],
        &[
            "get",
            "leases.coordination.k8s.io/etl-dev-activity",
            "-n",
            &a
        ]
    ));
    assert!(!can_i(
        &cp,
        &agent,
        &[],
        &[
            "patch",
            "leases.coordination.k8s.io/etl-prod-activity",
            "-n",
            &a
        ]
    ));
    assert!(!can_i(
        &cp,
        &agent,
        &[],
        &["list", "leases.coordination.k8s.io", "-n", &a]
    ));
    assert!(!can_i(&cp, &agent, &[], &["get", "secrets", "-n", &a]));
    assert!(!can_i(&cp, &agent, &[], &["get", "pods", "-n", &a]));
    // The same account is Mage's executor in etl-dev (its Mage container has its token):
    // its own pod, read; Jobs in its namespace, created, read and deleted; nothing else.
    for (allowed, args) in [
        (true, vec!["get", "pods/etl-dev-0"]),
        (false, vec!["get", "pods/etl-prod-0"]),
        (true, vec!["create", "jobs.batch"]),
        (
            true,
            vec!["get", "jobs.batch/mage-analytics-nightly-block-1"],
        ),
        (
            true,
            vec!["delete", "jobs.batch/mage-analytics-nightly-block-1"],
        ),
        (false, vec!["list", "jobs.batch"]),
        (false, vec!["create", "pods"]),
        (
            false,
            vec!["create", "pods/etl-dev-0", "--subresource=exec"],
        ),
    ] {
        let mut args = args;
        args.extend(["-n", a.as_str()]);
        assert_eq!(
            can_i(&cp, &agent, &[], &args),
            allowed,
            "executor: {args:?}"
        );
    }
    assert!(!can_i(
        &cp,
        &agent,
        &[],
        &["create", "jobs.batch", "-n", &m]
    ));
    // Project roles: the analytics owner in analytics only; its viewers read, never exec.
    let owner = "ana@example.com";
    assert!(can_i(
        &cp,
        owner,
        &[],
        &["create", "pods", "-n", &a, "--subresource=exec"]
    ));
    assert!(can_i(
        &cp,
        owner,
        &[],
        &["patch", "statefulsets.apps", "-n", &a]
    ));
    assert!(!can_i(&cp, owner, &[], &["get", "secrets", "-n", &a]));
    assert!(!can_i(
        &cp,
        owner,
        &[],
        &["delete", "statefulsets.apps", "-n", &a]
    ));
    assert!(!can_i(&cp, owner, &[], &["get", "pods", "-n", &m]));
    assert!(!can_i(
        &cp,
        owner,
        &[],
        &["create", "rolebindings", "-n", &a]
    ));
    let viewer = ("someone@example.com", ["data-consumers"]);
    assert!(can_i(
        &cp,
        viewer.0,
        &viewer.1,
        &["get", "pods", "-n", &a, "--subresource=log"]
    ));
    assert!(!can_i(
        &cp,
        viewer.0,
        &viewer.1,
        &["create", "pods", "-n", &a, "--subresource=exec"]
    ));
    assert!(!can_i(
        &cp,
        viewer.0,
        &viewer.1,
        &["get", "configmaps", "-n", &m]
    ));
    // A workspace role: etl-prod's admin restarts etl-prod, not its neighbour.
    let oncall = "oncall@example.com";
    assert!(can_i(
        &cp,
        oncall,
        &[],
        &["patch", "statefulsets.apps/etl-prod", "-n", &a]
    ));
    assert!(!can_i(
        &cp,
        oncall,
        &[],
        &["patch", "statefulsets.apps/etl-dev", "-n", &a]
    ));
    assert!(!can_i(&cp, oncall, &[], &["get", "secrets", "-n", &a]));
    // ZenML's runners: Jobs and pods in their own namespace, nothing in the project's.
    let runner = format!("system:serviceaccount:{z}:zenml-runner");
    assert!(can_i(
        &cp,
        &runner,
        &[],
        &["create", "jobs.batch", "-n", &z]
    ));
    assert!(can_i(&cp, &runner, &[], &["create", "pods", "-n", &z]));
    assert!(can_i(
        &cp,
        &runner,
        &[],
        &["get", "pods", "-n", &z, "--subresource=log"]
    ));
    assert!(!can_i(
        &cp,
        &runner,
        &[],
        &["create", "pods", "-n", &z, "--subresource=exec"]
    ));
    assert!(!can_i(
        &cp,
        &runner,
        &[],
        &["create", "jobs.batch", "-n", &m]
    ));
    assert!(!can_i(&cp, &runner, &[], &["get", "secrets", "-n", &z]));
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
    let rendered = repo.rendered();
    // Workspaces that run Mage k8s blocks: their Mage container talks to the API server.
    let executors: Vec<String> = rendered
        .iter()
        .filter(|o| o["kind"] == "Role")
        .filter_map(|o| {
            o["metadata"]["name"]
                .as_str()?
                .strip_suffix("-mage-executor")
        })
        .map(str::to_string)
        .collect();
    for object in rendered {
        if object["kind"] != "StatefulSet" {
            continue;
        }
        let sts: StatefulSet = serde_json::from_value(object).unwrap();
        let name = format!("{}-0", sts.metadata.name.unwrap());
        let template = sts.spec.unwrap().template;
        let mut spec = template.spec.unwrap();
        // No Kubernetes token mounted automatically: none of these name a service account
        // of their own. The activity agent mounts the token of its account, and so does
        // the Mage container of a workspace that runs k8s blocks (Mage's executor).
        assert_eq!(spec.automount_service_account_token, Some(false), "{name}");
        let workspace = name.trim_end_matches("-0");
        for container in &spec.containers {
            let token = container
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.mount_path == "/var/run/secrets/kubernetes.io/serviceaccount");
            let expected = container.name == "activity-agent"
                || (container.name == "workspace" && executors.iter().any(|e| e == workspace));
            assert_eq!(token, expected, "{name}/{}", container.name);
        }
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
