//! End-to-end checks that only a cluster with real controllers makes possible: the full
//! control plane of tests/support (kube-apiserver, etcd, kube-controller-manager,
//! kube-scheduler, two kwok nodes and the test ground's volume provisioner).
//!
//! Pod replacement on restarts and `apply --wait` are in tests/live.rs, the reconciler's
//! restarts, leader changes and idle suspension in tests/watch.rs.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, ServiceAccount,
};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::repo::{Repo, changes};

/// Generous deadlines: the controllers take about a second on an idle machine.
const DEADLINE: Duration = Duration::from_secs(120);

/// The test ground itself: the nodes are Ready with the labels sample-repo selects on, a
/// StatefulSet gets a Running pod whose claim binds, a bound claim can grow, and deleting
/// the StatefulSet garbage-collects its pod.
#[tokio::test]
async fn the_full_control_plane_schedules_runs_binds_and_grows() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    assert_eq!(cp.kind(), support::Kind::Full);
    let client = cp.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let nodes = nodes.list(&ListParams::default()).await.unwrap().items;
    let names: Vec<&str> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    assert_eq!(names, support::NODES);
    for node in &nodes {
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        assert!(ready, "{:?}", node.status);
    }

    let ns = cp.namespace("ground").await;
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let object = json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {
            "serviceName": "db",
            "replicas": 1,
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {
                    "nodeSelector": {"accelerator": "nvidia-tesla-t4"},
                    "containers": [{
                        "name": "db",
                        "image": "registry.invalid/db:1",
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    }],
                },
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }],
        },
    });
    sts.patch("db", &PatchParams::apply("test"), &Patch::Apply(&object))
        .await
        .unwrap();
    let pods = support::wait_rolled_out(&client, &ns, DEADLINE).await;
    let pod = &pods["db-0"];
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some("kwok-node-1"),
        "the scheduler honours node selectors"
    );
    let first = support::uid(pod);
    // The claim got the default StorageClass and a volume of the test ground's provisioner.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let claim = claims.get("data-db-0").await.unwrap();
    let spec = claim.spec.clone().unwrap();
    assert_eq!(spec.storage_class_name.as_deref(), Some("standard"));
    let volume_name = spec.volume_name.clone().unwrap();
    assert_eq!(
        volume_name,
        format!("pvc-{}", claim.metadata.uid.clone().unwrap())
    );
    assert_eq!(claim.status.unwrap().phase.as_deref(), Some("Bound"));

    // Growing a bound claim is accepted (allowVolumeExpansion) and done by the external
    // resizer's part of the provisioner, after the expand controller handed it over.
    claims
        .patch(
            "data-db-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "3Gi"}}}})),
        )
        .await
        .unwrap();
    support::wait_for(DEADLINE, "the claim to grow to 3Gi", || async {
        let claim = claims.get("data-db-0").await.map_err(|e| e.to_string())?;
        let capacity = claim
            .status
            .and_then(|s| s.capacity)
            .and_then(|c| c.get("storage").cloned());
        match capacity {
            Some(q) if q.0 == "3Gi" => Ok(()),
            other => Err(format!("capacity {other:?}")),
        }
    })
    .await;
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let volume = volumes.get(&volume_name).await.unwrap();
    assert_eq!(volume.spec.unwrap().capacity.unwrap()["storage"].0, "3Gi");
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let expanding = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .any(|e| e.reason.as_deref() == Some("ExternalExpanding"));
    assert!(expanding, "the expand controller hands the claim over");
    // A claim never shrinks: the API server refuses.
    let err = claims
        .patch(
            "data-db-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}})),
        )
        .await
        .expect_err("shrinking a claim");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422),
        "{err:?}"
    );
    // The resize replaced no pod.
    assert_eq!(
        support::uid(&support::pods(&client, &ns).await["db-0"]),
        first
    );

    // Owner references cascade: the garbage collector deletes the orphaned pod.
    sts.delete("db", &Default::default()).await.unwrap();
    support::wait_for(DEADLINE, "db-0 to be garbage-collected", || async {
        let pods = support::pods(&client, &ns).await;
        if pods.is_empty() {
            Ok(())
        } else {
            Err(format!("{:?}", pods.keys().collect::<Vec<_>>()))
        }
    })
    .await;
}

