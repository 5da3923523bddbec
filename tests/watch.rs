//! `berth watch` against a real cluster (the full control plane of tests/support: controllers,
//! scheduler, kwok nodes), following a local bare git repository that each test creates and
//! commits to with the git CLI. Each test has its own namespaces and ApplySet. Most tests run
//! the reconciler in-process (library API with a shutdown token); one runs the real binary.

mod support;

use berth::cluster::applyset::ApplySet;
use berth::reconcile::leader::LeaderConfig;
use berth::reconcile::{Config, Running};
use berth::source::{GitAuth, GitRef, GitRemote, SourceSpec};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::ControlPlane;
use support::generated::status_and_body;
use support::{eventually, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "webhook-s3cret";

/// A small berth repository: one project, an idle-terminated `etl` (restart when idle)
/// and a plain `web`.
fn repository(namespace: &str, greeting: &str) -> String {
    format!(
        r#"apiVersion: berth/v1alpha1
kind: Project
metadata: {{name: p}}
spec:
  namespace: {namespace}
  image: mageai/mageai:0.9.76
  env:
    - {{name: GREETING, value: "{greeting}"}}
---
apiVersion: berth/v1alpha1
kind: Workspace
metadata: {{name: etl}}
spec:
  project: p
  lifecycle:
    termination: {{idleSeconds: 60}}
    restart: when-idle
---
apiVersion: berth/v1alpha1
kind: Workspace
metadata: {{name: web}}
spec:
  project: p
"#
    )
}

/// A bare "remote" and a work clone that commits and pushes to it.
struct Remote {
    dir: tempfile::TempDir,
    /// The workspaces' namespace.
    ns: String,
    /// The ApplySet parent's namespace.
    set_ns: String,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@berth.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("running git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Remote {
    fn new(test: &str) -> Remote {
        let prefix = support::unique_name(test);
        let dir = tempfile::tempdir().unwrap();
        let remote = Remote {
            ns: format!("{prefix}-ws"),
            set_ns: format!("{prefix}-berth"),
            dir,
        };
        git(remote.dir.path(), &["init", "-q", "--bare", "remote.git"]);
        std::fs::create_dir(remote.work()).unwrap();
        git(&remote.work(), &["init", "-q"]);
        git(&remote.work(), &["checkout", "-q", "-b", "main"]);
        git(
            &remote.work(),
            &["remote", "add", "origin", remote.bare().to_str().unwrap()],
        );
        remote.write(&repository(&remote.ns, "hello"));
        remote.commit("first");
        remote
    }

    fn bare(&self) -> PathBuf {
        self.dir.path().join("remote.git")
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn url(&self) -> String {
        format!("file://{}", self.bare().display())
    }

    fn write(&self, text: &str) {
        std::fs::write(self.work().join("repo.yaml"), text).unwrap();
    }

    /// Commit everything and push; the new commit's id.
    fn commit(&self, message: &str) -> String {
        self.commit_signed(message, None)
    }

    /// Commit everything, signed with the private key `key` (git's `gpg.format=ssh`, which
    /// signs through `ssh-keygen -Y sign`) or unsigned, and push; the new commit's id.
    fn commit_signed(&self, message: &str, key: Option<&Path>) -> String {
        git(&self.work(), &["add", "-A"]);
        match key {
            Some(key) => {
                let signing_key = format!("user.signingkey={}", key.display());
                git(
                    &self.work(),
                    &["-c", "gpg.format=ssh", "-c", &signing_key]
                        .into_iter()
                        .chain(["commit", "-S", "-q", "-m", message])
                        .collect::<Vec<_>>(),
                );
            }
            None => {
                git(
                    &self.work(),
                    &["commit", "--no-gpg-sign", "-q", "-m", message],
                );
            }
        }
        git(&self.work(), &["push", "-q", "origin", "main"]);
        git(&self.work(), &["rev-parse", "HEAD"])
    }

    fn applyset(&self) -> ApplySet {
        ApplySet {
            name: "berth-watch".into(),
            namespace: self.set_ns.clone(),
        }
    }

    fn config(&self, identity: &str, poll: Duration) -> Config {
        let source = SourceSpec::Git {
            remote: GitRemote {
                url: self.url(),
                reference: GitRef::Branch("main".into()),
                subpath: String::new(),
                auth: GitAuth::default(),
            },
            cache_dir: self.dir.path().join(format!("cache-{identity}")),
        };
        let mut config = Config::new(source, self.applyset(), identity.into());
        config.poll_interval = poll;
        config.drift_interval = Duration::from_secs(3600);
        config.backoff_base = Duration::from_millis(100);
        config.listen = Some("127.0.0.1:0".parse().unwrap());
        config.webhook_secret = Some(SECRET.into());
        config
    }
}

async fn kube_config(cp: &ControlPlane) -> kube::Config {
    let kubeconfig = kube::config::Kubeconfig::read_from(cp.kubeconfig_path()).unwrap();
    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap()
}

/// A reconciler running in this process; stopped (and awaited) on drop of the test.
struct InProcess {
    running: Option<Running>,
    stop: CancellationToken,
}

impl InProcess {
    async fn start(cp: &ControlPlane, config: Config) -> InProcess {
        let stop = CancellationToken::new();
        let running = berth::reconcile::start(config, kube_config(cp).await, stop.clone())
            .await
            .unwrap();
        InProcess {
            running: Some(running),
            stop,
        }
    }

    fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    fn url(&self, path: &str) -> (String, String) {
        let addr = self.running().addr.unwrap();
        (addr.to_string(), path.to_string())
    }

    /// Wait until `commit` is the last applied revision (the cycle finished).
    async fn applied(&self, commit: &str) {
        eventually(
            Duration::from_secs(20),
            "the revision to be recorded",
            || async {
                self.running()
                    .shared
                    .status()
                    .last_applied
                    .is_some_and(|r| r.revision == commit)
            },
        )
        .await;
        // The status ConfigMap is written right after.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    fn writes(&self) -> u64 {
        writes(&self.running().shared.api_requests())
    }

    async fn stop(mut self) {
        self.stop.cancel();
        if let Some(running) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(30), running.wait())
                .await
                .expect("the reconciler stops within 30 s")
                .unwrap();
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn writes(counts: &std::collections::BTreeMap<String, u64>) -> u64 {
    counts
        .iter()
        .filter(|(verb, _)| matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
        .map(|(_, n)| n)
        .sum()
}

async fn greeting(client: &kube::Client, ns: &str) -> Option<String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    api.get_opt("etl-env")
        .await
        .ok()
        .flatten()
        .and_then(|cm| cm.data)
        .and_then(|d| d.get("GREETING").cloned())
}

async fn replicas(client: &kube::Client, ns: &str, name: &str) -> Option<i32> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    api.get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|s| s.spec)
        .and_then(|s| s.replicas)
}

async fn events(client: &kube::Client, ns: &str, reason: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.message.unwrap_or_default())
        .collect()
}

/// A minimal HTTP/1.1 request; the status code and body.
async fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, String) {
    // Not listening (yet, or any more): no answer.
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    status_and_body(&response)
}

