//! `berth watch` against a real git host: Gitea (tests/support/gitea.rs) and the full
//! control plane. berth follows a repository on Gitea over HTTP with a token (from a file
//! or a Kubernetes Secret, read at every fetch) and over Gitea's SSH server with a key (the
//! host key checked against known_hosts), Gitea's own
//! push webhook (signed with `X-Gitea-Signature`) makes it fetch, and berth's commit
//! statuses are read back through Gitea's API: pending then success for a valid push,
//! failure with the diagnostic for an invalid one (the cluster unchanged), error when the
//! API server cannot be reached, and exactly one final status across a restart mid-apply.

mod support;

use berth::cluster::applyset::ApplySet;
use berth::notify::StatusTarget;
use berth::notify::providers::Host;
use berth::reconcile::{Config, Running};
use berth::source::{GitAuth, GitRef, GitRemote, SecretKey, SourceSpec, TokenSource};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::ControlPlane;
use support::gitea::{GiteaRepo, gitea};
use support::{eventually, wait_for};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "gitea-hook-s3cret";

fn repository(namespace: &str, greeting: &str, workspaces: usize) -> String {
    let mut text = format!(
        "apiVersion: berth/v1alpha1\nkind: Project\nmetadata: {{name: p}}\nspec:\n  namespace: {namespace}\n  \
         image: mageai/mageai:0.9.76\n  env:\n    - {{name: GREETING, value: \"{greeting}\"}}\n"
    );
    for i in 0..workspaces {
        text.push_str(&format!(
            "---\napiVersion: berth/v1alpha1\nkind: Workspace\nmetadata: {{name: ws-{i}}}\nspec:\n  project: p\n"
        ));
    }
    text
}

use support::generated::git;

/// A Gitea repository, a work clone that pushes to it, and the test's namespaces.
struct Case {
    repo: GiteaRepo,
    dir: tempfile::TempDir,
    ns: String,
    set_ns: String,
}

impl Case {
    fn new(test: &str) -> Option<Case> {
        let gitea = gitea()?;
        let prefix = support::unique_name(test);
        let repo = gitea.repository(&prefix);
        let dir = tempfile::tempdir().unwrap();
        let case = Case {
            repo,
            ns: format!("{prefix}-ws"),
            set_ns: format!("{prefix}-berth"),
            dir,
        };
        std::fs::create_dir(case.work()).unwrap();
        git(&case.work(), &["init", "-q"]);
        git(&case.work(), &["checkout", "-q", "-b", "main"]);
        git(
            &case.work(),
            &["remote", "add", "origin", &case.repo.push_url()],
        );
        Some(case)
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// Write repo.yaml, commit and push to Gitea; the commit.
    fn push(&self, text: &str, message: &str) -> String {
        std::fs::write(self.work().join("repo.yaml"), text).unwrap();
        git(&self.work(), &["add", "-A"]);
        git(&self.work(), &["commit", "-q", "-m", message]);
        git(&self.work(), &["push", "-q", "origin", "main"]);
        git(&self.work(), &["rev-parse", "HEAD"])
    }

    fn context(&self) -> String {
        "berth/berth-gitea".into()
    }

    fn config(&self, identity: &str, token_file: &Path) -> Config {
        let gitea = self.repo.gitea;
        let token = TokenSource::File(token_file.to_path_buf());
        let source = SourceSpec::Git {
            remote: GitRemote {
                url: self.repo.clone_url(),
                reference: GitRef::Branch("main".into()),
                subpath: String::new(),
                auth: GitAuth {
                    token: Some(token.clone()),
                    username: Some(support::gitea::USER.into()),
                    ..Default::default()
                },
            },
            cache_dir: self.dir.path().join(format!("cache-{identity}")),
        };
        let applyset = ApplySet {
            name: "berth-gitea".into(),
            namespace: self.set_ns.clone(),
        };
        let mut config = Config::new(source, applyset, identity.into());
        // Long: only Gitea's webhook (or the first fetch) brings a new commit in.
        config.poll_interval = Duration::from_millis(500);
        config.drift_interval = Duration::from_secs(3600);
        config.backoff_base = Duration::from_millis(200);
        config.backoff_max = Duration::from_secs(2);
        config.listen = Some("127.0.0.1:0".parse().unwrap());
        config.webhook_secret = Some(SECRET.into());
        config.notify.status = Some(StatusTarget {
            provider: Arc::from(Host::Gitea.provider(
                &gitea.url,
                &format!("{}/{}", support::gitea::USER, self.repo.name),
            )),
            token,
        });
        config
    }

    async fn states_become(&self, commit: &str, want: &[&str], within: Duration) {
        let context = self.context();
        eventually(
            within,
            &format!("the statuses of {commit} to be {want:?}"),
            || async { self.repo.states(commit, &context) == want },
        )
        .await;
    }
}

/// A chat tool's incoming webhook: every POST's `X-Berth-Signature` and body, answered 200.
type Seen = Arc<std::sync::Mutex<Vec<(String, String)>>>;

async fn chat_receiver() -> (String, Seen) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/chat", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let got = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let got = got.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let header = |name: &str| {
                        head.lines()
                            .filter_map(|l| l.split_once(':'))
                            .find(|(k, _)| k.eq_ignore_ascii_case(name))
                            .map(|(_, v)| v.trim().to_string())
                    };
                    let length: usize = header("content-length")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(0);
                    if body.len() < length {
                        continue;
                    }
                    let signature = header("x-berth-signature").unwrap_or_default();
                    got.lock()
                        .unwrap()
                        .push((signature, body[..length].to_string()));
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
            });
        }
    });
    (url, seen)
}

