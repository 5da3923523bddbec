//! Rollouts against real controllers: kube-controller-manager replaces the pods of each
//! StatefulSet berth updates, kwok makes them Ready (or, for the never-ready image of
//! tests/support, never), and a sampler reads the pods every 100 ms while berth rolls a
//! change through a fleet.

mod support;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::Value;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::generated::{GeneratedRepo, http_get};
use support::repo::text;

const WORKSPACES: usize = 200;
/// `berth-bench gen` puts 50 workspaces in each project; the default budget is 10%.
const BUDGET: usize = 5;

/// A `berth watch` process, killed (SIGKILL) when dropped.
struct Watch {
    child: Child,
    addr: String,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Watch {
    /// One of an elected pair: a short lease, so that a standby takes over soon after the
    /// leader dies.
    fn spawn(repo: &GeneratedRepo, identity: &str, kubeconfig: &std::path::Path) -> Watch {
        let watch = repo.watch_command(identity, "berth-rollout", kubeconfig);
        let mut command = watch.command;
        let child = command
            .args(["--drift-interval", "1h", "--lease-duration", "4s"])
            .args(["--identity", identity])
            .spawn()
            .expect("starting berth watch");
        Watch {
            child,
            addr: watch.addr,
        }
    }

    async fn leads(&self) -> bool {
        http_get(&self.addr, "/metrics")
            .await
            .1
            .lines()
            .any(|l| l == "berth_leader 1")
    }
}

/// Every workspace pod of the repository: `namespace/workspace` → (uid, Ready).
async fn pods(client: &kube::Client, prefix: &str) -> BTreeMap<String, Vec<(String, bool)>> {
    let api: Api<Pod> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default().labels("berth/workspace"))
        .await
        .expect("listing pods");
    let mut out: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
    for pod in list.items {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        if !namespace.starts_with(prefix) {
            continue;
        }
        let workspace = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("berth/workspace"))
            .cloned()
            .unwrap_or_default();
        let ready = support::is_ready(&pod) && pod.metadata.deletion_timestamp.is_none();
        out.entry(format!("{namespace}/{workspace}"))
            .or_default()
            .push((support::uid(&pod), ready));
    }
    out
}