fn push_payload(commit: &str) -> String {
    json!({"ref": "refs/heads/main", "after": commit}).to_string()
}

#[tokio::test]
async fn a_commit_is_live_within_one_poll_interval() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let remote = Remote::new("poll");
    let poll = Duration::from_millis(500);
    let watch = InProcess::start(&cp, remote.config("poll", poll)).await;
    eventually(Duration::from_secs(20), "the first apply", || async {
        greeting(&client, &remote.ns).await.as_deref() == Some("hello")
    })
    .await;

    watch
        .applied(&git(&remote.work(), &["rev-parse", "HEAD"]))
        .await;
    remote.write(&repository(&remote.ns, "bonjour"));
    let commit = remote.commit("say bonjour");
    let took = eventually(Duration::from_secs(10), "the commit to be live", || async {
        greeting(&client, &remote.ns).await.as_deref() == Some("bonjour")
    })
    .await;
    eprintln!("measured: commit live after {took:?} (poll interval {poll:?})");
    assert!(
        took < poll + Duration::from_millis(1500),
        "live after {took:?}, poll interval {poll:?}"
    );
    watch.applied(&commit).await;
    let status = watch.running().shared.status();
    assert!(status.error.is_none(), "{:?}", status.error);
    // The status is in the cluster too, and the revision in the metrics.
    let stored = berth::reconcile::status::read(
        &berth::cluster::Cluster::from_config(kube_config(&cp).await).unwrap(),
        &remote.applyset(),
    )
    .await
    .unwrap()
    .expect("a status ConfigMap");
    assert_eq!(stored.last_applied.unwrap().revision, commit);
    let (addr, path) = watch.url("/metrics");
    let (code, metrics) = http(&addr, "GET", &path, &[], "").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains(&format!(
            "berth_last_applied_revision_info{{revision=\"{commit}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("berth_reconciles_total{result=\"applied\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("berth_api_requests_total{client=\"reconcile\",verb=\"LIST\"}"),
        "{metrics}"
    );
    let (addr, path) = watch.url("/readyz");
    assert_eq!(http(&addr, "GET", &path, &[], "").await.0, 200);
    watch.stop().await;
}

#[tokio::test]
async fn a_signed_webhook_applies_at_once_and_an_unsigned_one_is_refused() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let remote = Remote::new("hook");
    // A poll interval far longer than the test: only webhooks can bring changes in.
    let watch = InProcess::start(&cp, remote.config("hook", Duration::from_secs(600))).await;
    watch
        .applied(&git(&remote.work(), &["rev-parse", "HEAD"]))
        .await;
    let (addr, path) = watch.url("/hooks/git");

    remote.write(&repository(&remote.ns, "hola"));
    let commit = remote.commit("say hola");
    let body = push_payload(&commit);
    let github = |signature: String| {
        vec![
            ("x-github-event", "push".to_string()),
            ("x-hub-signature-256", signature),
            ("content-type", "application/json".to_string()),
        ]
    };
    // Unsigned, wrongly signed, a wrong GitLab token: 401, and nothing happens.
    let before = watch.running().shared.api_requests();
    for headers in [
        vec![("x-github-event", "push".to_string())],
        github(berth::reconcile::webhook::github_signature(
            b"wrong",
            body.as_bytes(),
        )),
        vec![
            ("x-gitlab-event", "Push Hook".to_string()),
            ("x-gitlab-token", "wrong".to_string()),
        ],
    ] {
        let (code, _) = http(&addr, "POST", &path, &headers, &body).await;
        assert_eq!(code, 401);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        greeting(&client, &remote.ns).await.as_deref(),
        Some("hello")
    );
    assert_eq!(
        watch.running().shared.api_requests(),
        before,
        "a refused webhook makes no API request"
    );

    // Signed: fetched and applied within a second.
    let signed = github(berth::reconcile::webhook::github_signature(
        SECRET.as_bytes(),
        body.as_bytes(),
    ));
    let sent = Instant::now();
    let (code, text) = http(&addr, "POST", &path, &signed, &body).await;
    assert_eq!(code, 202, "{text}");
    eventually(
        Duration::from_secs(5),
        "the webhook's commit to be live",
        || async { greeting(&client, &remote.ns).await.as_deref() == Some("hola") },
    )
    .await;
    let took = sent.elapsed();
    eprintln!("measured: signed webhook to live in {took:?}");
    assert!(took < Duration::from_secs(1), "live after {took:?}");

    // GitLab style, with the right token.
    remote.write(&repository(&remote.ns, "ciao"));
    let commit = remote.commit("say ciao");
    let gitlab = vec![
        ("x-gitlab-event", "Push Hook".to_string()),
        ("x-gitlab-token", SECRET.to_string()),
    ];
    let (code, _) = http(&addr, "POST", &path, &gitlab, &push_payload(&commit)).await;
    assert_eq!(code, 202);
    eventually(
        Duration::from_secs(5),
        "the GitLab webhook's commit",
        || async { greeting(&client, &remote.ns).await.as_deref() == Some("ciao") },
    )
    .await;
    watch.stop().await;
}