/// Deleting a Namespace (as a prune of a project does) really cascades: the namespace
/// controller removes berth's objects, the pods and claims the StatefulSet controller made,
/// the volumes of those claims, and what someone else put there; then the namespace is
/// gone. Nothing of the other project is touched, and the next apply brings it all back.
#[tokio::test]
async fn a_deleted_namespace_really_goes_with_everything_in_it() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let repo = Repo::new("cascade");
    let client = cp.client().await;
    repo.apply(&cp, &[]);
    let analytics = support::wait_rolled_out(&client, &repo.analytics(), DEADLINE).await;
    let ml_pods = support::wait_rolled_out(&client, &repo.ml(), DEADLINE).await;
    assert_eq!(ml_pods.len(), 2, "{:?}", ml_pods.keys());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &repo.ml());
    let volumes: BTreeSet<String> = claims
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.spec.and_then(|s| s.volume_name))
        .collect();
    assert_eq!(volumes.len(), 2);
    // Someone else's object in the namespace berth manages.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &repo.ml());
    let foreign: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "not-berths"}, "data": {"a": "b"}}))
            .unwrap();
    cms.create(&PostParams::default(), &foreign).await.unwrap();

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(&repo.ml(), &Default::default())
        .await
        .unwrap();
    support::wait_for(
        DEADLINE,
        &format!("namespace {} to be gone", repo.ml()),
        || async {
            match namespaces
                .get_opt(&repo.ml())
                .await
                .map_err(|e| e.to_string())?
            {
                None => Ok(()),
                Some(n) => Err(format!("{:?}", n.status)),
            }
        },
    )
    .await;
    assert!(support::pods(&client, &repo.ml()).await.is_empty());
    for (what, count) in [
        (
            "ConfigMaps",
            cms.list(&ListParams::default()).await.unwrap().items.len(),
        ),
        (
            "claims",
            claims
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len(),
        ),
    ] {
        assert_eq!(count, 0, "{what} left in the deleted namespace");
    }
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    support::wait_for(
        DEADLINE,
        "the volumes of its claims to be deleted",
        || async {
            let mut left = Vec::new();
            for name in &volumes {
                if pvs
                    .get_opt(name)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some()
                {
                    left.push(name.clone());
                }
            }
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    )
    .await;
    // analytics kept its pods.
    let now = support::wait_rolled_out(&client, &repo.analytics(), DEADLINE).await;
    for (name, pod) in &analytics {
        assert_eq!(support::uid(&now[name]), support::uid(pod), "{name}");
    }

    // berth sees what is missing, and the next apply brings the workspaces back, with new
    // claims of their own.
    let (code, plan) = repo.plan_json(&cp);
    assert_eq!(code, 2);
    let planned = changes(&plan);
    for object in [
        format!("create Namespace/{}", repo.ml()),
        "create StatefulSet/serving-prod".to_string(),
        "create StatefulSet/training-dev".to_string(),
    ] {
        assert!(planned.contains(&object), "{object} not in {planned:?}");
    }
    assert!(
        planned.iter().all(|c| c.starts_with("create ")),
        "{planned:?}"
    );
    repo.apply(&cp, &[]);
    let back = support::wait_rolled_out(&client, &repo.ml(), DEADLINE).await;
    assert_eq!(
        back.keys().collect::<Vec<_>>(),
        ml_pods.keys().collect::<Vec<_>>()
    );
    for claim in claims.list(&ListParams::default()).await.unwrap().items {
        let volume = claim.spec.and_then(|s| s.volume_name).unwrap_or_default();
        assert!(!volume.is_empty() && !volumes.contains(&volume), "{volume}");
    }
    let (code, plan) = repo.plan_json(&cp);
    assert_eq!(code, 0, "{plan:#}");
}