async fn kube_config(kubeconfig: &Path) -> kube::Config {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap()
}

struct InProcess {
    running: Option<Running>,
    stop: CancellationToken,
}

impl InProcess {
    async fn start(kubeconfig: &Path, config: Config) -> InProcess {
        let stop = CancellationToken::new();
        let running = berth::reconcile::start(config, kube_config(kubeconfig).await, stop.clone())
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

    fn hook_url(&self) -> String {
        format!("http://{}/hooks/git", self.running().addr.unwrap())
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

async fn greeting(cp: &ControlPlane, ns: &str, workspace: &str) -> Option<String> {
    let api: Api<StatefulSet> = Api::namespaced(cp.client().await, ns);
    let sts = api.get_opt(workspace).await.ok()??;
    let value = serde_json::to_value(&sts).ok()?;
    // The env digest annotation changes with GREETING; the env itself is in a ConfigMap.
    value
        .pointer("/spec/template/metadata/annotations")
        .map(|a| a.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_gitea_goes_pending_then_success_and_an_invalid_one_fails() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let Some(case) = Case::new("gitea-push") else {
        return;
    };
    let gitea = case.repo.gitea;
    let first = case.push(&repository(&case.ns, "hello", 2), "first");
    let mut config = case.config("berth-0", &gitea.token_file);
    // Only Gitea's webhook brings later commits in.
    config.poll_interval = Duration::from_secs(3600);
    // The chat webhook too: each final state, signed.
    let (chat_url, chat) = chat_receiver().await;
    config.notify.chat = Some(berth::notify::chat::ChatHook {
        url: chat_url,
        secret: "chat-s3cret".into(),
        source: case.repo.clone_url(),
    });
    let berth = InProcess::start(cp.kubeconfig_path(), config).await;
    case.states_become(&first, &["pending", "success"], Duration::from_secs(60))
        .await;
    let (signature, body) = wait_for(Duration::from_secs(10), "the chat message", || async {
        chat.lock()
            .unwrap()
            .first()
            .cloned()
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    assert_eq!(
        signature,
        berth::reconcile::webhook::github_signature(b"chat-s3cret", body.as_bytes()),
        "the chat message is signed over its body"
    );
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["state"], "success", "{body}");
    assert_eq!(json["revision"], first.as_str(), "{body}");
    assert!(!body.contains(&gitea.token), "no token in the chat message");
    let statuses = case.repo.statuses(&first);
    let page = format!("http://{}/", berth.running().addr.unwrap());
    assert!(
        statuses.iter().all(|s| s.3 == page),
        "every status links the status page {page}: {statuses:?}"
    );
    assert!(
        statuses[1].2.contains("2 created") || statuses[1].2.contains("created"),
        "{statuses:?}"
    );

    // Gitea's own push webhook, signed with X-Gitea-Signature, brings the next commit in.
    case.repo.add_push_hook(&berth.hook_url(), SECRET);
    let before = greeting(&cp, &case.ns, "ws-0").await;
    let pushed = Instant::now();
    let second = case.push(
        &repository(&case.ns, "hi there", 2),
        "second: restarts both",
    );
    case.states_become(&second, &["pending", "success"], Duration::from_secs(60))
        .await;
    let took = pushed.elapsed();
    eprintln!(
        "gitea: push -> success (2 workspaces restarted and Ready) in {:.2}s",
        took.as_secs_f64()
    );
    let after = greeting(&cp, &case.ns, "ws-0").await;
    assert_ne!(before, after, "the second commit restarted ws-0");
    // Success waited for the restarted workspaces: they are rolled out now.
    let api: Api<StatefulSet> = Api::namespaced(cp.client().await, &case.ns);
    for ws in ["ws-0", "ws-1"] {
        let sts = api.get(ws).await.unwrap();
        assert!(
            support::rolled_out(&sts),
            "{ws} is rolled out when success is posted"
        );
    }

    // An invalid commit: failure with its first diagnostic, and nothing changes.
    let broken = repository(&case.ns, "broken", 2).replace("project: p\n", "project: nope\n");
    let third = case.push(&broken, "third: invalid");
    case.states_become(&third, &["failure"], Duration::from_secs(30))
        .await;
    let description = &case.repo.statuses(&third)[0].2;
    assert!(
        description.contains("repo.yaml:"),
        "the failure names the file:line: {description}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        greeting(&cp, &case.ns, "ws-0").await,
        after,
        "an invalid revision changes nothing"
    );
    // Nothing more on the earlier commits, and no second final status anywhere.
    assert_eq!(
        case.repo.states(&second, &case.context()),
        ["pending", "success"]
    );
    berth.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_or_wrongly_signed_gitea_hooks_are_refused() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let Some(case) = Case::new("gitea-refused") else {
        return;
    };
    let first = case.push(&repository(&case.ns, "hello", 1), "first");
    let mut config = case.config("berth-0", &case.repo.gitea.token_file);
    config.poll_interval = Duration::from_secs(3600);
    let berth = InProcess::start(cp.kubeconfig_path(), config).await;
    case.states_become(&first, &["pending", "success"], Duration::from_secs(60))
        .await;
    // A hook with another secret: Gitea signs with it, berth refuses; the commit waits.
    case.repo.add_push_hook(&berth.hook_url(), "not-the-secret");
    let second = case.push(&repository(&case.ns, "unseen", 1), "second");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        case.repo.states(&second, &case.context()).is_empty(),
        "a wrongly signed hook fetched"
    );
    let metrics = berth.running().shared.metrics_text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("berth_webhook_requests_total")
                && l.contains("401")
                && !l.ends_with(" 0")),
        "the refusal is counted: {metrics}"
    );
    berth.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_one_line_and_changes_nothing() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let Some(case) = Case::new("gitea-token") else {
        return;
    };
    case.push(&repository(&case.ns, "hello", 1), "first");
    let wrong = case.dir.path().join("wrong-token");
    std::fs::write(&wrong, "0123456789abcdef0123456789abcdef01234567\n").unwrap();
    let berth = InProcess::start(cp.kubeconfig_path(), case.config("berth-0", &wrong)).await;
    let error = wait_for(Duration::from_secs(30), "the fetch error", || async {
        berth
            .running()
            .shared
            .status()
            .error
            .filter(|e| e.kind == "fetch")
            .ok_or_else(|| "no fetch error yet".to_string())
    })
    .await;
    assert!(!error.message.contains('\n'), "one line: {}", error.message);
    assert!(
        !error.message.contains("0123456789abcdef"),
        "no token: {}",
        error.message
    );
    assert!(
        error.message.contains("refused the token"),
        "{}",
        error.message
    );
    let api: Api<StatefulSet> = Api::namespaced(cp.client().await, &case.ns);
    assert!(
        api.get_opt("ws-0").await.unwrap().is_none(),
        "nothing was applied"
    );
    berth.stop().await;
}

/// The fetch error berth shows once its message contains `want`.
async fn fetch_error(berth: &InProcess, want: &str) -> String {
    wait_for(
        Duration::from_secs(30),
        &format!("a fetch error saying `{want}`"),
        || async {
            berth
                .running()
                .shared
                .status()
                .error
                .filter(|e| e.kind == "fetch" && e.message.contains(want))
                .map(|e| e.message)
                .ok_or_else(|| format!("{:?}", berth.running().shared.status().error))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_a_secret_is_read_at_every_fetch_and_a_missing_one_changes_nothing() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let Some(case) = Case::new("gitea-secret") else {
        return;
    };
    let gitea = case.repo.gitea;
    let first = case.push(&repository(&case.ns, "hello", 1), "first");
    let namespace = cp.namespace("gitea-secret").await;
    let secret = SecretKey {
        namespace: namespace.clone(),
        name: "berth-git".into(),
        key: "token".into(),
    };
    // The git token and the statuses' (which fall back to it, as on the command line).
    let mut config = case.config("berth-0", &gitea.token_file);
    let SourceSpec::Git { remote, .. } = &mut config.source else {
        unreachable!("a git source")
    };
    remote.auth.token = Some(TokenSource::Secret(Box::new(secret.clone())));
    if let Some(status) = config.notify.status.as_mut() {
        status.token = TokenSource::Secret(Box::new(secret.clone()));
    }
    let berth = InProcess::start(cp.kubeconfig_path(), config).await;
    let api: Api<Secret> = Api::namespaced(cp.client().await, &namespace);
    let workspaces: Api<StatefulSet> = Api::namespaced(cp.client().await, &case.ns);
    let wrong = "0123456789abcdef0123456789abcdef01234567";
    let check = |message: &str| {
        assert!(!message.contains('\n'), "one line: {message}");
        assert!(
            !message.contains(wrong) && !message.contains(&gitea.token),
            "no token: {message}"
        );
    };

    // No Secret yet, then one without the key: one line each, naming it; nothing applied.
    let message = fetch_error(&berth, "does not exist").await;
    check(&message);
    assert!(
        message.contains(&format!("the Secret {namespace}/berth-git")),
        "{message}"
    );
    let without_key: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "berth-git"},
        "stringData": {"username": "berth"},
    }))
    .unwrap();
    api.create(&PostParams::default(), &without_key)
        .await
        .unwrap();
    let message = fetch_error(&berth, "has no key `token`").await;
    check(&message);