#[tokio::test]
async fn an_invalid_revision_changes_nothing_and_is_reported_until_fixed() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let remote = Remote::new("invalid");
    let good = git(&remote.work(), &["rev-parse", "HEAD"]);
    let watch = InProcess::start(&cp, remote.config("invalid", Duration::from_millis(300))).await;
    watch.applied(&good).await;
    // The controllers roll the workspaces out (writing the StatefulSets' status) and the
    // reconciler's status follows them to "ready" (one more status write): let that settle
    // before taking the cluster's and the reconciler's measure.
    support::wait_rolled_out(&client, &remote.ns, PODS).await;
    eventually(
        Duration::from_secs(20),
        "the status to show every workspace ready",
        || async {
            let workspaces = watch.running().shared.status().workspaces;
            !workspaces.is_empty() && workspaces.iter().all(|w| w.state == "ready")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &remote.ns);
    let versions = |list: Vec<StatefulSet>| {
        list.into_iter()
            .map(|s| {
                (
                    s.metadata.name.unwrap(),
                    s.metadata.resource_version.unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let before = versions(sts.list(&ListParams::default()).await.unwrap().items);
    assert_eq!(before.len(), 2);
    let writes_before = watch.writes();

    // Invalid: an unknown field, a changed variable, and `web` removed (a prune, if applied).
    let text = repository(&remote.ns, "changed").replace(
        "  project: p\n  lifecycle:",
        "  project: p\n  replicas: 3\n  lifecycle:",
    );
    let text = text[..text.rfind("---").unwrap()].to_string();
    remote.write(&text);
    let bad = remote.commit("break it");
    eventually(
        Duration::from_secs(10),
        "the error in the status",
        || async {
            watch
                .running()
                .shared
                .status()
                .error
                .is_some_and(|e| e.kind == "invalid" && e.revision.as_deref() == Some(bad.as_str()))
        },
    )
    .await;
    // Several polls later: nothing changed in the cluster.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        greeting(&client, &remote.ns).await.as_deref(),
        Some("hello")
    );
    assert_eq!(
        versions(sts.list(&ListParams::default()).await.unwrap().items),
        before
    );
    let status = watch.running().shared.status();
    assert_eq!(status.last_applied.as_ref().unwrap().revision, good);
    assert_eq!(status.last_seen.as_ref().unwrap().revision, bad);
    let error = status.error.unwrap();
    assert!(
        error.message.contains("unknown field `replicas`"),
        "{}",
        error.message
    );
    // Reported once (status ConfigMap and one Event), not on every poll.
    let reported = events(&client, &remote.set_ns, "InvalidRevision").await;
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert!(
        watch.writes() - writes_before <= 2,
        "only the status and the Event are written: {:?}",
        watch.running().shared.api_requests()
    );

    // `berth status` shows the error and the last good revision.
    let out = assert_cmd::Command::cargo_bin("berth")
        .unwrap()
        .args(["status", "--format", "json", "--applyset", "berth-watch"])
        .arg("--applyset-namespace")
        .arg(&remote.set_ns)
        .arg("--kubeconfig")
        .arg(cp.kubeconfig_path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["lastApplied"]["revision"], good.as_str());
    assert_eq!(shown["error"]["kind"], "invalid");
    assert_eq!(shown["error"]["revision"], bad.as_str());
    let out = assert_cmd::Command::cargo_bin("berth")
        .unwrap()
        .args(["status", "--applyset", "berth-watch"])
        .arg("--applyset-namespace")
        .arg(&remote.set_ns)
        .arg("--kubeconfig")
        .arg(cp.kubeconfig_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("last applied: {}", &good[..12])),
        "{text}"
    );
    assert!(text.contains("error:        invalid"), "{text}");
    assert!(text.contains("unknown field `replicas`"), "{text}");

    // The next valid commit applies, prune included, and clears the error.
    let text = repository(&remote.ns, "fixed");
    remote.write(&text[..text.rfind("---").unwrap()]);
    let fixed = remote.commit("fix it");
    eventually(Duration::from_secs(10), "the fix to be applied", || async {
        greeting(&client, &remote.ns).await.as_deref() == Some("fixed")
    })
    .await;
    eventually(Duration::from_secs(5), "web to be pruned", || async {
        replicas(&client, &remote.ns, "web").await.is_none()
    })
    .await;
    watch.applied(&fixed).await;
    let status = watch.running().shared.status();
    assert!(status.error.is_none(), "{:?}", status.error);
    let (addr, path) = watch.url("/metrics");
    let metrics = http(&addr, "GET", &path, &[], "").await.1;
    assert!(
        metrics.contains("berth_reconciles_total{result=\"invalid\"} 1"),
        "{metrics}"
    );
    watch.stop().await;
}

/// A new ed25519 key pair made by ssh-keygen: the private key's file and the public line.
fn ssh_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .output()
        .expect("running ssh-keygen (openssh-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_string())
}

#[tokio::test]
async fn only_a_head_signed_by_an_allowed_key_is_applied() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    // The first commit (made by Remote::new) is unsigned.
    let remote = Remote::new("signed");
    let first = git(&remote.work(), &["rev-parse", "HEAD"]);
    let keys = remote.dir.path();
    let (alice, alice_pub) = ssh_key(keys, "alice");
    let (bob, bob_pub) = ssh_key(keys, "bob");
    let (mallory, mallory_pub) = ssh_key(keys, "mallory");
    // Bob's key is listed, but not for commits.
    let allowed = keys.join("allowed_signers");
    std::fs::write(
        &allowed,
        format!(
            "# who may change the platform\nalice@example.com {alice_pub}\n\
             bob@example.com namespaces=\"file\" {bob_pub}\n"
        ),
    )
    .unwrap();
    // The Events of the first refusal need the ApplySet's namespace, which an apply would
    // make: make it now.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": remote.set_ns}})).unwrap(),
        )
        .await
        .unwrap();

    // Without the file, berth watch does not start.
    let mut config = remote.config("signed", Duration::from_millis(300));
    config.verify_commits = Some(berth::source::SignaturePolicy {
        allowed_signers: keys.join("nowhere"),
        signer_must_be_committer: false,
    });
    let err = berth::reconcile::start(config, kube_config(&cp).await, CancellationToken::new())
        .await
        .err()
        .expect("no allowed signers, no start");
    assert!(
        format!("{err:#}").contains("reading the allowed signers file"),
        "{err:#}"
    );

    let mut config = remote.config("signed", Duration::from_millis(300));
    config.verify_commits = Some(berth::source::SignaturePolicy {
        allowed_signers: allowed.clone(),
        signer_must_be_committer: false,
    });
    let watch = InProcess::start(&cp, config).await;
    let refusal = |commit: String, why: &'static str| {
        let watch = &watch;
        async move {
            eventually(
                Duration::from_secs(10),
                &format!("{commit} to be refused: {why}"),
                || async {
                    watch.running().shared.status().error.is_some_and(|e| {
                        e.kind == "unverified"
                            && e.revision.as_deref() == Some(commit.as_str())
                            && e.message.contains(why)
                    })
                },
            )
            .await;
        }
    };

    // 1. An unsigned head with nothing applied yet: nothing is applied at all.
    refusal(first.clone(), "(it has no signature)").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(replicas(&client, &remote.ns, "etl").await, None);
    assert!(watch.running().shared.status().last_applied.is_none());

    // 2. Signed by alice: applied, and the status says who signed it.
    remote.write(&repository(&remote.ns, "signed"));
    let good = remote.commit_signed("signed by alice", Some(&alice));
    watch.applied(&good).await;
    assert_eq!(
        greeting(&client, &remote.ns).await.as_deref(),
        Some("signed")
    );
    let status = watch.running().shared.status();
    assert!(status.error.is_none(), "{:?}", status.error);
    let signer = status.last_applied.unwrap().signer.unwrap();
    assert!(
        signer.starts_with("alice@example.com (ssh-ed25519 SHA256:"),
        "{signer}"
    );

    // 3. Unsigned, signed by a stranger, signed by a key that may not sign commits: each
    // is refused, and alice's revision stays in force.
    for (greeting_text, key, why) in [
        ("unsigned", None, "(it has no signature)"),
        ("stranger", Some(&mallory), "allowed_signers does not list)"),
        (
            "files only",
            Some(&bob),
            "of bob@example.com may not sign for `git`",
        ),
    ] {
        remote.write(&repository(&remote.ns, greeting_text));
        let bad = remote.commit_signed(greeting_text, key.map(PathBuf::as_path));
        refusal(bad.clone(), why).await;
        let status = watch.running().shared.status();
        assert_eq!(status.last_applied.as_ref().unwrap().revision, good);
        assert_eq!(status.last_seen.as_ref().unwrap().revision, bad);
    }
    // Several polls later: the cluster still holds alice's revision.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        greeting(&client, &remote.ns).await.as_deref(),
        Some("signed")
    );
    let bob_commit = git(&remote.work(), &["rev-parse", "HEAD"]);

    // Reported once per refused revision, as an invalid one is: an Event each (the first
    // head's too), the metric, `berth status`, the status page.
    let reported = events(&client, &remote.set_ns, "UnverifiedRevision").await;
    assert_eq!(reported.len(), 4, "{reported:?}");
    for why in [
        "(it has no signature)",
        "(it is signed by ssh-ed25519 key SHA256:",
        "may not sign for `git`",
    ] {
        assert!(
            reported.iter().any(|m| m.contains(why)
                && m.contains("is not signed by an allowed key")
                && m.ends_with("the last good revision stays in force")),
            "{why}: {reported:?}"
        );
    }
    let (addr, path) = watch.url("/metrics");
    let metrics = http(&addr, "GET", &path, &[], "").await.1;
    assert!(
        metrics.contains("berth_reconciles_total{result=\"unverified\"} 4"),
        "{metrics}"
    );
    let page = http(&addr, "GET", "/", &[], "").await.1;
    assert!(page.contains("Error: unverified"), "{page}");
    assert!(page.contains("signed by alice@example.com"), "{page}");
    let status = |format: &'static str| {
        let out = assert_cmd::Command::cargo_bin("berth")
            .unwrap()
            .args(["status", "--format", format, "--applyset", "berth-watch"])
            .arg("--applyset-namespace")
            .arg(&remote.set_ns)
            .arg("--kubeconfig")
            .arg(cp.kubeconfig_path())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = status("text");
    assert!(
        text.contains(&format!(
            "error:        unverified at {}",
            &bob_commit[..12]
        )),
        "{text}"
    );
    assert!(text.contains("may not sign for `git`"), "{text}");
    assert!(text.contains("signed by:    alice@example.com"), "{text}");
    let shown: Value = serde_json::from_str(&status("json")).unwrap();
    assert_eq!(shown["lastApplied"]["revision"], good.as_str());
    assert_eq!(shown["error"]["kind"], "unverified");
    // No key material anywhere people look: keys go by their fingerprints.
    for public in [&alice_pub, &bob_pub, &mallory_pub] {
        let base64 = public.split(' ').nth(1).unwrap();
        for shown in [&text, &page, &reported.join("\n")] {
            assert!(!shown.contains(base64), "a public key is shown: {shown}");
        }
    }

    // 4. The administrators let bob sign commits: the refused head is checked again at the
    // next fetch, without a new commit, and applied.
    std::fs::write(
        &allowed,
        format!("alice@example.com {alice_pub}\nbob@example.com {bob_pub}\n"),
    )
    .unwrap();
    watch.applied(&bob_commit).await;
    assert_eq!(
        greeting(&client, &remote.ns).await.as_deref(),
        Some("files only")
    );
    let status = watch.running().shared.status();
    assert!(status.error.is_none(), "{:?}", status.error);
    for revision in [status.last_applied, status.last_seen] {
        let revision = revision.unwrap();
        assert_eq!(revision.revision, bob_commit);
        assert!(
            revision
                .signer
                .as_deref()
                .is_some_and(|s| s.starts_with("bob@example.com (ssh-ed25519 SHA256:")),
            "{revision:?}"
        );
    }
    watch.stop().await;
}

