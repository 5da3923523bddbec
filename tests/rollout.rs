//! Rollouts against real controllers: kube-controller-manager replaces the pods of each
//! StatefulSet berth updates, kwok makes them Ready (or, for the never-ready image of
//! tests/support, never), and a sampler reads the pods every 100 ms while berth rolls a
//! change through a fleet.

mod support;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::generated::GeneratedRepo;
use support::repo::text;

const WORKSPACES: usize = 200;
/// `berth-bench gen` puts 50 workspaces in each project; the default budget is 10%.
const BUDGET: usize = 5;

/// A `berth watch` process, killed (SIGKILL) when dropped.
struct Watch(Child);

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn watch(repo: &GeneratedRepo, name: &str, kubeconfig: &std::path::Path) -> Watch {
    let mut command = repo
        .watch_command(name, "berth-rollout", kubeconfig)
        .command;
    Watch(
        command
            .args(["--drift-interval", "1h"])
            .spawn()
            .expect("starting berth watch"),
    )
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
/// unavailable. The reconciler is killed mid-rollout and another takes over; in the end
/// every workspace whose template changed ran exactly two pods (before, after), the
/// others one.
#[tokio::test]
async fn a_shared_change_rolls_in_batches_within_budget_across_a_reconciler_restart() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let repo = GeneratedRepo::new("rollout", WORKSPACES);
    let prefix = repo.prefix.clone();
    let c1 = repo.commit("r1");
    let first = watch(&repo, "w1", cp.kubeconfig_path());
    // Some generated workspaces are suspended in git: they run no pod.
    let running = WORKSPACES - suspended_in_git(&repo);
    support::eventually(
        Duration::from_secs(300),
        "every workspace Ready",
        || async {
            let pods = pods(&client, &prefix).await;
            pods.len() == running && pods.values().all(|p| p.len() == 1 && p[0].1)
        },
    )
    .await;
    let before = pods(&client, &prefix).await;
    let mut per_namespace: BTreeMap<String, usize> = BTreeMap::new();
    for key in before.keys() {
        *per_namespace.entry(namespace_of(key)).or_default() += 1;
    }

    let c2 = repo.commit("r2");
    let (expected, rollouts) = rolling(&repo, &c1, &c2);
    assert!(expected.len() >= 100, "{} workspaces roll", expected.len());
    assert!(
        rollouts.iter().all(|r| r["atOnce"] == BUDGET as u64),
        "{rollouts:?}"
    );

    // The sampler: every pod uid seen per workspace, and the worst unavailability.
    let seen: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>> = Arc::default();
    let worst: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (client, prefix, seen, worst, sampling) = (
            client.clone(),
            prefix.clone(),
            seen.clone(),
            worst.clone(),
            sampling.clone(),
        );
        let per_namespace = per_namespace.clone();
        tokio::spawn(async move {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                let pods = pods(&client, &prefix).await;
                let mut ready_per_namespace: BTreeMap<String, usize> = BTreeMap::new();
                for (key, list) in &pods {
                    let namespace = namespace_of(key);
                    if list.iter().any(|p| p.1) {
                        *ready_per_namespace.entry(namespace).or_default() += 1;
                    }
                    let mut seen = seen.lock().unwrap();
                    seen.entry(key.clone())
                        .or_default()
                        .extend(list.iter().map(|p| p.0.clone()));
                }
                {
                    let mut worst = worst.lock().unwrap();
                    for (namespace, ready) in ready_per_namespace {
                        let down = per_namespace
                            .get(&namespace)
                            .copied()
                            .unwrap_or(0)
                            .saturating_sub(ready);
                        let w = worst.entry(namespace).or_default();
                        *w = (*w).max(down);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

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
    drop(first);
    let _second = watch(&repo, "w2", cp.kubeconfig_path());

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
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    sampler.await.unwrap();

    let worst = worst.lock().unwrap().clone();
    assert!(
        worst.values().all(|w| *w <= BUDGET),
        "more than {BUDGET} unavailable at once: {worst:?}"
    );
    assert!(
        worst.values().any(|w| *w > 0),
        "the sampler saw no restart: {worst:?}"
    );
    let seen = seen.lock().unwrap().clone();
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
    // Past the deadline, nothing more starts, and the halt is named.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let out = repo.berth(&cp, "apply", &[]);
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(said.contains("HALTED at"), "{said}");
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
