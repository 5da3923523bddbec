//! Idle termination driven by real activity, on the full test control plane: berth's own
//! activity agent (the sidecar berth renders, run here as a process with the workspace's
//! service-account token, because kwok runs no containers) reports a workspace in use, the
//! reconciler suspends only the workspace whose agent reports none, and never one whose
//! agent does not report at all.

mod support;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repository(ns: &str) -> String {
    let workspace = |name: &str| {
        format!(
            "---
apiVersion: berth/v1alpha1
kind: Workspace
metadata: {{name: {name}}}
spec:
  project: p
  environment: dev
  lifecycle:
    termination: {{idleSeconds: 60}}
"
        )
    };
    format!(
        "apiVersion: berth/v1alpha1
kind: Project
metadata: {{name: p}}
spec: {{namespace: {ns}, image: mageai/mageai:0.9.76}}
{}{}{}",
        workspace("busy"),
        workspace("quiet"),
        workspace("unwatched")
    )
}

/// Kills the process when dropped, so a failed test leaves nothing behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `berth activity-agent` for a workspace, as its pod would run it, sampling every 2 s.
fn agent(kubeconfig: &Path, ns: &str, workspace: &str, port: u16, log: &Path) -> Running {
    let child = Command::new(assert_cmd::cargo::cargo_bin("berth"))
        .args([
            "activity-agent",
            "--lease",
            &format!("{workspace}-activity"),
        ])
        .args([
            "--namespace",
            ns,
            "--port",
            &port.to_string(),
            "--interval",
            "2",
        ])
        // Only sessions count here: the test machine's processes are not the pod's.
        .args(["--busy-cpu", "100000"])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Running(child)
}

async fn replicas(api: &Api<StatefulSet>, name: &str) -> Option<i32> {
    api.get(name).await.ok()?.spec?.replicas
}