#[tokio::test]
async fn only_the_leader_writes_and_a_standby_takes_over() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let remote = Remote::new("leader");
    // The ApplySet namespace must exist for the leader Lease.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": remote.set_ns}})).unwrap(),
        )
        .await
        .unwrap();
    let lease_duration = Duration::from_secs(2);
    let config = |identity: &str| {
        let mut config = remote.config(identity, Duration::from_millis(300));
        config.leader = Some(LeaderConfig {
            namespace: remote.set_ns.clone(),
            name: "berth-watch-leader".into(),
            identity: identity.into(),
            lease_duration,
        });
        config
    };
    let a = InProcess::start(&cp, config("a")).await;
    eventually(Duration::from_secs(20), "a to lead and apply", || async {
        a.running().shared.is_leader() && greeting(&client, &remote.ns).await.is_some()
    })
    .await;
    let b = InProcess::start(&cp, config("b")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!b.running().shared.is_leader());
    remote.write(&repository(&remote.ns, "two"));
    remote.commit("change while a leads");
    eventually(Duration::from_secs(10), "the change", || async {
        greeting(&client, &remote.ns).await.as_deref() == Some("two")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(a.writes() > 0);
    assert_eq!(
        b.writes(),
        0,
        "the standby wrote: {:?}",
        b.running().shared.api_requests()
    );
    // The standby did fetch (it knows the revision), it just did not write.
    assert!(b.running().shared.status().last_seen.is_some());

    // Stop the leader: it releases the Lease and the standby takes over at once.
    let stopped = Instant::now();
    a.stop().await;
    let took = eventually(lease_duration * 2, "b to take over", || async {
        b.running().shared.is_leader()
    })
    .await;
    eprintln!(
        "measured: handover after a graceful stop in {:?} (lease duration {lease_duration:?})",
        stopped.elapsed()
    );
    assert!(took < lease_duration);
    remote.write(&repository(&remote.ns, "three"));
    remote.commit("change while b leads");
    eventually(Duration::from_secs(10), "b to apply", || async {
        greeting(&client, &remote.ns).await.as_deref() == Some("three")
    })
    .await;
    assert!(b.writes() > 0);
    let lease: Api<Lease> = Api::namespaced(client.clone(), &remote.set_ns);
    let lease = lease.get("berth-watch-leader").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("b"));
    b.stop().await;
}

