//! One writer at a time (issue 20), with two real `berth watch` processes on the test
//! control plane and a generated repository large enough (about 1,000 objects) that an
//! apply is in flight when something happens to the leader:
//!
//! - SIGTERM to the leader during an apply: it finishes the apply, only then releases the
//!   Lease, and the standby starts writing after that;
//! - a partition between the leader and the API server, longer than the lease: the leader
//!   stops writing before the standby can take over, and does not write again once the
//!   network heals.
//!
//! Overlap is judged from the processes' own JSON logs (same machine, same clock): every
//! object write is logged when its answer comes, and a new leader logs `became the
//! leader` before it sends anything. In both cases the end state is the newest revision
//! (the plan against it is empty).

mod support;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use support::ControlPlane;
use support::eventually;
use support::generated::{GeneratedRepo, http_get};

/// Workspaces of the generated repository: about 1,000 objects per revision.
const WORKSPACES: usize = 300;
/// Both tests load the one API server heavily: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A `berth watch` process, killed if the test ends without stopping it.
struct Watch {
    child: Child,
    addr: String,
    log: PathBuf,
    identity: String,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Watch {
    fn spawn(repo: &GeneratedRepo, identity: &str, kubeconfig: &Path, lease: &str) -> Watch {
        let watch = repo.watch_command(&format!("watch-{identity}"), "berth-fence", kubeconfig);
        let mut command = watch.command;
        let child = command
            .args(["--drift-interval", "1h", "--lease-duration", lease])
            // Long enough for the whole apply to finish after SIGTERM.
            .args(["--shutdown-grace", "120s", "--identity", identity])
            .spawn()
            .expect("starting berth watch");
        Watch {
            child,
            addr: watch.addr,
            log: watch.log,
            identity: identity.to_string(),
        }
    }

    async fn metrics(&self) -> String {
        http_get(&self.addr, "/metrics").await.1
    }

    async fn leads(&self) -> bool {
        self.metrics().await.lines().any(|l| l == "berth_leader 1")
    }

    async fn applied(&self, commit: &str) -> bool {
        self.metrics().await.contains(&format!(
            "berth_last_applied_revision_info{{revision=\"{commit}\"}} 1"
        ))
    }

    fn log(&self) -> Log {
        Log::read(&self.log)
    }

    fn terminate(&self) {
        // SAFETY: a plain syscall on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }

    /// Wait (up to `timeout`) for the process to exit; whether it exited 0.
    async fn exited(&mut self, timeout: Duration) -> bool {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(
                started.elapsed() < timeout,
                "berth watch {} did not exit within {timeout:?} of SIGTERM",
                self.identity
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One process's JSON log lines.
struct Log {
    lines: Vec<Value>,
    text: String,
}

/// What an apply logs per object once the API server has answered.
const WRITE_VERBS: [&str; 5] = ["created", "updated", "re-created", "deleted", "released"];

impl Log {
    fn read(path: &Path) -> Log {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        Log { lines, text }
    }

    fn at(line: &Value) -> Timestamp {
        line["timestamp"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("a log line without a timestamp: {line}"))
    }

    fn message(line: &Value) -> &str {
        line["fields"]["message"].as_str().unwrap_or_default()
    }

    /// The times of every object write the API server answered.
    fn writes(&self) -> Vec<Timestamp> {
        self.lines
            .iter()
            .filter(|l| l["fields"].get("object").is_some())
            .filter(|l| WRITE_VERBS.contains(&Self::message(l)))
            .map(Self::at)
            .collect()
    }

    fn count(&self, verb: &str) -> usize {
        self.lines
            .iter()
            .filter(|l| l["fields"].get("object").is_some() && Self::message(l) == verb)
            .count()
    }

    /// The time of the first line whose message starts with `prefix`.
    fn first(&self, prefix: &str) -> Option<Timestamp> {
        self.lines
            .iter()
            .find(|l| Self::message(l).starts_with(prefix))
            .map(Self::at)
    }

    fn last(&self, prefix: &str) -> Option<Timestamp> {
        self.lines
            .iter()
            .rev()
            .find(|l| Self::message(l).starts_with(prefix))
            .map(Self::at)
    }
}

fn seconds(from: Timestamp, to: Timestamp) -> f64 {
    (to.as_microsecond() - from.as_microsecond()) as f64 / 1e6
}

/// The end state is revision `rev` (the work folder holds it): the plan is empty, and
/// every workspace's StatefulSet carries its label.
async fn state_is(cp: &ControlPlane, repo: &GeneratedRepo, rev: &str) {
    let out = Command::new(assert_cmd::cargo::cargo_bin("berth"))
        .arg("plan")
        .arg(repo.work())
        .arg("--kubeconfig")
        .arg(cp.kubeconfig_path())
        .args(["--applyset", "berth-fence", "--applyset-namespace"])
        .arg(format!("{}berth", repo.prefix))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "the cluster is not revision {rev}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let api: Api<StatefulSet> = Api::all(cp.client().await);
    let list = api
        .list(&ListParams::default().labels("bench-rev"))
        .await
        .unwrap();
    let ours: Vec<&StatefulSet> = list
        .items
        .iter()
        .filter(|s| {
            s.metadata
                .namespace
                .as_deref()
                .is_some_and(|n| n.starts_with(&repo.prefix))
        })
        .collect();
    assert_eq!(ours.len(), WORKSPACES);
    for sts in ours {
        let label = sts
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("bench-rev"))
            .cloned();
        assert_eq!(label.as_deref(), Some(rev), "{:?}", sts.metadata.name);
    }
}

/// A starts, leads and applies r1; B stands by.
async fn leader_and_standby(
    cp: &ControlPlane,
    repo: &GeneratedRepo,
    a_kubeconfig: &Path,
    lease: &str,
) -> (Watch, Watch, String) {
    let c1 = repo.commit("r1");
    let a = Watch::spawn(repo, "a", a_kubeconfig, lease);
    eventually(
        Duration::from_secs(180),
        "a to lead and apply the first revision",
        || async { a.leads().await && a.applied(&c1).await },
    )
    .await;
    let b = Watch::spawn(repo, "b", cp.kubeconfig_path(), lease);
    eventually(Duration::from_secs(60), "b to be ready", || async {
        http_get(&b.addr, "/readyz").await.0 == 200
    })
    .await;
    assert!(!b.leads().await, "b stands by while a leads");
    (a, b, c1)
}

/// Wait until A's apply of the next revision is under way (some objects updated).
async fn apply_under_way(a: &Watch) {
    eventually(
        Duration::from_secs(120),
        "a's apply of the second revision to be under way",
        || async { a.log().count("updated") >= 30 },
    )
    .await;
}

/// SIGTERM to the leader in the middle of an apply: it finishes the apply and only then
/// releases the Lease; the standby's first write comes after the old leader's last; the
/// newest revision ends up in force.
#[tokio::test]
async fn sigterm_during_an_apply_hands_over_only_after_the_last_write() {
    let _serial = SERIAL.lock().await;
    let Some(cp) = support::control_plane().await else {
        return;
    };
    let repo = GeneratedRepo::new("handover", WORKSPACES);
    let (mut a, mut b, _) = leader_and_standby(&cp, &repo, cp.kubeconfig_path(), "4s").await;

    let c2 = repo.commit("r2");
    apply_under_way(&a).await;
    // The newest revision, which the next leader must end up applying.
    let c3 = repo.commit("r3");
    let signalled = Timestamp::now();
    a.terminate();
    assert!(a.exited(Duration::from_secs(150)).await, "a exits 0");
    let exited = Timestamp::now();
    eventually(
        Duration::from_secs(180),
        "b to take over and apply the newest revision",
        || async { b.leads().await && b.applied(&c3).await },
    )
    .await;

    let (a_log, b_log) = (a.log(), b.log());
    let a_writes = a_log.writes();
    let b_writes = b_log.writes();
    let a_last = *a_writes.iter().max().expect("a wrote");
    let released = a_log
        .last("released the leader Lease")
        .unwrap_or_else(|| panic!("a released the Lease:\n{}", a_log.text));
    let became = b_log
        .first("became the leader")
        .unwrap_or_else(|| panic!("b became the leader:\n{}", b_log.text));
    let b_first = *b_writes.iter().min().expect("b wrote");
    eprintln!(
        "measured: SIGTERM → a's last write {:.2}s, → release {:.2}s, → a exited {:.2}s; \
         release → b leads {:.3}s; a's last write → b's first write {:.2}s",
        seconds(signalled, a_last),
        seconds(signalled, released),
        seconds(signalled, exited),
        seconds(released, became),
        seconds(a_last, b_first),
    );
    // The situation under test: a kept writing after the signal (its apply in flight)…
    assert!(
        a_last > signalled,
        "a's apply was over before SIGTERM: nothing was in flight"
    );
    assert!(
        a_log.text.contains(&format!("applied {}", &c2[..12])),
        "a finished applying the second revision:\n{}",
        a_log.text
    );
    // …and the writes never overlapped: a's last write, then the release, then b.
    assert!(a_last < released, "a wrote after it released the Lease");
    assert!(released < became, "b led before a released");
    assert!(became < b_first);
    assert!(a_last < b_first, "the writes of a and b overlap");

    b.terminate();
    assert!(b.exited(Duration::from_secs(60)).await, "b exits 0");
    state_is(&cp, &repo, "r3").await;
}

/// A partition between the leader and the API server, longer than the lease: the leader
/// stops writing (its Lease's fence expires a third of a lease before anyone may take
/// over), the standby takes over and applies the newest revision, and when the network
/// heals the old leader stands by and writes nothing more.
#[tokio::test]
async fn a_partitioned_leader_stops_writing_before_the_standby_takes_over() {
    let _serial = SERIAL.lock().await;
    let Some(cp) = support::control_plane().await else {
        return;
    };
    let repo = GeneratedRepo::new("partition", WORKSPACES);
    let proxy = support::outage::Proxy::start(&cp).await;
    let through_proxy = proxy.kubeconfig(&cp, &repo.scratch("proxy"));
    let lease = Duration::from_secs(4);
    let (mut a, mut b, _) = leader_and_standby(&cp, &repo, &through_proxy, "4s").await;

    repo.commit("r2");
    apply_under_way(&a).await;
    proxy.cut();
    let cut = Timestamp::now();
    let c3 = repo.commit("r3");
    eventually(Duration::from_secs(30), "b to take over", || async {
        b.leads().await
    })
    .await;
    // The partition lasts longer than the lease: three of them.
    let healed_at = Instant::now() + lease * 3;
    eventually(
        Duration::from_secs(30),
        "a's /readyz to say the API server cannot be reached",
        || async { http_get(&a.addr, "/readyz").await.0 == 503 },
    )
    .await;
    eventually(
        Duration::from_secs(180),
        "b to apply the newest revision",
        || async { b.applied(&c3).await },
    )
    .await;
    tokio::time::sleep_until(healed_at.into()).await;
    proxy.heal();
    let healed = Timestamp::now();
    eventually(
        Duration::from_secs(30),
        "a to answer again after the partition",
        || async { http_get(&a.addr, "/readyz").await.0 == 200 },
    )
    .await;
    // Time for a to do anything it would (it must not write).
    tokio::time::sleep(lease).await;
    assert!(!a.leads().await, "a stands by after the partition");
    // The partition shows in a's metrics as API errors of its election client.
    let metrics = a.metrics().await;
    let errors: u64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("berth_api_errors_total{client=\"election\"")
                && (l.contains("kind=\"timeout\"") || l.contains("kind=\"unreachable\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(errors > 0, "{metrics}");

    let (a_log, b_log) = (a.log(), b.log());
    let a_last = *a_log.writes().iter().max().expect("a wrote");
    let lost = a_log
        .first("lost the leader Lease")
        .unwrap_or_else(|| panic!("a says it lost the Lease:\n{}", a_log.text));
    let became = b_log
        .first("became the leader")
        .unwrap_or_else(|| panic!("b became the leader:\n{}", b_log.text));
    let b_first = *b_log.writes().iter().min().expect("b wrote");
    eprintln!(
        "measured: partition → a's last answered write {:.2}s, → a stops writing {:.2}s, \
         → b leads {:.2}s (lease {lease:?}); a stopped {:.2}s before b led; a's last write \
         → b's first write {:.2}s; partition healed after {:.1}s",
        seconds(cut, a_last),
        seconds(cut, lost),
        seconds(cut, became),
        seconds(lost, became),
        seconds(a_last, b_first),
        seconds(cut, healed),
    );
    assert!(
        lost < became,
        "a still counted itself leader when b took over"
    );
    assert!(a_last < became, "a wrote after b became the leader");
    assert!(a_last < b_first, "the writes of a and b overlap");
    assert!(
        a_log
            .text
            .contains("lost the leader Lease: abandoned the apply in flight"),
        "a abandoned its apply:\n{}",
        a_log.text
    );

    a.terminate();
    b.terminate();
    assert!(a.exited(Duration::from_secs(60)).await, "a exits 0");
    assert!(b.exited(Duration::from_secs(60)).await, "b exits 0");
    state_is(&cp, &repo, "r3").await;
}