#[tokio::test]
async fn only_the_workspace_without_activity_is_suspended_and_wake_brings_it_back() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let prefix = support::unique_name("idle");
    let ns = format!("{prefix}-ws");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("repo.yaml"), repository(&ns)).unwrap();

    let berth = |args: &[&str]| {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("berth"));
        cmd.args(args)
            .arg("--kubeconfig")
            .arg(cp.kubeconfig_path())
            .args(["--applyset", "berth-idle", "--applyset-namespace"])
            .arg(format!("{prefix}-berth"));
        cmd
    };
    let watch_log = dir.path().join("watch.log");
    let _watch = Running(
        berth(&["watch", repo.to_str().unwrap(), "--interval", "1s"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&watch_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let pods = support::wait_for(
        Duration::from_secs(90),
        "the three workspaces to run",
        || async {
            let pods = support::pods(&client, &ns).await;
            let ready = ["busy-0", "quiet-0", "unwatched-0"]
                .iter()
                .all(|p| pods.get(*p).is_some_and(support::is_ready));
            if ready {
                Ok(pods)
            } else {
                Err(format!("{:?}", pods.keys().collect::<Vec<_>>()))
            }
        },
    )
    .await;
    let (busy_pod, unwatched_pod) = (
        support::uid(&pods["busy-0"]),
        support::uid(&pods["unwatched-0"]),
    );

    // A UI session on busy's port: a connection that stays open. quiet's port has none.
    let busy_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let session = std::net::TcpStream::connect(busy_port.local_addr().unwrap()).unwrap();
    let (accepted, _) = busy_port.accept().unwrap();
    let quiet_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();

    // Each agent runs with its workspace's own service account, which may renew its own
    // activity Lease and nothing else.
    let busy_config = support::identity::kubeconfig_as(&cp, &ns, "busy", dir.path());
    let quiet_config = support::identity::kubeconfig_as(&cp, &ns, "quiet", dir.path());
    let as_busy = support::identity::client_of(&busy_config).await;
    let forbidden = Api::<Lease>::namespaced(as_busy, &ns)
        .patch(
            "unwatched-activity",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"renewTime": "2030-01-01T00:00:00.000000Z"}})),
        )
        .await;
    assert!(
        matches!(&forbidden, Err(kube::Error::Api(s)) if s.code == 403),
        "an agent may touch its own Lease only: {forbidden:?}"
    );
    let _busy_agent = agent(
        &busy_config,
        &ns,
        "busy",
        busy_port.local_addr().unwrap().port(),
        &dir.path().join("busy.log"),
    );
    let _quiet_agent = agent(
        &quiet_config,
        &ns,
        "quiet",
        quiet_port.local_addr().unwrap().port(),
        &dir.path().join("quiet.log"),
    );

    // quiet goes idle 60 s after its agent's start (which counts as activity); its pod
    // really goes away.
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    support::wait_for(
        Duration::from_secs(150),
        "quiet's pod to go away",
        || async {
            let pods = support::pods(&client, &ns).await;
            match (replicas(&sts, "quiet").await, pods.contains_key("quiet-0")) {
                (Some(0), false) => Ok(()),
                other => Err(format!(
                    "{other:?} after {:?}; watch log: {}",
                    started.elapsed(),
                    std::fs::read_to_string(&watch_log)
                        .unwrap_or_default()
                        .lines()
                        .rev()
                        .take(3)
                        .collect::<Vec<_>>()
                        .join(" | ")
                )),
            }
        },
    )
    .await;
    eprintln!(
        "measured: quiet suspended {:?} after its agent started (idleSeconds 60)",
        started.elapsed()
    );
    // busy (in use) and unwatched (no agent: no working signal) are untouched: same pods.
    let pods = support::pods(&client, &ns).await;
    assert_eq!(
        pods.get("busy-0").map(support::uid),
        Some(busy_pod),
        "busy was never stopped"
    );
    assert_eq!(
        pods.get("unwatched-0").map(support::uid),
        Some(unwatched_pod),
        "a workspace without a working activity signal is never suspended"
    );
    assert_eq!(replicas(&sts, "busy").await, Some(1));
    assert_eq!(replicas(&sts, "unwatched").await, Some(1));

    // `berth wake` brings quiet back at once, and the reconciler keeps it up.
    let out = berth(&["wake", "quiet", repo.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("woken"));
    support::wait_for(
        Duration::from_secs(60),
        "quiet's pod to come back",
        || async {
            let pods = support::pods(&client, &ns).await;
            if pods.get("quiet-0").is_some_and(support::is_ready) {
                Ok(())
            } else {
                Err(format!("{:?}", replicas(&sts, "quiet").await))
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        replicas(&sts, "quiet").await,
        Some(1),
        "the reconciler agrees it is awake"
    );
    drop((session, accepted));
}

/// The race between `berth wake` and a reconciler cycle that planned a suspension just
/// before it: the stale suspension is refused by the API server (it was planned against an
/// older resourceVersion), so wake's scale-up stands. Wake itself only writes `replicas`.
#[tokio::test]
async fn a_suspension_planned_before_a_wake_cannot_undo_it() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let prefix = support::unique_name("race");
    let ns = format!("{prefix}-ws");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("repo.yaml"), repository(&ns)).unwrap();
    let desired = berth::validated(berth::source::read_dir(dir.path()).unwrap());
    assert!(!desired.has_errors());
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(cp.kubeconfig_path()).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let cluster = berth::cluster::Cluster::from_config(config).unwrap();
    let set = berth::cluster::applyset::ApplySet {
        name: "berth-race".into(),
        namespace: format!("{prefix}-berth"),
    };
    let options = berth::cluster::PlanOptions {
        applyset: set.clone(),
    };
    let apply_options = berth::cluster::ApplyOptions {
        applyset: set.clone(),
        force_conflicts: true,
        prune: true,
        allow_mass_prune: false,
        allow_replace: false,
        progress_bar: false,
        quiet: true,
        stop: Default::default(),
    };
    let running = berth::cluster::plan_with_context(
        &cluster,
        &desired.resolved,
        &options,
        Default::default(),
    )
    .await
    .unwrap();
    let report = berth::cluster::apply(&cluster, &running, &apply_options)
        .await
        .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    // A cycle plans quiet's suspension…
    let idle = berth::render::RenderContext {
        idle: [(format!("{ns}/quiet"), "2025-01-01T00:00:00Z".to_string())].into(),
        ..Default::default()
    };
    let suspend = berth::cluster::plan_with_context(&cluster, &desired.resolved, &options, idle)
        .await
        .unwrap();
    assert!(
        suspend
            .plan
            .changes
            .iter()
            .any(|c| c.object.name == "quiet" && c.object.kind == "StatefulSet")
    );
    // …then `berth wake` runs (it renews the Lease and scales up)…
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    sts.patch_scale(
        "quiet",
        &PatchParams {
            field_manager: Some("berth-wake".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    // …and only then the cycle applies: its suspension is refused, nothing else is lost.
    let report = berth::cluster::apply(&cluster, &suspend, &apply_options)
        .await
        .unwrap();
    let failed: Vec<&String> = report.failed.iter().map(|(o, _)| o).collect();
    assert_eq!(
        failed,
        [&format!("StatefulSet/{ns}/quiet")],
        "{:?}",
        report.failed
    );
    assert!(
        report.failed[0].1.contains("Conflict"),
        "{:?}",
        report.failed
    );
    assert_eq!(replicas(&sts, "quiet").await, Some(1), "the wake stands");
}