#[tokio::test]
async fn drift_is_healed_and_an_idle_workspace_is_suspended_until_woken() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let remote = Remote::new("drift");
    let mut config = remote.config("drift", Duration::from_millis(300));
    let drift = Duration::from_secs(1);
    config.drift_interval = drift;
    let watch = InProcess::start(&cp, config).await;
    watch
        .applied(&git(&remote.work(), &["rev-parse", "HEAD"]))
        .await;
    assert_eq!(replicas(&client, &remote.ns, "web").await, Some(1));

    // A live edit of a field berth owns is healed by the drift check.
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &remote.ns);
    sts.patch(
        "web",
        &PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .unwrap();
    let took = eventually(drift * 3, "the drift to be healed", || async {
        replicas(&client, &remote.ns, "web").await == Some(1)
    })
    .await;
    eprintln!("measured: drift healed after {took:?} (drift interval {drift:?})");
    // The Event follows the apply.
    eventually(
        Duration::from_secs(3),
        "a DriftHealed Event naming web",
        || async {
            events(&client, &remote.set_ns, "DriftHealed")
                .await
                .iter()
                .any(|m| m.contains("StatefulSet/") && m.contains("/web"))
        },
    )
    .await;

    // The workspace's activity Lease: rendered by berth, or (before the render had it)
    // made here as berth would.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &remote.ns);
    if leases.get_opt("etl-activity").await.unwrap().is_none() {
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": "etl-activity", "labels": {
                "applyset.kubernetes.io/part-of": remote.applyset().id(),
                "app.kubernetes.io/managed-by": "berth"}},
            "spec": {"holderIdentity": "etl"},
        }))
        .unwrap();
        leases.create(&PostParams::default(), &lease).await.unwrap();
    }
    // The workspace's activity agent (its sidecar; the test writes what it would) reports,
    // with a fresh heartbeat, that it was last active long ago (idleSeconds is 60).
    let past = "2020-01-01T00:00:00.000000Z";
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    leases
        .patch(
            "etl-activity",
            &PatchParams {
                field_manager: Some("berth-activity-agent".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({
                "metadata": {"annotations": {"berth/agent-heartbeat": now}},
                "spec": {"renewTime": past},
            })),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "etl to be suspended", || async {
        replicas(&client, &remote.ns, "etl").await == Some(0)
    })
    .await;
    let live = sts.get("etl").await.unwrap();
    assert_eq!(
        live.metadata
            .annotations
            .unwrap()
            .get("berth/idle-since")
            .map(String::as_str),
        Some("2020-01-01T00:00:00Z")
    );
    let state = |name: &str| {
        watch
            .running()
            .shared
            .status()
            .workspaces
            .into_iter()
            .find(|w| w.name == name)
            .map(|w| (w.state, w.reason.unwrap_or_default()))
    };
    // The status and Event follow the apply.
    eventually(
        Duration::from_secs(3),
        "the status to show etl suspended",
        || async { state("etl").is_some_and(|(s, _)| s == "suspended") },
    )
    .await;
    let (s, reason) = state("etl").unwrap();
    assert_eq!(s, "suspended");
    assert!(reason.starts_with("idle since"), "{reason}");
    eventually(Duration::from_secs(3), "a Suspended Event", || async {
        !events(&client, &remote.set_ns, "Suspended")
            .await
            .is_empty()
    })
    .await;
    // Suspension is desired state, not drift: drift checks leave it at 0 and report nothing.
    let healed_before = events(&client, &remote.set_ns, "DriftHealed").await.len();
    tokio::time::sleep(drift * 2 + Duration::from_millis(500)).await;
    assert_eq!(replicas(&client, &remote.ns, "etl").await, Some(0));
    assert_eq!(
        events(&client, &remote.set_ns, "DriftHealed").await.len(),
        healed_before
    );
    // The workspace's renewTime is its own: berth's applies did not take it over.
    let lease = leases.get("etl-activity").await.unwrap();
    let owners: Vec<String> = lease
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:renewTime").is_some())
        })
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(owners, ["berth-activity-agent"]);

    // A `when-idle` restart waits for idleness: etl is idle, so it is applied now.
    let hash = |s: StatefulSet| {
        s.spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()["berth/env-hash"]
            .clone()
    };
    let before = hash(sts.get("etl").await.unwrap());
    remote.write(&repository(&remote.ns, "while idle"));
    remote.commit("env change while etl is idle");
    eventually(
        Duration::from_secs(5),
        "etl's restart while idle",
        || async { hash(sts.get("etl").await.unwrap()) != before },
    )
    .await;
    assert_eq!(replicas(&client, &remote.ns, "etl").await, Some(0));

    // `berth wake` renews the Lease and scales it back up at once.
    let out = assert_cmd::Command::cargo_bin("berth")
        .unwrap()
        .args(["wake", "etl"])
        .arg(remote.work())
        .args(["--applyset", "berth-watch", "--applyset-namespace"])
        .arg(&remote.set_ns)
        .arg("--kubeconfig")
        .arg(cp.kubeconfig_path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "woken" means wake itself applied the scale-up (it says so only then). A drift cycle
    // planned just before the renewal may still write 0 once; the next cycle fixes that.
    assert!(String::from_utf8_lossy(&out.stdout).contains("woken"));
    eventually(Duration::from_secs(3), "etl to be up", || async {
        replicas(&client, &remote.ns, "etl").await == Some(1)
    })
    .await;
    let renewed = leases
        .get("etl-activity")
        .await
        .unwrap()
        .spec
        .unwrap()
        .renew_time
        .unwrap();
    assert!(renewed.0.as_second() > k8s_openapi::jiff::Timestamp::now().as_second() - 60);
    // …and the reconciler agrees: it stays up, and the status says it is no longer idle.
    eventually(
        Duration::from_secs(5),
        "the status to show etl awake",
        || async { state("etl").is_some_and(|(s, _)| s != "suspended") },
    )
    .await;
    tokio::time::sleep(drift + Duration::from_millis(500)).await;
    assert_eq!(replicas(&client, &remote.ns, "etl").await, Some(1));
    assert!(!events(&client, &remote.set_ns, "Resumed").await.is_empty());
    watch.stop().await;
}