/// Reads the pods every 100 ms until stopped: every pod uid seen per workspace, and the
/// most workspaces of a namespace seen without a Ready pod at once.
struct Sampler {
    seen: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>,
    worst: Arc<Mutex<BTreeMap<String, usize>>>,
    running: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

type Seen = BTreeMap<String, BTreeSet<String>>;

impl Sampler {
    /// `workspaces`: how many running workspaces each namespace has.
    fn start(client: &kube::Client, prefix: &str, workspaces: BTreeMap<String, usize>) -> Sampler {
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let worst: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let running = Arc::new(AtomicBool::new(true));
        let task = {
            let (client, prefix) = (client.clone(), prefix.to_string());
            let (seen, worst, running) = (seen.clone(), worst.clone(), running.clone());
            tokio::spawn(async move {
                while running.load(Ordering::Relaxed) {
                    let pods = pods(&client, &prefix).await;
                    let mut ready: BTreeMap<String, usize> = BTreeMap::new();
                    for (key, list) in &pods {
                        if list.iter().any(|p| p.1) {
                            *ready.entry(namespace_of(key)).or_default() += 1;
                        }
                        seen.lock()
                            .unwrap()
                            .entry(key.clone())
                            .or_default()
                            .extend(list.iter().map(|p| p.0.clone()));
                    }
                    {
                        let mut worst = worst.lock().unwrap();
                        for (namespace, total) in &workspaces {
                            let up = ready.get(namespace).copied().unwrap_or(0);
                            let w = worst.entry(namespace.clone()).or_default();
                            *w = (*w).max(total.saturating_sub(up));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        Sampler {
            seen,
            worst,
            running,
            task,
        }
    }

    /// Stop; what was seen, and the worst unavailability per namespace.
    async fn stop(self) -> (Seen, BTreeMap<String, usize>) {
        self.running.store(false, Ordering::Relaxed);
        self.task.await.unwrap();
        let seen = self.seen.lock().unwrap().clone();
        let worst = self.worst.lock().unwrap().clone();
        (seen, worst)
    }
}

/// Whether every StatefulSet of the repository says it is rolled out and Ready. The gate
/// reads health from there, and a status that lags its pods would make a workspace look
/// down (and so free to restart) when it is not: the sampler's count starts from here.
async fn rolled_out(client: &kube::Client, prefix: &str, workspaces: usize) -> bool {
    let api: Api<StatefulSet> = Api::all(client.clone());
    let Ok(list) = api
        .list(&ListParams::default().labels("berth/workspace"))
        .await
    else {
        return false;
    };
    let ours: Vec<&StatefulSet> = list
        .items
        .iter()
        .filter(|s| {
            s.metadata
                .namespace
                .as_deref()
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    ours.len() == workspaces && ours.into_iter().all(berth::cluster::rolled_out)
}

/// The workspaces (`namespace/name`) whose pod template changes from `base` to `head`,
/// by berth's own plan between the two revisions, and that plan's rollout lines.
fn rolling(repo: &GeneratedRepo, base: &str, head: &str) -> (BTreeSet<String>, Vec<Value>) {
    let out = Command::new(assert_cmd::cargo::cargo_bin("berth"))
        .args(["diff", "--base", base, "--head", head, "--format", "json"])
        .arg(repo.work())
        .output()
        .expect("running berth diff");
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "diff JSON ({e}): {}{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    let changes = plan["changes"].as_array().cloned().unwrap_or_default();
    let set = changes
        .iter()
        .filter(|c| c["object"]["kind"] == "StatefulSet" && c["action"] == "update")
        .filter(|c| {
            c["fields"].as_array().is_some_and(|f| {
                f.iter()
                    .any(|f| f.as_str().is_some_and(|f| f.starts_with("spec.template")))
            })
        })
        .map(|c| {
            format!(
                "{}/{}",
                c["object"]["namespace"].as_str().unwrap_or(""),
                c["object"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    (
        set,
        plan["rollouts"].as_array().cloned().unwrap_or_default(),
    )
}

/// 200 workspaces in four projects share a variable that changes. While berth rolls the
/// change, a sampler reads the pods every 100 ms: no project ever has more than its budget
/// unavailable. Two reconcilers are elected by a Lease; the leader is killed (SIGKILL)
/// mid-rollout and the standby takes over with nothing but what the cluster shows. In
/// the end every workspace whose template changed ran exactly two pods (before, after),
/// the others one.
#[tokio::test]
async fn a_shared_change_rolls_in_batches_within_budget_across_a_leader_kill() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let repo = GeneratedRepo::new("rollout", WORKSPACES);
    let prefix = repo.prefix.clone();
    let c1 = repo.commit("r1");
    let mut pair = vec![
        Watch::spawn(&repo, "w1", cp.kubeconfig_path()),
        Watch::spawn(&repo, "w2", cp.kubeconfig_path()),
    ];
    // Some generated workspaces are suspended in git: they run no pod.
    let running = WORKSPACES - suspended_in_git(&repo);
    support::eventually(
        Duration::from_secs(300),
        "every workspace Ready",
        || async {
            let pods = pods(&client, &prefix).await;
            pods.len() == running
                && pods.values().all(|p| p.len() == 1 && p[0].1)
                && rolled_out(&client, &prefix, WORKSPACES).await
        },
    )
    .await;
    let before = pods(&client, &prefix).await;
    let mut per_namespace: BTreeMap<String, usize> = BTreeMap::new();
    for key in before.keys() {
        *per_namespace.entry(namespace_of(key)).or_default() += 1;
    }

    // Sampling starts before the commit: the reconciler may restart the first batch
    // while the plan below is still being made.
    let sampler = Sampler::start(&client, &prefix, per_namespace);
    let c2 = repo.commit("r2");
    let (expected, rollouts) = rolling(&repo, &c1, &c2);
    assert!(expected.len() >= 100, "{} workspaces roll", expected.len());
    assert!(
        rollouts.iter().all(|r| r["atOnce"] == BUDGET as u64),
        "{rollouts:?}"
    );

    // Mid-rollout (a fifth of it restarted), the reconciler dies without a word.
    support::eventually(
        Duration::from_secs(300),
        "a fifth of the rollout",
        || async {
            let pods = pods(&client, &prefix).await;
            let restarted = pods
                .iter()
                .filter(|(k, p)| {
                    p.iter()
                        .any(|p| before.get(*k).is_none_or(|b| b[0].0 != p.0))
                })
                .count();
            restarted >= expected.len() / 5
        },
    )
    .await;
    let leader = Mutex::new(0);
    support::eventually(Duration::from_secs(60), "a leader", || async {
        for (i, watch) in pair.iter().enumerate() {
            if watch.leads().await {
                *leader.lock().unwrap() = i;
                return true;
            }
        }
        false
    })
    .await;
    drop(pair.remove(leader.into_inner().unwrap()));
    support::eventually(
        Duration::from_secs(60),
        "the standby to take over",
        || async { pair[0].leads().await },
    )
    .await;

    support::eventually(
        Duration::from_secs(600),
        "the rollout to finish",
        || async {
            let pods = pods(&client, &prefix).await;
            pods.len() == running
                && pods.iter().all(|(k, p)| {
                    let restarted = before.get(k).is_none_or(|b| b[0].0 != p[0].0);
                    p.len() == 1 && p[0].1 && restarted == expected.contains(k)
                })
        },
    )
    .await;
    let (seen, worst) = sampler.stop().await;
    assert!(
        worst.values().all(|w| *w <= BUDGET),
        "more than {BUDGET} unavailable at once: {worst:?}"
    );
    assert!(
        worst.values().any(|w| *w > 0),
        "the sampler saw no restart: {worst:?}"
    );
    for (key, uids) in &seen {
        let want = if expected.contains(key) { 2 } else { 1 };
        assert_eq!(uids.len(), want, "{key}: pods {uids:?}");
    }
}

/// A change to an image whose pods never become Ready: the first batch restarts, its
/// workspaces miss their progress deadline, and the rollout halts there. The rest keep
/// their running pods; `berth rollout status` names where and why; a commit that reverts
/// the image resumes it, and the stuck batch is restarted again.
#[tokio::test]
async fn a_broken_image_halts_the_rollout_after_its_first_batch() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let repo = support::repo::Repo::new("halt");
    let project = repo.path().join("projects/analytics.yaml");
    let yaml = std::fs::read_to_string(&project).unwrap();
    let yaml = yaml.replacen(
        "spec:\n",
        "spec:\n  rollout: {maxUnavailable: 1, progressDeadlineSeconds: 3, minRestartIntervalSeconds: 0}\n",
        1,
    );
    std::fs::write(&project, &yaml).unwrap();
    repo.apply(&cp, &["--wait", "--timeout", "180"]);
    let ns = repo.analytics();
    let before = pods(&client, &ns).await;
    assert!(before.len() >= 2, "{before:?}");
    let image = |v: &str| format!("  image: {v}\n");
    let old_image = yaml
        .lines()
        .find_map(|l| l.strip_prefix("  image: "))
        .expect("the project sets an image")
        .to_string();
    std::fs::write(
        &project,
        yaml.replacen(&image(&old_image), &image(support::NEVER_READY_IMAGE), 1),
    )
    .unwrap();

    // Paused, the project starts no restart; resumed, it does.
    let out = repo.berth(&cp, "rollout", &["pause", "analytics"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = repo.berth(&cp, "apply", &[]);
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(said.contains("paused (`berth rollout resume`)"), "{said}");
    let paused = pods(&client, &ns).await;
    assert!(
        before
            .iter()
            .all(|(k, b)| paused.get(k).is_some_and(|p| p[0].0 == b[0].0)),
        "a paused rollout restarted nothing: {paused:?}"
    );
    let out = repo.berth(&cp, "rollout", &["resume", "analytics"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // One batch of one, never Ready: apply --wait gives up on it.
    let out = repo.berth(&cp, "apply", &["--wait", "--timeout", "15"]);
    let said = text(&out.stdout) + &text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("at most 1 at a time"), "{said}");
    // Past the deadline, nothing more starts, and the halt is named. The halt holds back
    // only its project's restarts: a new workspace elsewhere is created by the same apply.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let training = std::fs::read_to_string(repo.path().join("workspaces/ml/training-dev.yaml"))
        .unwrap()
        .replace("name: training-dev", "name: training-extra");
    std::fs::write(
        repo.path().join("workspaces/ml/training-extra.yaml"),
        training,
    )
    .unwrap();
    let out = repo.berth(&cp, "apply", &[]);
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(said.contains("HALTED at"), "{said}");
    let ml: Api<StatefulSet> = Api::namespaced(client.clone(), &repo.ml());
    assert!(
        ml.get_opt("training-extra").await.unwrap().is_some(),
        "a halted rollout blocked another project's new workspace: {said}"
    );
    let out = repo.berth(&cp, "rollout", &["status"]);
    let status = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{status}{}", text(&out.stderr));
    assert!(
        status.contains("HALTED at") && status.contains("progressDeadlineSeconds 3"),
        "{status}"
    );
    let after = pods(&client, &ns).await;
    let replaced: Vec<&String> = after
        .iter()
        .filter(|(k, p)| before.get(*k).is_none_or(|b| b[0].0 != p[0].0))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        replaced.len(),
        1,
        "only the first batch restarted: {replaced:?}"
    );
    assert!(
        after
            .iter()
            .filter(|(k, _)| !replaced.contains(k))
            .all(|(_, p)| p[0].1),
        "the others keep running: {after:?}"
    );

    // Reverting the image supersedes the halt: the stuck workspace gets the old image back.
    std::fs::write(&project, &yaml).unwrap();
    repo.apply(&cp, &["--wait", "--timeout", "180"]);
    let out = repo.berth(&cp, "rollout", &["status"]);
    assert!(
        text(&out.stdout).contains("no rollout in progress"),
        "{}",
        text(&out.stdout)
    );
    let last = pods(&client, &ns).await;
    assert!(last.values().all(|p| p.len() == 1 && p[0].1), "{last:?}");
    let untouched = last
        .iter()
        .filter(|(k, p)| before.get(*k).is_some_and(|b| b[0].0 == p[0].0))
        .count();
    assert_eq!(
        untouched,
        before.len() - 1,
        "only the halted workspace restarted twice"
    );
}

/// A Secret every analytics workspace reads is rotated 50 times in under a minute while
/// `berth watch` follows the cluster (a drift cycle every second). With the default
/// minRestartIntervalSeconds (60), each workspace restarts at most twice for all of it,
/// and ends running the last value.
#[tokio::test]
async fn a_secret_rotated_50_times_a_minute_restarts_each_workspace_at_most_twice() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let repo = support::repo::Repo::new("flap");
    // Every workspace at once: the bound under test is the interval, not the budget.
    repo.edit(
        "projects/analytics.yaml",
        "spec:\n",
        "spec:\n  rollout: {maxUnavailable: 100%}\n",
    );
    repo.apply(&cp, &[]);
    let ns = repo.analytics();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "warehouse-credentials"},
        "stringData": {"password": "rotation-0"}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    repo.apply(&cp, &["--wait", "--timeout", "180"]);
    let before = pods(&client, &ns).await;
    let mut workspaces = BTreeMap::new();
    workspaces.insert(ns.clone(), before.len());

    let scratch = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", support::free_port().unwrap());
    let child = repo
        .berth_as(cp.kubeconfig_path(), "watch", &[])
        .args(["--listen", &addr, "--no-leader-elect"])
        .args(["--interval", "1s", "--drift-interval", "1s"])
        .arg("--cache-dir")
        .arg(scratch.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(scratch.path().join("watch.log")).unwrap())
        .spawn()
        .expect("starting berth watch");
    let _watch = Watch {
        child,
        addr: addr.clone(),
    };
    let sampler = Sampler::start(&client, &ns, workspaces);
    // 50 rotations, on a schedule that ends well inside the minute after the first.
    let start = tokio::time::Instant::now();
    for i in 1..=50u64 {
        tokio::time::sleep_until(start + Duration::from_millis(1150 * (i - 1))).await;
        secrets
            .patch(
                "warehouse-credentials",
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {"password": format!("rotation-{i}")}})),
            )
            .await
            .unwrap();
    }
    // Settled: no workspace that restarts on its own (not suspended, not `manual`) still
    // waits for a restart.
    let immediate = ["etl-dev", "etl-prod"];
    support::eventually(
        Duration::from_secs(180),
        "the last rotation running everywhere",
        || async {
            let (_, plan) = repo.plan_json(&cp);
            // A restart held back by the interval is a restart the plan still lists.
            let pending = plan["restarts"].as_array().is_some_and(|r| {
                r.iter()
                    .any(|r| immediate.iter().any(|w| r["workspace"] == *w))
            });
            let now = pods(&client, &ns).await;
            // A plan read before the reconciler saw the last rotation lists nothing yet:
            // settled also means each of them restarted since the first rotation.
            let restarted = immediate.iter().all(|w| {
                let key = format!("{ns}/{w}");
                sampler
                    .seen
                    .lock()
                    .unwrap()
                    .get(&key)
                    .is_some_and(|u| u.len() >= 2)
            });
            !pending && restarted && now.values().all(|p| p.len() == 1 && p[0].1)
        },
    )
    .await;
    let (seen, _) = sampler.stop().await;
    let log = std::fs::read_to_string(scratch.path().join("watch.log")).unwrap_or_default();
    let mut restarts = BTreeMap::new();
    for (key, uids) in &seen {
        let restarted = uids.len() - 1;
        assert!(
            restarted <= 2,
            "{key} restarted {restarted} times: {uids:?}\n{log}"
        );
        restarts.insert(
            key.rsplit('/').next().unwrap_or_default().to_string(),
            restarted,
        );
    }
    println!("restarts during the rotations: {restarts:?}");
    // The first rotations wait out the interval of the Secret's first version, so when
    // the last one runs depends on the clock; that some restart happened does not.
    for w in immediate {
        assert!(
            restarts.get(w).is_some_and(|n| *n >= 1),
            "{w}: {restarts:?}\n{log}"
        );
    }
    assert!(!log.contains("rotation-"), "a secret value in the log");
}

/// The rollout of a change shared by a fleet, against its ideal: batches × the time one
/// restarted workspace takes to be Ready again, and berth's API requests per restarted
/// workspace. Figures in BENCHMARKS.md:
/// `CI=true cargo test --test rollout -- --ignored --nocapture rollout_bench`
/// (BERTH_BENCH_WORKSPACES, default 1,000; BERTH_BENCH_BIN=target/release/berth to time a
/// release build of berth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: minutes at 1,000 workspaces"]
async fn rollout_bench() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let n: usize = std::env::var("BERTH_BENCH_WORKSPACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let client = cp.client().await;
    let repo = GeneratedRepo::new("rbench", n);
    let prefix = repo.prefix.clone();
    let c1 = repo.commit("r1");
    let watch = Watch::spawn(&repo, "bench", cp.kubeconfig_path());
    let running = n - suspended_in_git(&repo);
    // Polled once a second: a LIST of 1,000 pods read by the debug test binary costs CPU
    // the control plane and berth would otherwise have.
    let before = loop {
        let pods = pods(&client, &prefix).await;
        if pods.len() == running && pods.values().all(|p| p.len() == 1 && p[0].1) {
            break pods;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let requests_before = api_requests(&watch).await;

    let started = std::time::Instant::now();
    let c2 = repo.commit("r2");
    let (expected, rollouts) = rolling(&repo, &c1, &c2);
    // Suspended workspaces change too, but run no pod to restart.
    let expected: BTreeSet<String> = expected
        .into_iter()
        .filter(|k| before.contains_key(k))
        .collect();
    // Projects roll side by side: the longest one sets the number of batches. A project's
    // namespace is the prefix and its name, in generated repositories.
    let at_once: BTreeMap<String, u64> = rollouts
        .iter()
        .map(|r| {
            let project = r["project"].as_str().unwrap_or_default();
            (
                format!("{prefix}{project}"),
                r["atOnce"].as_u64().unwrap_or(1).max(1),
            )
        })
        .collect();
    let mut per_namespace: BTreeMap<String, u64> = BTreeMap::new();
    for key in &expected {
        *per_namespace.entry(namespace_of(key)).or_default() += 1;
    }
    let batches = per_namespace
        .iter()
        .map(|(ns, restarts)| restarts.div_ceil(at_once.get(ns).copied().unwrap_or(1)))
        .max()
        .unwrap_or(0);
    // Per workspace: when it was first seen without a Ready pod, and when its new pod was.
    let mut down: BTreeMap<String, std::time::Instant> = BTreeMap::new();
    let mut up: BTreeMap<String, std::time::Instant> = BTreeMap::new();
    while up.len() < expected.len() {
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "{} of {} restarted after an hour",
            up.len(),
            expected.len()
        );
        let now = pods(&client, &prefix).await;
        let at = std::time::Instant::now();
        for key in &expected {
            let old = before.get(key).map(|b| b[0].0.as_str());
            let list = now.get(key).map(Vec::as_slice).unwrap_or_default();
            if !list.iter().any(|p| p.1) {
                down.entry(key.clone()).or_insert(at);
            }
            if list.iter().any(|p| p.1 && Some(p.0.as_str()) != old) {
                down.entry(key.clone()).or_insert(at);
                up.entry(key.clone()).or_insert(at);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let total = started.elapsed();
    let requests = api_requests(&watch).await - requests_before;
    let mut to_ready: Vec<Duration> = up.iter().map(|(k, at)| *at - down[k]).collect();
    to_ready.sort();
    let median = to_ready[to_ready.len() / 2];
    let ideal = median * batches as u32;
    println!(
        "rollout of {} workspaces ({} restarted, {} projects): {:.1} s; {batches} batches × \
         {:.1} s to Ready (median; {:.1}–{:.1} s) = {:.1} s ideal; {:.2}× the ideal; \
         {requests} API requests, {:.1} per restarted workspace",
        n,
        expected.len(),
        rollouts.len(),
        total.as_secs_f64(),
        median.as_secs_f64(),
        to_ready[0].as_secs_f64(),
        to_ready[to_ready.len() - 1].as_secs_f64(),
        ideal.as_secs_f64(),
        total.as_secs_f64() / ideal.as_secs_f64().max(0.001),
        requests as f64 / expected.len().max(1) as f64,
    );
}

/// Every API request a `berth watch` has made, from its metrics.
async fn api_requests(watch: &Watch) -> u64 {
    http_get(&watch.addr, "/metrics")
        .await
        .1
        .lines()
        .filter(|l| l.starts_with("berth_api_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn namespace_of(key: &str) -> String {
    key.split('/').next().unwrap_or_default().to_string()
}

/// How many of a generated repository's workspaces are suspended in git.
fn suspended_in_git(repo: &GeneratedRepo) -> usize {
    let mut count = 0;
    let mut folders = vec![repo.work().join("workspaces")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder)
            .expect("reading workspaces")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                count += text.matches("suspended: true").count();
            }
        }
    }
    count
}