    // A wrong token: Gitea refuses it, and that is all the line says of it.
    let set_token = |token: &str| {
        let patch = serde_json::json!({"stringData": {"token": format!("{token}\n")}});
        let api = api.clone();
        async move {
            api.patch("berth-git", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    };
    set_token(wrong).await;
    let message = fetch_error(&berth, "refused the token").await;
    check(&message);
    assert!(
        workspaces.get_opt("ws-0").await.unwrap().is_none(),
        "nothing was applied"
    );
    assert!(
        case.repo.states(&first, &case.context()).is_empty(),
        "no status"
    );

    // The Secret rotated to the right token: the next fetch reads it, no restart needed.
    set_token(&gitea.token).await;
    case.states_become(&first, &["pending", "success"], Duration::from_secs(60))
        .await;
    assert!(workspaces.get_opt("ws-0").await.unwrap().is_some());
    assert_eq!(berth.running().shared.status().error.map(|e| e.kind), None);
    berth.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_follows_gitea_over_ssh_with_a_key_and_checks_the_host_key() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let Some(case) = Case::new("gitea-ssh") else {
        return;
    };
    let gitea = case.repo.gitea;
    let Some(ssh) = gitea.ssh() else {
        return;
    };
    let first = case.push(&repository(&case.ns, "hello", 1), "first");
    // berth's key, registered for the user through Gitea's API.
    let key = case.dir.path().join("id_ed25519");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "berth-test", "-f"])
        .arg(&key)
        .output()
        .expect("running ssh-keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    gitea.add_ssh_key(
        &case.repo.name,
        &std::fs::read_to_string(key.with_extension("pub")).unwrap(),
    );
    // First a known_hosts file with another key for the server: refused, nothing applied.
    let known_hosts = case.dir.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!(
            "[127.0.0.1]:{} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n",
            ssh.port
        ),
    )
    .unwrap();
    let mut config = case.config("berth-0", &gitea.token_file);
    let SourceSpec::Git { remote, .. } = &mut config.source else {
        unreachable!("a git source")
    };
    remote.url = case.repo.ssh_url(ssh);
    remote.auth = GitAuth {
        ssh_key: Some(key.clone()),
        known_hosts: Some(known_hosts.clone()),
        ..Default::default()
    };
    let berth = InProcess::start(cp.kubeconfig_path(), config).await;
    let message = fetch_error(&berth, "does not match").await;
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(message.contains("man-in-the-middle"), "{message}");
    let workspaces: Api<StatefulSet> = Api::namespaced(cp.client().await, &case.ns);
    assert!(workspaces.get_opt("ws-0").await.unwrap().is_none());
    // The server's real key (known_hosts is read at every connection): followed over ssh.
    std::fs::copy(&ssh.known_hosts, &known_hosts).unwrap();
    case.states_become(&first, &["pending", "success"], Duration::from_secs(60))
        .await;
    let second = case.push(&repository(&case.ns, "over ssh", 1), "second");
    case.states_become(&second, &["pending", "success"], Duration::from_secs(60))
        .await;
    assert_eq!(
        berth
            .running()
            .shared
            .status()
            .last_applied
            .map(|a| a.revision),
        Some(second.clone())
    );
    berth.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_is_an_error_then_success() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let Some(case) = Case::new("gitea-outage") else {
        return;
    };
    let proxy = support::outage::Proxy::start(&cp).await;
    let kubeconfig = proxy.kubeconfig(&cp, case.dir.path());
    let first = case.push(&repository(&case.ns, "hello", 1), "first");
    let berth = InProcess::start(
        &kubeconfig,
        case.config("berth-0", &case.repo.gitea.token_file),
    )
    .await;
    case.states_become(&first, &["pending", "success"], Duration::from_secs(60))
        .await;
    proxy.cut();
    let second = case.push(&repository(&case.ns, "while down", 1), "second");
    case.states_become(&second, &["error"], Duration::from_secs(60))
        .await;
    let description = &case.repo.statuses(&second)[0].2;
    assert!(
        description.contains("API server"),
        "the error says why: {description}"
    );
    // When the API server is back, the revision is applied and turns green.
    proxy.heal();
    case.states_become(
        &second,
        &["error", "pending", "success"],
        Duration::from_secs(90),
    )
    .await;
    berth.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_apply_ends_in_exactly_one_final_status() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let Some(case) = Case::new("gitea-restart") else {
        return;
    };
    // Big enough that the apply is still going when berth is stopped.
    let commit = case.push(&repository(&case.ns, "hello", 120), "first: 120 workspaces");
    let mut config = case.config("berth-a", &case.repo.gitea.token_file);
    config.shutdown_grace = Duration::from_millis(1);
    let a = InProcess::start(cp.kubeconfig_path(), config).await;
    case.states_become(&commit, &["pending"], Duration::from_secs(60))
        .await;
    let applied_by_a = a.running().shared.status().last_applied.is_some();
    a.stop().await;
    assert!(
        !applied_by_a,
        "berth A finished its apply before it was stopped: make the repository bigger"
    );
    assert_eq!(case.repo.states(&commit, &case.context()), ["pending"]);
    let b = InProcess::start(
        cp.kubeconfig_path(),
        case.config("berth-b", &case.repo.gitea.token_file),
    )
    .await;
    case.states_become(&commit, &["pending", "success"], Duration::from_secs(120))
        .await;
    // And it stays that way: no second final status, no second pending.
    tokio::time::sleep(Duration::from_secs(3)).await;
    b.stop().await;
    let c = InProcess::start(
        cp.kubeconfig_path(),
        case.config("berth-c", &case.repo.gitea.token_file),
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "berth C to see the revision",
        || async { c.running().shared.status().last_applied.is_some() },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.stop().await;
    assert_eq!(
        case.repo.states(&commit, &case.context()),
        ["pending", "success"]
    );
}