/// The full control plane's deadline for pods to come and go.
const PODS: Duration = Duration::from_secs(120);

/// The pod UID and the StatefulSet generation of each workspace of `ns`, once everything
/// there has rolled out.
async fn running_workspaces(
    client: &kube::Client,
    ns: &str,
) -> std::collections::BTreeMap<String, (String, i64)> {
    let pods = support::wait_rolled_out(client, ns, PODS).await;
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let mut out = std::collections::BTreeMap::new();
    for s in sts.list(&ListParams::default()).await.unwrap().items {
        let name = s.metadata.name.clone().unwrap();
        let uid = pods
            .get(&format!("{name}-0"))
            .map(support::uid)
            .unwrap_or_default();
        out.insert(name, (uid, s.metadata.generation.unwrap()));
    }
    out
}

/// The reconciler is the cluster's steady hand: stopping it and starting it again, and a
/// leadership change to a standby, apply and heal as usual but replace no pod (every pod
/// keeps its UID, every StatefulSet its generation).
#[tokio::test]
async fn a_reconciler_restart_or_leader_change_replaces_no_pod() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let remote = Remote::new("steady");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": remote.set_ns}})).unwrap(),
        )
        .await
        .unwrap();
    let head = git(&remote.work(), &["rev-parse", "HEAD"]);
    let config = |identity: &str| {
        let mut config = remote.config(identity, Duration::from_millis(300));
        config.drift_interval = Duration::from_secs(1);
        config.leader = Some(LeaderConfig {
            namespace: remote.set_ns.clone(),
            name: "berth-watch-leader".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(2),
        });
        config
    };
    let a = InProcess::start(&cp, config("a")).await;
    a.applied(&head).await;
    let before = running_workspaces(&client, &remote.ns).await;
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        ["etl", "web"],
        "{before:?}"
    );
    assert!(
        before.values().all(|(uid, _)| !uid.is_empty()),
        "{before:?}"
    );

    // A restart: the same reconciler stops and starts again (its git cache kept), plans the
    // same revision against the cluster and runs a few drift checks.
    a.stop().await;
    let a = InProcess::start(&cp, config("a")).await;
    a.applied(&head).await;
    // It has looked at the cluster (planned), and had time for a few drift checks.
    eventually(
        Duration::from_secs(20),
        "the restarted reconciler to plan",
        || async {
            a.running()
                .shared
                .api_requests()
                .get("LIST")
                .is_some_and(|n| *n > 0)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        running_workspaces(&client, &remote.ns).await,
        before,
        "a reconciler restart replaced a pod"
    );

    // A leader change: a standby takes over when the leader stops, and applies.
    let b = InProcess::start(&cp, config("b")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!b.running().shared.is_leader());
    a.stop().await;
    eventually(Duration::from_secs(10), "b to take over", || async {
        b.running().shared.is_leader()
    })
    .await;
    b.applied(&head).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = b.running().shared.status();
    assert!(status.error.is_none(), "{:?}", status.error);
    assert_eq!(
        running_workspaces(&client, &remote.ns).await,
        before,
        "a leader change replaced a pod"
    );
    b.stop().await;
}