/// Mage's own executor code (mage-ai, the oracle in live mode) runs a k8s block of
/// sample-repo from a workspace berth applied, as Mage Pro would: with the workspace's
/// environment, its executor defaults file and K8S_CONFIG_FILE template as files, reading
/// its own pod and authenticated as the workspace's service account. The Job lands in the
/// namespace berth predicted, carries the enforced policy's service account, runs to
/// completion on a kwok node, and `berth explain` names the same values.
#[tokio::test]
async fn mages_own_executor_runs_a_block_where_berth_predicted() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let Some(oracle) = support::mage::oracle() else {
        return;
    };
    let repo = Repo::new("executor");
    let client = cp.client().await;
    repo.apply(&cp, &[]);
    let ns = repo.analytics();
    // The executor's service account (policies/executor.yaml) is the platform's to
    // provide: created here as the cluster's admin would.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "mage-executor"}})).unwrap();
    sas.create(&PostParams::default(), &sa).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    support::wait_for(DEADLINE, "etl-dev-0 to run", || async {
        let pod = pods.get("etl-dev-0").await.map_err(|e| e.to_string())?;
        support::is_ready(&pod)
            .then_some(())
            .ok_or("not ready".to_string())
    })
    .await;

    // berth's prediction for the block in workspace etl-dev.
    let desired = berth::validated(berth::source::read_dir(repo.path()).unwrap());
    assert!(!desired.has_errors(), "{:?}", desired.diagnostics);
    let resolved = &desired.resolved;
    let ws = resolved
        .workspaces
        .iter()
        .find(|w| w.name == "etl-dev")
        .unwrap();
    let block = resolved
        .executors
        .iter()
        .find(|b| b.pipeline == "etl_daily" && b.block == "load_orders")
        .unwrap();
    let run = block
        .runs
        .iter()
        .find(|r| r.workspace == "etl-dev")
        .unwrap();
    let pod = berth::render::server_pod(ws);
    let predicted = berth::render::executor::job(block, run, ws, &pod).unwrap();
    assert_eq!(predicted["metadata"]["namespace"], ns.as_str());

    // Mage's side: the workspace's environment, its files where the pod has them.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = support::identity::kubeconfig_as(&cp, &ns, "etl-dev", dir.path());
    let mut env = serde_json::Map::new();
    for var in &ws.env {
        if let berth::resolve::VarValue::Literal(value) = &var.value {
            env.insert(var.name.clone(), json!(value));
        }
    }
    let template = dir.path().join("k8s_job_template.yaml");
    let template_text =
        std::fs::read_to_string(repo.path().join("mage/analytics/k8s_job_template.yaml")).unwrap();
    env.insert(
        "K8S_CONFIG_FILE".into(),
        json!(template.display().to_string()),
    );
    env.insert("HOSTNAME".into(), json!("etl-dev-0"));
    env.insert("KUBECONFIG".into(), json!(kubeconfig.display().to_string()));
    let policy = resolved
        .executor_policies
        .iter()
        .find(|p| p.project == "analytics")
        .unwrap();
    let command: Vec<String> = berth::render::executor::command(ws, block)
        .into_iter()
        .map(|a| {
            a.replace("{block_run_id}", "41")
                .replace("{pipeline_run_id}", "7")
        })
        .collect();
    let read = |path: &str| std::fs::read_to_string(repo.path().join(path)).unwrap();
    let answer = oracle.lock().unwrap_or_else(|e| e.into_inner()).ask(&json!({
        "id": "live",
        "mode": "live",
        "env": env,
        "files": {template.display().to_string(): template_text},
        "project_metadata_yaml": read("mage/analytics/metadata.yaml"),
        "pipeline_metadata_yaml": read("mage/analytics/pipelines/etl_daily/metadata.yaml"),
        "pipeline_uuid": "etl_daily",
        "block_uuid": "load_orders",
        "policy": {"enabled": true, "enforce": policy.defaults.enforce, "config": policy.defaults.config},
        "trigger_name": "nightly",
        "block_run_id": 41,
        "command": command,
        "timeout_seconds": 100,
    }));
    assert_eq!(answer["succeeded"], true, "{answer:#}");
    assert_eq!(answer["namespace"], ns.as_str(), "where berth predicted");
    let job = &answer["job"];
    assert_eq!(job["metadata"]["name"], "mage-analytics-nightly-block-41");
    let spec = &job["spec"]["template"]["spec"];
    assert_eq!(
        spec["serviceAccountName"], "mage-executor",
        "the enforced policy's"
    );
    assert_eq!(
        spec["serviceAccountName"],
        predicted["spec"]["template"]["spec"]["serviceAccountName"]
    );
    assert_eq!(
        spec["nodeSelector"],
        predicted["spec"]["template"]["spec"]["nodeSelector"]
    );
    // Mage deleted its Job when it completed; its pod ran on a node its selector allows.
    let nodes: Api<Node> = Api::all(client.clone());
    let ran: Vec<Pod> = pods
        .list(&ListParams::default().labels("job-name=mage-analytics-nightly-block-41"))
        .await
        .unwrap()
        .items;
    for pod in &ran {
        let spec = pod.spec.as_ref().unwrap();
        let node = nodes.get(spec.node_name.as_deref().unwrap()).await.unwrap();
        let labels: BTreeMap<String, String> = node.metadata.labels.unwrap_or_default();
        for (key, value) in spec.node_selector.iter().flatten() {
            assert_eq!(labels.get(key), Some(value));
        }
    }
    let text = berth::explain::explain(resolved, "analytics/etl_daily/load_orders").unwrap();
    assert!(text.contains(&format!("in namespace {ns}")), "{text}");
    assert!(text.contains("service account  mage-executor"), "{text}");
}
