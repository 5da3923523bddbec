//! `berth apply` when the control plane fails under it, on the real control plane: etcd
//! killed in the middle of an apply, and SIGTERM in the middle of an apply. Both leave
//! the cluster in a state the next apply finishes from, and say what was and was not
//! applied.
//!
//! These tests kill the etcd every test of this binary shares: they run one at a time.

mod support;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use support::ControlPlane;
use support::generated::{GeneratedRepo, http_get};

/// One test at a time: an etcd outage would break the others.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Workspaces of the generated repository: about 1,000 objects, an apply of seconds.
const WORKSPACES: usize = 300;

fn berth(cp: &ControlPlane, repo: &GeneratedRepo, command: &str) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("berth"));
    cmd.arg(command)
        .arg(repo.work())
        .arg("--kubeconfig")
        .arg(cp.kubeconfig_path())
        .args(["--applyset", "berth-outage", "--applyset-namespace"])
        .arg(format!("{}berth", repo.prefix))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// The child, killed if the test ends without it having exited.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `berth apply` in the background, its stdout and stderr into files of `dir`.
fn spawn_apply(cp: &ControlPlane, repo: &GeneratedRepo, dir: &Path, args: &[&str]) -> Running {
    let stdout = std::fs::File::create(dir.join("stdout")).unwrap();
    let stderr = std::fs::File::create(dir.join("stderr")).unwrap();
    let child = berth(cp, repo, "apply")
        .args(args)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("starting berth apply");
    Running(child)
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// Objects the apply reported as written so far (`created  Kind/ns/name` lines).
fn written(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("created  "))
        .map(str::to_string)
        .collect()
}