/// Idle suspension where users feel it: the idle workspace's pod really goes away (the
/// StatefulSet controller scales it to 0, kwok deletes the pod), its claim and data stay,
/// the other workspace keeps its pod, and `berth wake` brings a new pod back on the same
/// claim.
///
/// The activity signal is the workspace's Lease `<ws>-activity`: its activity agent renews
/// `spec.renewTime` on activity and the annotation `berth/agent-heartbeat` on every sample
/// (`berth::activity`); `berth wake` renews `renewTime`. Only the step marked ACTIVITY
/// SIGNAL depends on how activity is reported.
#[tokio::test]
async fn an_idle_workspace_pod_goes_away_and_comes_back_on_wake() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let remote = Remote::new("idlepod");
    let mut config = remote.config("idlepod", Duration::from_millis(300));
    config.drift_interval = Duration::from_secs(1);
    let watch = InProcess::start(&cp, config).await;
    watch
        .applied(&git(&remote.work(), &["rev-parse", "HEAD"]))
        .await;
    let before = running_workspaces(&client, &remote.ns).await;
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), &remote.ns);
    let claim = claims.get("data-etl-0").await.unwrap().metadata.uid;
    assert!(claim.is_some());

    // ACTIVITY SIGNAL: the workspace's activity agent (a sidecar: kwok runs no containers,
    // so the test writes what it would) reports, with a fresh heartbeat, that the last
    // activity was long ago (idleSeconds is 60). tests/idle.rs runs the real agent.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &remote.ns);
    eventually(
        Duration::from_secs(10),
        "berth's etl-activity Lease",
        || async { leases.get_opt("etl-activity").await.unwrap().is_some() },
    )
    .await;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    leases
        .patch(
            "etl-activity",
            &PatchParams {
                field_manager: Some("berth-activity-agent".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({
                "metadata": {"annotations": {"berth/agent-heartbeat": now}},
                "spec": {"renewTime": "2020-01-01T00:00:00.000000Z"},
            })),
        )
        .await
        .unwrap();

    support::wait_for(PODS, "etl's pod to go away", || async {
        let pods = support::pods(&client, &remote.ns).await;
        let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &remote.ns);
        let etl = sts.get("etl").await.map_err(|e| e.to_string())?;
        if !pods.contains_key("etl-0") && support::rolled_out(&etl) {
            Ok(())
        } else {
            Err(format!(
                "pods {:?}; {}",
                pods.keys().collect::<Vec<_>>(),
                support::rollout_state(&etl)
            ))
        }
    })
    .await;
    assert_eq!(replicas(&client, &remote.ns, "etl").await, Some(0));
    let pods = support::pods(&client, &remote.ns).await;
    assert_eq!(
        support::uid(&pods["web-0"]),
        before["web"].0,
        "web kept its pod"
    );
    assert_eq!(
        claims.get("data-etl-0").await.unwrap().metadata.uid,
        claim,
        "the idle workspace keeps its claim"
    );

    // `berth wake` brings it back: a new pod, on the same claim.
    let out = assert_cmd::Command::cargo_bin("berth")
        .unwrap()
        .args(["wake", "etl"])
        .arg(remote.work())
        .args(["--applyset", "berth-watch", "--applyset-namespace"])
        .arg(&remote.set_ns)
        .arg("--kubeconfig")
        .arg(cp.kubeconfig_path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = support::wait_for(PODS, "etl's pod to come back", || async {
        let pods = support::pods(&client, &remote.ns).await;
        match pods.get("etl-0") {
            Some(p) if support::is_ready(p) => Ok(p.clone()),
            other => Err(format!("{:?}", other.map(|p| p.status.clone()))),
        }
    })
    .await;
    assert_ne!(support::uid(&after), before["etl"].0, "a new pod");
    let volumes: Vec<String> = after
        .spec
        .clone()
        .unwrap()
        .volumes
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.persistent_volume_claim.map(|c| c.claim_name))
        .collect();
    assert_eq!(volumes, ["data-etl-0"]);
    assert_eq!(claims.get("data-etl-0").await.unwrap().metadata.uid, claim);
    // The reconciler keeps it up (a drift cycle later it is still there), and web's pod
    // was never touched.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = running_workspaces(&client, &remote.ns).await;
    assert_eq!(now["etl"].0, support::uid(&after));
    assert_eq!(now["web"], before["web"]);
    watch.stop().await;
}

/// The berth binary, killed if the test ends without stopping it.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_berth_watch_binary_follows_a_folder_and_stops_on_sigterm() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let prefix = support::unique_name("binary");
    let ns = format!("{prefix}-ws");
    let set_ns = format!("{prefix}-berth");
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("repo.yaml"), repository(&ns, "hello")).unwrap();
    let port = free_port().expect("a free port");
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("berth"))
        .arg("watch")
        .arg(folder.path())
        .args([
            "--applyset",
            "berth-folder",
            "--applyset-namespace",
            &set_ns,
        ])
        .arg("--kubeconfig")
        .arg(cp.kubeconfig_path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--interval",
            "60s",
            "--lease-duration",
            "3s",
            "--identity",
            "binary",
        ])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr.reopen().unwrap())
        .spawn()
        .unwrap();
    let mut child = Child(child);
    let addr = format!("127.0.0.1:{port}");
    eventually(Duration::from_secs(20), "the first apply", || async {
        greeting(&client, &ns).await.as_deref() == Some("hello")
    })
    .await;
    let (code, _) = http(&addr, "GET", "/readyz", &[], "").await;
    assert_eq!(code, 200);
    assert_eq!(http(&addr, "GET", "/healthz", &[], "").await.0, 200);

    // A save is live within about a second (the poll interval is a minute).
    let saved = Instant::now();
    std::fs::write(folder.path().join("repo.yaml"), repository(&ns, "saved")).unwrap();
    eventually(Duration::from_secs(10), "the saved change", || async {
        greeting(&client, &ns).await.as_deref() == Some("saved")
    })
    .await;
    let took = saved.elapsed();
    eprintln!("measured: folder save live in {took:?}");
    assert!(took < Duration::from_millis(1500), "live after {took:?}");
    // The cycle is counted once its apply has finished.
    eventually(
        Duration::from_secs(3),
        "the second applied cycle",
        || async {
            http(&addr, "GET", "/metrics", &[], "")
                .await
                .1
                .contains("berth_reconciles_total{result=\"applied\"} 2")
        },
    )
    .await;
    let metrics = http(&addr, "GET", "/metrics", &[], "").await.1;
    assert!(metrics.lines().any(|l| l == "berth_leader 1"), "{metrics}");
    assert!(metrics.contains("client=\"election\""), "{metrics}");

    // SIGTERM: a clean exit that releases the leader Lease.
    let pid = child.0.id() as i32;
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "berth watch ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    let lease: Api<Lease> = Api::namespaced(client.clone(), &set_ns);
    let lease = lease.get("berth-folder-leader").await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity,
        None,
        "released on SIGTERM"
    );
    // Every log line is a JSON object.
    let logs = std::fs::read_to_string(stderr.path()).unwrap();
    assert!(logs.lines().count() > 2, "{logs}");
    for line in logs.lines() {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(value.get("level").is_some(), "{line}");
    }
    assert!(logs.contains("SIGTERM"), "{logs}");
}