/// BENCHMARKS.md: push → `success` visible on the commit through Gitea's API, at
/// `BERTH_BENCH_WORKSPACES` (default 1,000) workspaces: the first push creates them all,
/// the second changes the project's environment and restarts every one (success once all
/// are Ready again). Run with
/// `cargo test --release --test gitea -- --ignored --nocapture push_to_success_bench`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: minutes at 1,000 workspaces"]
async fn push_to_success_bench() {
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let Some(case) = Case::new("gitea-bench") else {
        return;
    };
    let n: usize = std::env::var("BERTH_BENCH_WORKSPACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut config = case.config("berth-bench", &case.repo.gitea.token_file);
    config.poll_interval = Duration::from_secs(3600);
    config.cycle_timeout = Duration::from_secs(1800);
    let first = case.push(&repository(&case.ns, "hello", 1), "warm-up: one workspace");
    let berth = InProcess::start(cp.kubeconfig_path(), config).await;
    case.states_become(&first, &["pending", "success"], Duration::from_secs(60))
        .await;
    case.repo.add_push_hook(&berth.hook_url(), SECRET);
    for (label, greeting) in [("create", "hello"), ("restart all", "changed")] {
        let pushed = Instant::now();
        let commit = case.push(&repository(&case.ns, greeting, n), label);
        let pending = std::sync::Mutex::new(None);
        let context = case.context();
        eventually(Duration::from_secs(3600), "success", || async {
            let states = case.repo.states(&commit, &context);
            let mut first_seen = pending.lock().unwrap();
            if first_seen.is_none() && !states.is_empty() {
                *first_seen = Some(pushed.elapsed());
            }
            states.last().map(String::as_str) == Some("success")
        })
        .await;
        eprintln!(
            "BENCH gitea {n} workspaces, {label}: push -> pending {:.1}s, push -> success {:.1}s",
            pending.lock().unwrap().unwrap_or_default().as_secs_f64(),
            pushed.elapsed().as_secs_f64()
        );
    }
    berth.stop().await;
}
