//! Smoke tests of the envtest control plane (tests/support): a real kube-apiserver and
//! etcd, shared by the tests of this binary, each test in its own namespace.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const MANAGER: &str = "berth";

/// A StatefulSet as berth would apply it: only the fields it owns, nothing defaulted.
fn statefulset(name: &str, replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": { "name": name, "labels": { "app.kubernetes.io/name": name } },
        "spec": {
            "serviceName": name,
            "replicas": replicas,
            "selector": { "matchLabels": { "app.kubernetes.io/name": name } },
            "template": {
                "metadata": { "labels": { "app.kubernetes.io/name": name } },
                "spec": {
                    "containers": [{
                        "name": "app",
                        "image": "registry.invalid/berth/app:1.0.0",
                    }],
                },
            },
        },
    })
}

async fn apply(api: &Api<StatefulSet>, name: &str, obj: &Value, dry_run: bool) -> StatefulSet {
    let mut params = PatchParams::apply(MANAGER);
    if dry_run {
        params = params.dry_run();
    }
    api.patch(name, &params, &Patch::Apply(obj))
        .await
        .unwrap_or_else(|e| panic!("server-side apply of StatefulSet {name}: {e}"))
}

fn to_json(sts: &StatefulSet) -> Value {
    serde_json::to_value(sts).expect("StatefulSet to JSON")
}

#[tokio::test]
async fn server_side_apply_gets_defaults_and_managed_fields() {
    let Some(cp) = support::control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let ns = cp.namespace("smoke-apply").await;
    let api: Api<StatefulSet> = Api::namespaced(client, &ns);

    let applied = apply(&api, "db", &statefulset("db", 1), false).await;
    let live = to_json(&api.get("db").await.expect("reading the StatefulSet back"));
    assert_eq!(
        live["metadata"]["resourceVersion"],
        to_json(&applied)["metadata"]["resourceVersion"]
    );

    // Fields berth never sent, defaulted by the API server.
    let spec = &live["spec"];
    assert_eq!(spec["podManagementPolicy"], "OrderedReady", "{spec:#}");
    assert_eq!(spec["revisionHistoryLimit"], 10, "{spec:#}");
    assert_eq!(spec["updateStrategy"]["type"], "RollingUpdate", "{spec:#}");
    assert_eq!(spec["updateStrategy"]["rollingUpdate"]["partition"], 0);
    assert_eq!(
        spec["persistentVolumeClaimRetentionPolicy"],
        json!({ "whenDeleted": "Retain", "whenScaled": "Retain" })
    );
    let container = &spec["template"]["spec"]["containers"][0];
    assert_eq!(
        container["imagePullPolicy"], "IfNotPresent",
        "{container:#}"
    );
    assert_eq!(container["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(live["metadata"]["generation"], 1);

    // managedFields: berth owns what it applied (operation Apply), nothing else.
    let managed = live["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields");
    let berth: Vec<&Value> = managed.iter().filter(|m| m["manager"] == MANAGER).collect();
    assert_eq!(berth.len(), 1, "{managed:#?}");
    assert_eq!(berth[0]["operation"], "Apply");
    assert_eq!(berth[0]["apiVersion"], "apps/v1");
    let owned = berth[0]["fieldsV1"]["f:spec"]
        .as_object()
        .expect("berth owns fields of spec");
    assert!(owned.contains_key("f:replicas"), "{owned:#?}");
    assert!(
        !owned.contains_key("f:podManagementPolicy"),
        "a defaulted field must not be owned by berth: {owned:#?}"
    );
}

#[tokio::test]
async fn dry_run_apply_changes_nothing() {
    let Some(cp) = support::control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let ns = cp.namespace("smoke-dry-run").await;
    let api: Api<StatefulSet> = Api::namespaced(client, &ns);

    let applied = to_json(&apply(&api, "db", &statefulset("db", 1), false).await);
    let rv = applied["metadata"]["resourceVersion"].clone();

    // The same object again, dry-run: a no-op, the resourceVersion does not move.
    let same = to_json(&apply(&api, "db", &statefulset("db", 1), true).await);
    assert_eq!(same["metadata"]["resourceVersion"], rv);
    assert_eq!(same["spec"], applied["spec"]);

    // A changed object, dry-run: the answer shows the change, the live object does not.
    let changed = to_json(&apply(&api, "db", &statefulset("db", 3), true).await);
    assert_eq!(changed["spec"]["replicas"], 3);
    assert_eq!(changed["metadata"]["generation"], 2);

    let live = to_json(&api.get("db").await.expect("reading the StatefulSet back"));
    assert_eq!(live["metadata"]["resourceVersion"], rv);
    assert_eq!(live["metadata"]["generation"], 1);
    assert_eq!(live["spec"], applied["spec"]);
    assert_eq!(
        live["metadata"]["managedFields"],
        applied["metadata"]["managedFields"]
    );
}

#[tokio::test]
async fn rbac_denies_the_unprivileged_identity() {
    let Some(cp) = support::control_plane().await else {
        return;
    };
    let admin = cp.client().await;
    let ns = cp.namespace("smoke-rbac").await;
    let nobody = cp.unprivileged_client().await;

    let sts: Api<StatefulSet> = Api::namespaced(nobody.clone(), &ns);
    let err = sts
        .list(&ListParams::default())
        .await
        .expect_err("listing StatefulSets without RBAC rights must fail");
    match &err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(status.is_forbidden(), "{status:?}");
            assert!(
                status.message.contains(support::UNPRIVILEGED_USER),
                "{status:?}"
            );
        }
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
    let err = sts
        .patch(
            "db",
            &PatchParams::apply(MANAGER),
            &Patch::Apply(statefulset("db", 1)),
        )
        .await
        .expect_err("applying without RBAC rights must fail");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err:?}"
    );

    // RBAC is real: a Role + RoleBinding granted by the admin lets the same user read.
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "read-configmaps" },
        "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"] }],
    }))
    .expect("Role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "nobody-reads-configmaps" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": support::UNPRIVILEGED_USER }],
    }))
    .expect("RoleBinding");
    let pp = PostParams::default();
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&pp, &role)
        .await
        .expect("creating the Role");
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&pp, &binding)
        .await
        .expect("creating the RoleBinding");
    let cms: Api<ConfigMap> = Api::namespaced(nobody, &ns);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match cms.list(&ListParams::default()).await {
            Ok(_) => break,
            // The RBAC authorizer learns of new bindings through a watch: give it a moment.
            Err(kube::Error::Api(s)) if s.code == 403 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("listing ConfigMaps after the RoleBinding: {e:?}"),
        }
    }
    // ... and nothing more than that.
    assert!(matches!(
        sts.list(&ListParams::default()).await,
        Err(kube::Error::Api(s)) if s.code == 403
    ));
}