/// Wait (up to `timeout`) until `apply` has written at least `count` objects.
async fn wait_written(apply: &mut Running, dir: &Path, count: usize, timeout: Duration) {
    let started = Instant::now();
    loop {
        let stderr = read(dir, "stderr");
        if written(&stderr).len() >= count {
            return;
        }
        if let Some(status) = apply.0.try_wait().unwrap() {
            panic!(
                "berth apply ended ({status}) before it had written {count} objects: the \
                 apply is too short to interrupt\n{stderr}"
            );
        }
        assert!(
            started.elapsed() < timeout,
            "berth apply had not written {count} objects after {timeout:?}:\n{stderr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait (up to `timeout`) for the child to exit.
async fn wait_exit(apply: &mut Running, timeout: Duration, what: &str) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = apply.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            started.elapsed() < timeout,
            "berth apply did not exit within {timeout:?} {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// After an interruption: a new apply finishes the work, and then the plan is empty.
fn converges(cp: &ControlPlane, repo: &GeneratedRepo) {
    let out = berth(cp, repo, "apply")
        .args(["--timeout", "180s"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "the apply after the interruption failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = berth(cp, repo, "plan").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "the plan after the second apply is not empty:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 17: etcd dies in the middle of an apply. berth gives up within its `--timeout`
/// (not after the client library's 14 minutes of retries), exits 1 and says why and what
/// was not applied; once etcd is back, an apply converges and the plan is empty.
#[tokio::test]
async fn etcd_killed_during_apply_ends_it_within_its_deadline_and_the_next_apply_converges() {
    let _serial = SERIAL.lock().await;
    let Some(cp) = support::control_plane().await else {
        return;
    };
    let repo = GeneratedRepo::new("etcd", WORKSPACES);
    repo.generate("r1");
    let dir = repo.scratch("apply");
    let deadline = Duration::from_secs(30);
    let started = Instant::now();
    let mut apply = spawn_apply(&cp, &repo, &dir, &["--timeout", "30s"]);
    wait_written(&mut apply, &dir, 1, Duration::from_secs(60)).await;
    let etcd = support::outage::kill_etcd(&cp);
    let killed = Instant::now();
    // Bounded: the deadline, plus the time to start and to say what happened.
    let status = wait_exit(
        &mut apply,
        deadline + Duration::from_secs(30),
        "after etcd was killed",
    )
    .await;
    let took = started.elapsed();
    let after_kill = killed.elapsed();
    etcd.restart(&cp);
    let stdout = read(&dir, "stdout");
    let stderr = read(&dir, "stderr");
    eprintln!(
        "measured: berth apply --timeout 30s exited {status} {:.1}s after it started, {:.1}s \
         after etcd was killed",
        took.as_secs_f64(),
        after_kill.as_secs_f64()
    );
    assert_eq!(status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        took < deadline + Duration::from_secs(10),
        "berth apply ran {took:?}, past its --timeout of {deadline:?}:\n{stderr}"
    );
    assert!(
        stderr.contains("gave up after 30s (--timeout)"),
        "the reason is said:\n{stderr}"
    );
    for noise in ["ServiceError", "kube_client", "Status {", "os error"] {
        assert!(!stderr.contains(noise), "`{noise}` in:\n{stderr}");
    }
    converges(&cp, &repo);
}

/// Issue 17: SIGTERM in the middle of `berth apply`: it stops sending, prints what was
/// applied, what was in flight and what was not sent, prunes nothing, and exits 143. The
/// objects it says were not applied are not in the cluster (server-side apply writes an
/// object whole or not at all), and the next apply converges.
#[tokio::test]
async fn sigterm_during_apply_says_what_was_applied_and_what_not_and_exits_143() {
    let _serial = SERIAL.lock().await;
    let Some(cp) = support::control_plane().await else {
        return;
    };
    let repo = GeneratedRepo::new("sigterm", WORKSPACES);
    repo.generate("r1");
    let dir = repo.scratch("apply");
    let mut apply = spawn_apply(&cp, &repo, &dir, &[]);
    wait_written(&mut apply, &dir, 20, Duration::from_secs(60)).await;
    // SAFETY: a plain syscall on our own child's pid.
    unsafe {
        libc::kill(apply.0.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = wait_exit(&mut apply, Duration::from_secs(30), "after SIGTERM").await;
    let stdout = read(&dir, "stdout");
    let stderr = read(&dir, "stderr");
    assert_eq!(status.code(), Some(143), "{stdout}\n{stderr}");
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("applied: "))
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}"));
    assert!(summary.contains("stopped early"), "{summary}");
    assert!(
        stderr.contains("error: stopped by SIGTERM; the objects above were applied"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was pruned"), "{stderr}");
    let created = written(&stderr);
    let not_applied: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("not applied: "))
        .collect();
    assert!(!created.is_empty(), "{stderr}");
    assert!(
        !not_applied.is_empty(),
        "SIGTERM came early enough to leave objects unsent:\n{stderr}"
    );
    assert!(
        summary.contains(&format!("{} not sent", not_applied.len())),
        "the summary counts the list: {summary}"
    );
    // What berth says matches the cluster: applied objects are there, unsent ones not.
    let exists = |object: &str| -> bool {
        let parts: Vec<&str> = object.split('/').collect();
        let (kind, namespace, name) = match parts.as_slice() {
            [kind, name] => (*kind, None, *name),
            [kind, namespace, name] => (*kind, Some(*namespace), *name),
            _ => panic!("unexpected object name {object}"),
        };
        let mut get = cp.kubectl();
        get.args(["get", kind, name, "--ignore-not-found", "-o", "name"]);
        if let Some(namespace) = namespace {
            get.args(["-n", namespace]);
        }
        let out = get.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        !out.stdout.is_empty()
    };
    for object in created.iter().take(5) {
        assert!(
            exists(object),
            "{object} was reported created but is not there"
        );
    }
    for object in not_applied.iter().take(5) {
        assert!(
            !exists(object),
            "{object} was reported not applied but is there"
        );
    }
    converges(&cp, &repo);
}

/// Issue 17: `berth watch` bounds each cycle. With a `--cycle-timeout` shorter than the
/// first apply of a large repository, the cycle is stopped at its deadline (reported as
/// error kind `timeout`, nothing pruned), retried with backoff, and each retry goes on
/// from where the last stopped, until the repository is applied.
#[tokio::test]
async fn a_cycle_past_its_timeout_is_stopped_and_retried_until_it_converges() {
    let _serial = SERIAL.lock().await;
    let Some(cp) = support::control_plane().await else {
        return;
    };
    let repo = GeneratedRepo::new("cycle", WORKSPACES);
    let commit = repo.commit("r1");
    let watch = repo.watch_command("watch", "berth-outage", cp.kubeconfig_path());
    let (log, addr) = (watch.log, watch.addr);
    let mut command = watch.command;
    let child = command
        .arg("--no-leader-elect")
        .args(["--cycle-timeout", "2s", "--drift-interval", "1h"])
        .spawn()
        .expect("starting berth watch");
    let mut watch = Running(child);
    let timeouts = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| {
                l["fields"]["message"] == "reconcile failed" && l["fields"]["kind"] == "timeout"
            })
            .collect()
    };
    let started = Instant::now();
    loop {
        if let Some(status) = watch.0.try_wait().unwrap() {
            panic!("berth watch exited ({status})");
        }
        let plan = berth(&cp, &repo, "plan").output().unwrap();
        if plan.status.code() == Some(0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the repository was not applied within 300 s of 2 s cycles:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let stopped = timeouts();
    eprintln!(
        "measured: {} cycle(s) stopped at the 2 s cycle timeout before {WORKSPACES} workspaces \
         were applied, in {:.1?}",
        stopped.len(),
        started.elapsed()
    );
    assert!(
        !stopped.is_empty(),
        "the first apply fit in one 2 s cycle: nothing was stopped"
    );
    let message = stopped[0]["fields"]["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("cycle timeout (2s)") && message.contains("nothing was pruned"),
        "{message}"
    );
    // Once applied, the revision is recorded as applied (a cycle within the deadline).
    let mut applied = false;
    for _ in 0..600 {
        let (code, text) = http_get(&addr, "/metrics").await;
        if code == 0 {
            break;
        }
        if text.contains(&format!(
            "berth_last_applied_revision_info{{revision=\"{commit}\"}} 1"
        )) {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(applied, "the revision was recorded as applied within 60 s");
}