/// deploy/ as the API server sees it: the manifests are accepted (server-side dry run), and
/// the ClusterRole is enough for a reconciler running as the ServiceAccount.
#[tokio::test]
async fn deploy_manifests_are_accepted_and_their_rbac_is_enough() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    // The namespace for real (namespaced objects cannot be dry-run in a missing one)…
    let out = cp
        .kubectl()
        .args(["apply", "-f"])
        .arg(deploy.join("00-namespace.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // …then everything as a server-side dry run.
    let out = cp
        .kubectl()
        .args(["apply", "--dry-run=server", "-f"])
        .arg(&deploy)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for kind in [
        "serviceaccount/berth",
        "clusterrole.rbac.authorization.k8s.io/berth-reconciler",
        "deployment.apps/berth",
        "service/berth",
    ] {
        assert!(stdout.contains(kind), "{kind} missing:\n{stdout}");
    }

    // Apply the RBAC for real and run a reconciler with the ServiceAccount's token.
    let out = cp
        .kubectl()
        .args(["apply", "-f"])
        .arg(deploy.join("10-rbac.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cp
        .kubectl()
        .args([
            "create",
            "token",
            "berth",
            "-n",
            "berth-system",
            "--duration",
            "1h",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut config = kube_config(&cp).await;
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    let remote = Remote::new("rbac");
    let mut reconciler = remote.config("rbac", Duration::from_millis(300));
    reconciler.applyset.namespace = "berth-system".into();
    reconciler.applyset.name = format!("berth-{}", remote.ns);
    reconciler.leader = Some(LeaderConfig {
        namespace: "berth-system".into(),
        name: format!("berth-{}-leader", remote.ns),
        identity: "sa".into(),
        lease_duration: Duration::from_secs(3),
    });
    reconciler.drift_interval = Duration::from_secs(1);
    let stop = CancellationToken::new();
    let running = berth::reconcile::start(reconciler, config, stop.clone())
        .await
        .unwrap();
    let client = cp.client().await;
    eventually(
        Duration::from_secs(20),
        "the service account's apply",
        || async {
            greeting(&client, &remote.ns).await.as_deref() == Some("hello")
                && replicas(&client, &remote.ns, "web").await == Some(1)
        },
    )
    .await;
    // A full cycle later (drift check), still no error: status, Events and Leases are
    // within the role too.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = running.shared.status();
    assert!(status.error.is_none(), "{:?}", status.error);
    assert!(status.last_applied.is_some());
    let requests = running.shared.api_requests();
    assert!(writes(&requests) > 0);
    stop.cancel();
    running.wait().await.unwrap();
}

/// Two `berth watch` processes on one folder: the leader is killed outright (no release),
/// and the standby takes over once the Lease has gone unrenewed for its duration.
#[tokio::test]
async fn a_killed_leader_is_replaced_after_the_lease_duration() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let prefix = support::unique_name("kill");
    let ns = format!("{prefix}-ws");
    let set_ns = format!("{prefix}-berth");
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("repo.yaml"), repository(&ns, "hello")).unwrap();
    let lease_duration = Duration::from_secs(2);
    let spawn = |identity: &str, port: u16| {
        let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("berth"))
            .arg("watch")
            .arg(folder.path())
            .args(["--applyset", "berth-kill", "--applyset-namespace", &set_ns])
            .arg("--kubeconfig")
            .arg(cp.kubeconfig_path())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--interval",
                "300ms",
                "--lease-duration",
                "2s",
                "--identity",
                identity,
            ])
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        (Child(child), format!("127.0.0.1:{port}"))
    };
    let leading = |addr: String| async move {
        http(&addr, "GET", "/metrics", &[], "")
            .await
            .1
            .lines()
            .any(|l| l == "berth_leader 1")
    };
    let (a, a_addr) = spawn("a", free_port().expect("a free port"));
    eventually(Duration::from_secs(20), "a to lead and apply", || async {
        leading(a_addr.clone()).await && greeting(&client, &ns).await.as_deref() == Some("hello")
    })
    .await;
    let (_b, b_addr) = spawn("b", free_port().expect("a free port"));
    eventually(Duration::from_secs(10), "b to be ready", || async {
        http(&b_addr, "GET", "/readyz", &[], "").await.0 == 200
    })
    .await;
    assert!(!leading(b_addr.clone()).await);

    let mut a = a;
    a.0.kill().unwrap();
    a.0.wait().unwrap();
    let killed = Instant::now();
    let took = eventually(lease_duration * 3, "b to take over", || async {
        leading(b_addr.clone()).await
    })
    .await;
    eprintln!(
        "measured: handover after the leader was killed in {took:?} (lease duration {lease_duration:?})"
    );
    // Taken over once the record went unrenewed for a lease duration, as seen by b: at
    // most a lease duration plus two retry periods (lease/5 each) after the kill.
    assert!(took >= lease_duration / 2, "taken over too early: {took:?}");
    assert!(
        took <= lease_duration + lease_duration * 2 / 5 + Duration::from_millis(500),
        "{took:?}"
    );
    std::fs::write(folder.path().join("repo.yaml"), repository(&ns, "after")).unwrap();
    eventually(Duration::from_secs(5), "b to apply", || async {
        greeting(&client, &ns).await.as_deref() == Some("after")
    })
    .await;
    let _ = killed;
}