/// The plain control plane runs no controller: a StatefulSet is stored, and nothing more
/// happens to it (tests/controllers.rs has the full control plane, where it rolls out).
#[tokio::test]
async fn the_plain_control_plane_runs_no_controller() {
    let Some(cp) = support::control_plane().await else {
        return;
    };
    assert_eq!(cp.kind(), support::Kind::Plain);
    let client = cp.client().await;
    let ns = cp.namespace("smoke-rollout").await;
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);

    apply(&api, "db", &statefulset("db", 2), false).await;
    // Long enough for a controller to have acted, were there one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = api.get_status("db").await.expect("reading status");
    assert!(
        after
            .status
            .as_ref()
            .and_then(|s| s.observed_generation)
            .is_none(),
        "{:?}",
        after.status
    );
    assert!(support::pods(&client, &ns).await.is_empty());
}

#[test]
fn the_kubeconfig_works_for_subprocesses() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let Some((cp, ns)) = runtime.block_on(async {
        let cp = support::control_plane().await?;
        let ns = cp.namespace("smoke-kubectl").await;
        Some((cp, ns))
    }) else {
        return;
    };
    let out = cp
        .kubectl()
        .args(["get", "namespace", &ns, "-o", "jsonpath={.metadata.name}"])
        .output()
        .expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), ns);

    let out = cp
        .kubectl()
        .arg(format!(
            "--kubeconfig={}",
            cp.unprivileged_kubeconfig_path().display()
        ))
        .args(["auth", "can-i", "create", "statefulsets.apps", "-n", &ns])
        .output()
        .expect("running kubectl auth can-i");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
}
