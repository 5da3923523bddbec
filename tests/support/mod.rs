//! Test support: a real control plane for integration tests (envtest-style), in two kinds.
//!
//! Use it from an integration test file with `mod support;`:
//!
//! ```ignore
//! mod support;
//!
//! #[tokio::test]
//! async fn my_test() {
//!     let Some(cp) = support::full_control_plane().await else { return };
//!     let client = cp.client().await;
//!     let ns = cp.namespace("my-test").await;
//!     // ... talk to a real cluster in namespace `ns` ...
//! }
//! ```
//!
//! What you get, and what you do not:
//!
//! * ONE control plane per test binary, started lazily by the first test that asks for it
//!   and shared by every test of that binary. Tests stay apart by working in their own
//!   namespaces ([`ControlPlane::namespace`]); etcd lives in a temporary folder that is
//!   thrown away when the test binary exits.
//! * Two kinds, chosen per test file (a binary that asks for both panics):
//!   - [`control_plane`], **plain**: kube-apiserver and etcd only. Storage, validation,
//!     defaulting, admission, server-side apply, RBAC, dry-run, watches; no Pod ever exists,
//!     no status is written, nothing is garbage-collected, a deleted namespace stays
//!     `Terminating`. Starts in about 3 s.
//!   - [`full_control_plane`], **full**: the same plus kube-controller-manager (every
//!     default controller), kube-scheduler, two simulated nodes played by kwok (pods
//!     become Running and Ready, Job pods complete, deleted pods go away) and a small
//!     volume provisioner ([`provisioner`]) so volume claims bind. StatefulSets roll out,
//!     namespaces are finalized, owner references cascade. See `cluster.yaml`.
//! * Two identities: an admin (`system:masters`, [`ControlPlane::client`]) and a user with
//!   no RBAC rights at all ([`ControlPlane::unprivileged_client`], user
//!   [`UNPRIVILEGED_USER`]), for tests of `403 Forbidden`.
//! * The binaries come from `$KUBEBUILDER_ASSETS`, else from `scripts/envtest path` (which
//!   builds them once into a cache folder). When they cannot be had, tests are skipped with
//!   a loud `SKIPPED: no control plane` on stderr, except under `CI=true`, where that is a
//!   failure.
//! * No orphans: every process is started from a thread that lives as long as the test
//!   binary, with `PR_SET_PDEATHSIG=SIGKILL`, so they die with the test binary however it
//!   ends (normal exit, panic, signal). A small reaper process removes the temporary folder
//!   once the test binary is gone.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::future::Future;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub mod browser;
pub mod generated;
pub mod gitea;
pub mod identity;
pub mod mage;
pub mod oracle;
pub mod outage;
pub mod provisioner;
pub mod repo;
pub mod yaml_values;
pub mod zenml;

/// The user name of the identity without any RBAC rights.
pub const UNPRIVILEGED_USER: &str = "berth-nobody";
/// The user name of the admin identity (group `system:masters`).
pub const ADMIN_USER: &str = "admin";

const ADMIN_CONTEXT: &str = "envtest";
const UNPRIVILEGED_CONTEXT: &str = "envtest-nobody";

/// How long the control plane may take to be ready: kube-apiserver's `/readyz` ok and, for
/// the full kind, the nodes Ready and the controllers working (override with
/// `BERTH_ENVTEST_START_TIMEOUT`, in seconds).
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(90);

/// The simulated nodes and the default StorageClass of the full control plane (shared with
/// `scripts/envtest shell`).
pub const CLUSTER_YAML: &str = "tests/support/cluster.yaml";
/// The names of the nodes in [`CLUSTER_YAML`].
pub const NODES: [&str; 2] = ["kwok-node-0", "kwok-node-1"];

/// Which control plane a test file runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// kube-apiserver + etcd.
    Plain,
    /// + kube-controller-manager, kube-scheduler, kwok nodes and a volume provisioner.
    Full,
}

impl Kind {
    fn binaries(self) -> &'static [&'static str] {
        match self {
            Kind::Plain => &["kube-apiserver", "etcd", "kubectl"],
            Kind::Full => &[
                "kube-apiserver",
                "etcd",
                "kubectl",
                "kube-controller-manager",
                "kube-scheduler",
                "kwok",
            ],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::Full => "full",
        }
    }
}

/// A handle on the shared control plane of this test binary. Cheap to copy.
#[derive(Clone, Copy, Debug)]
pub struct ControlPlane {
    inner: &'static Running,
}

#[derive(Debug)]
struct Running {
    kind: Kind,
    /// Temporary folder with certificates, kubeconfigs, etcd data and logs.
    root: PathBuf,
    assets: PathBuf,
    server: String,
    kubeconfig: PathBuf,
    unprivileged_kubeconfig: PathBuf,
    apiserver_log: PathBuf,
    etcd_log: PathBuf,
    /// The log of each process: etcd, kube-apiserver and, full, the controllers and kwok.
    logs: Vec<(&'static str, PathBuf)>,
    started_in: Duration,
}

enum State {
    Running(Running),
    Skipped(String),
    Failed(String),
}

static STATE: OnceLock<(Kind, State)> = OnceLock::new();

/// Returns the plain control plane (kube-apiserver + etcd) of this test binary, starting it
/// on first use.
///
/// Returns `None` (after printing `SKIPPED: no control plane` to stderr) when the binaries
/// cannot be found or built, unless `CI=true`, where it panics. Panics when the binaries
/// are there but the control plane fails to start, with the tail of its logs.
pub async fn control_plane() -> Option<ControlPlane> {
    control_plane_of(Kind::Plain).await
}

/// Returns the full control plane of this test binary (the plain one plus
/// kube-controller-manager, kube-scheduler, two kwok nodes and a volume provisioner),
/// starting it on first use. Skips and fails as [`control_plane`] does.
pub async fn full_control_plane() -> Option<ControlPlane> {
    control_plane_of(Kind::Full).await
}

async fn control_plane_of(kind: Kind) -> Option<ControlPlane> {
    // Starting may block for a while (and for a long while when `scripts/envtest path`
    // has to build the binaries): keep it off the test's async runtime.
    let (started, state) =
        tokio::task::spawn_blocking(move || STATE.get_or_init(|| (kind, start(kind))))
            .await
            .expect("control plane start-up thread panicked");
    assert_eq!(
        *started,
        kind,
        "this test binary started a {} control plane and then asked for a {} one: \
         use one kind per test file",
        started.name(),
        kind.name()
    );
    match state {
        State::Running(running) => Some(ControlPlane { inner: running }),
        State::Skipped(why) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("no control plane, and CI=true makes that a failure: {why}");
            }
            static BANNER: std::sync::Once = std::sync::Once::new();
            BANNER.call_once(|| {
                say(&format!(
                    "\n************************************************************\n\
                     SKIPPED: no control plane: {why}\n\
                     (run scripts/envtest path, or set KUBEBUILDER_ASSETS;\n\
                     under CI=true this is a failure)\n\
                     ************************************************************"
                ));
            });
            let test = std::thread::current().name().unwrap_or("?").to_string();
            say(&format!("SKIPPED: no control plane: {test}"));
            None
        }
        State::Failed(why) => panic!("control plane failed to start: {why}"),
    }
}

impl ControlPlane {
    /// Which kind this is.
    pub fn kind(&self) -> Kind {
        self.inner.kind
    }

    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.inner.server
    }

    /// A kubeconfig file for the admin identity (current context `envtest`; the context
    /// `envtest-nobody` is the unprivileged identity). For `berth` or kubectl subprocesses.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.inner.kubeconfig
    }

    /// A kubeconfig file whose current context is the identity without RBAC rights.
    pub fn unprivileged_kubeconfig_path(&self) -> &Path {
        &self.inner.unprivileged_kubeconfig
    }

    /// The folder holding the binaries.
    pub fn assets_dir(&self) -> &Path {
        &self.inner.assets
    }

    /// How long it took this test binary to start the control plane.
    pub fn started_in(&self) -> Duration {
        self.inner.started_in
    }

    /// The kube-apiserver log file (useful in a failing test's message).
    pub fn apiserver_log(&self) -> &Path {
        &self.inner.apiserver_log
    }

    /// The last `lines` lines of every process's log, for a failing test's message.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for (name, path) in &self.inner.logs {
            let _ = write!(
                out,
                "\n--- last lines of {name} ({}) ---\n{}",
                path.display(),
                tail(path, lines)
            );
        }
        out
    }

    /// A client for the admin identity (`system:masters`).
    ///
    /// Build one per test: a `kube::Client` belongs to the tokio runtime it was made in,
    /// and every `#[tokio::test]` has a runtime of its own.
    pub async fn client(&self) -> Client {
        self.client_for_context(ADMIN_CONTEXT).await
    }

    /// A client for [`UNPRIVILEGED_USER`], an authenticated user with no RBAC rights
    /// beyond discovery: any read or write of a resource is `403 Forbidden` unless the
    /// test grants it with a Role/RoleBinding.
    pub async fn unprivileged_client(&self) -> Client {
        self.client_for_context(UNPRIVILEGED_CONTEXT).await
    }

    async fn client_for_context(&self, context: &str) -> Client {
        client_from(&self.inner.kubeconfig, context)
            .await
            .expect("a client from the control plane's kubeconfig")
    }

    /// Creates a fresh namespace named `<prefix>-<unique suffix>` and returns its name.
    /// On the plain control plane a namespace can never be deleted (no namespace controller
    /// finalizes it); on the full one it can.
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = unique_name(prefix);
        let api: Api<Namespace> = Api::all(self.client().await);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": name, "labels": { "berth.test/envtest": "true" } },
        }))
        .expect("namespace object");
        api.create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        name
    }

    /// A `kubectl` command (from the assets folder) talking to this control plane as admin.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.inner.assets.join("kubectl"));
        cmd.env("KUBECONFIG", &self.inner.kubeconfig);
        cmd
    }
}

async fn client_from(kubeconfig: &Path, context: &str) -> anyhow::Result<Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let options = KubeConfigOptions {
        context: Some(context.to_string()),
        ..KubeConfigOptions::default()
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options).await?;
    Ok(Client::try_from(config)?)
}

/// `kubectl` from the control plane's assets folder with no control plane behind it
/// (`KUBECONFIG=/dev/null`), for what kubectl does on its own (`--local`, `-o json`: reading
/// YAML with go-yaml v2 through sigs.k8s.io/yaml). `None` when the assets cannot be had,
/// after [`skip_or_fail`].
pub fn local_kubectl() -> Option<Command> {
    static ASSETS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match ASSETS.get_or_init(|| find_assets(Kind::Plain).map_err(|e| format!("{e:#}"))) {
        Ok(dir) => {
            let mut cmd = Command::new(dir.join("kubectl"));
            cmd.env("KUBECONFIG", "/dev/null");
            Some(cmd)
        }
        Err(why) => {
            skip_or_fail(&format!("no kubectl: {why}"));
            None
        }
    }
}

/// A test part that cannot be had here (a tool, an oracle): a loud `SKIPPED` on stderr, and
/// under CI=true a failure, like a missing control plane.
pub fn skip_or_fail(why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why} (CI=true makes that a failure)");
    }
    say(&format!("SKIPPED: {why}"));
}

static NAME_COUNTER: AtomicU64 = AtomicU64::new(0);

/// `<prefix>-<n>-<random>`, a valid DNS-1123 label of at most 63 characters.
pub fn unique_name(prefix: &str) -> String {
    let n = NAME_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let salt = (u64::from(nanos) ^ (u64::from(std::process::id()) << 20)) % 0x10_0000;
    let prefix: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(45)
        .collect();
    let prefix = prefix.trim_matches('-');
    let prefix = if prefix.is_empty() { "test" } else { prefix };
    format!("{prefix}-{n}-{salt:05x}")
}

// ---------------------------------------------------------------------------------------
// Waiting for the controllers (full control plane)
// ---------------------------------------------------------------------------------------

/// Polls `check` every 100 ms until it returns `Ok`, and returns that value. Every wait has
/// a deadline: after `timeout` it panics, naming `what` it waited for and the last `Err`
/// that `check` returned (say, the state it saw).
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `check` every 50 ms until it is true; returns how long that took. After
/// `timeout` it panics, naming `what` it waited for.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Is the pod Running with the condition Ready true, and not being deleted?
pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Running")
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// The UID of a pod.
pub fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// The pods of a namespace by name (those being deleted included).
pub async fn pods(client: &Client, namespace: &str) -> BTreeMap<String, Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    api.list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("listing the pods of {namespace}: {e}"))
        .items
        .into_iter()
        .map(|p| (p.metadata.name.clone().unwrap_or_default(), p))
        .collect()
}

/// A one-line summary of a StatefulSet's rollout, for wait messages.
pub fn rollout_state(sts: &StatefulSet) -> String {
    let status = sts.status.clone().unwrap_or_default();
    format!(
        "generation {:?} observed {:?}, replicas {:?}: ready {:?} updated {:?}, revision {:?} -> {:?}",
        sts.metadata.generation,
        status.observed_generation,
        sts.spec.as_ref().and_then(|s| s.replicas),
        status.ready_replicas,
        status.updated_replicas,
        status.current_revision,
        status.update_revision
    )
}

/// Has the StatefulSet controller finished rolling out the current spec (as `kubectl
/// rollout status` judges it): the generation observed, every replica updated and ready,
/// and the current revision the update revision.
pub fn rolled_out(sts: &StatefulSet) -> bool {
    let Some(status) = &sts.status else {
        return false;
    };
    let want = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    status.observed_generation >= sts.metadata.generation
        && status.observed_generation.is_some()
        && status.replicas == want
        && status.ready_replicas.unwrap_or(0) == want
        && status.updated_replicas.unwrap_or(0) == want
        && (want == 0 || status.current_revision == status.update_revision)
}

/// Waits (up to `timeout`) until every StatefulSet of `namespace` has rolled out, and
/// returns their pods that are Ready, by name. Panics with the state of the StatefulSets
/// that did not.
pub async fn wait_rolled_out(
    client: &Client,
    namespace: &str,
    timeout: Duration,
) -> BTreeMap<String, Pod> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    wait_for(
        timeout,
        &format!("every StatefulSet of {namespace} to roll out"),
        || async {
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let late: Vec<String> = list
                .items
                .iter()
                .filter(|s| !rolled_out(s))
                .map(|s| {
                    format!(
                        "{}: {}",
                        s.metadata.name.as_deref().unwrap_or("?"),
                        rollout_state(s)
                    )
                })
                .collect();
            if !late.is_empty() {
                return Err(late.join("; "));
            }
            let pods = pods(client, namespace).await;
            let unready: Vec<&String> = pods
                .iter()
                .filter(|(_, p)| !is_ready(p))
                .map(|(n, _)| n)
                .collect();
            if !unready.is_empty() {
                return Err(format!("pods not ready: {unready:?}"));
            }
            Ok(pods)
        },
    )
    .await
}

/// The environment a pod's container `container` starts with, as the kubelet would work it
/// out: `envFrom` ConfigMaps and Secrets first, then `env` (literal values, ConfigMap and
/// Secret keys). kwok runs no container, so this reads the very objects the kubelet would.
/// Secret values are given as `secret:<name>/<key>`, never read.
pub async fn container_env(
    client: &Client,
    pod: &Pod,
    container: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let ns = pod
        .metadata
        .namespace
        .as_deref()
        .context("pod without namespace")?;
    let spec = pod.spec.as_ref().context("pod without spec")?;
    let c = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == container)
        .with_context(|| format!("pod has no container {container}"))?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut env = BTreeMap::new();
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            let cm = cms.get_opt(&r.name).await?;
            if let Some(data) = cm.and_then(|cm| cm.data) {
                for (k, v) in data {
                    env.insert(format!("{prefix}{k}"), v);
                }
            }
        }
        if let Some(r) = &from.secret_ref {
            // Its keys are not read: a Secret's values stay out of tests' output.
            env.insert(format!("{prefix}*"), format!("secret:{}/*", r.name));
        }
    }
    for var in c.env.iter().flatten() {
        let value = if let Some(v) = &var.value {
            v.clone()
        } else if let Some(from) = &var.value_from {
            if let Some(r) = &from.config_map_key_ref {
                cms.get_opt(&r.name)
                    .await?
                    .and_then(|cm| cm.data)
                    .and_then(|d| d.get(&r.key).cloned())
                    .unwrap_or_default()
            } else if let Some(r) = &from.secret_key_ref {
                format!("secret:{}/{}", r.name, r.key)
            } else {
                "(field or resource reference)".into()
            }
        } else {
            String::new()
        };
        env.insert(var.name.clone(), value);
    }
    Ok(env)
}

// ---------------------------------------------------------------------------------------
// Start-up
// ---------------------------------------------------------------------------------------

fn start(kind: Kind) -> State {
    let assets = match find_assets(kind) {
        Ok(dir) => dir,
        Err(why) => return State::Skipped(format!("{why:#}")),
    };
    // The processes must be children of a thread that lives as long as the test binary:
    // PR_SET_PDEATHSIG fires when the *thread* that forked them ends, and libtest ends a
    // test's thread when the test ends.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("envtest-keeper".into())
        .spawn(move || keeper(assets, kind, tx))
        .expect("spawning the envtest keeper thread");
    match rx.recv() {
        Ok(Ok(running)) => {
            say(&format!(
                "envtest: {} control plane up at {} in {:.1}s (kubeconfig {})",
                kind.name(),
                running.server,
                running.started_in.as_secs_f64(),
                running.kubeconfig.display()
            ));
            State::Running(running)
        }
        Ok(Err(e)) => State::Failed(format!("{e:#}")),
        Err(_) => State::Failed("the envtest keeper thread died".into()),
    }
}

fn has_assets(dir: &Path, kind: Kind) -> bool {
    kind.binaries().iter().all(|b| is_executable(&dir.join(b)))
        && (kind == Kind::Plain || dir.join("kwok-stages.yaml").is_file())
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn find_assets(kind: Kind) -> anyhow::Result<PathBuf> {
    let wanted = || {
        let mut list = kind.binaries().join(", ");
        if kind == Kind::Full {
            list.push_str(", kwok-stages.yaml");
        }
        list
    };
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if has_assets(&dir, kind) {
            return Ok(dir);
        }
        say(&format!(
            "envtest: KUBEBUILDER_ASSETS={} lacks one of {}; trying scripts/envtest path",
            dir.display(),
            wanted()
        ));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/envtest");
    say(&format!(
        "envtest: running {} (the first run builds the binaries, which takes long)",
        script.display()
    ));
    let output = Command::new(&script)
        .arg("path")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!("{} path failed ({})", script.display(), output.status);
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !has_assets(&dir, kind) {
        bail!(
            "{} path printed {:?}, which lacks one of {}",
            script.display(),
            dir,
            wanted()
        );
    }
    Ok(dir)
}

/// Runs on the `envtest-keeper` thread for the rest of the test binary's life.
fn keeper(assets: PathBuf, kind: Kind, tx: std::sync::mpsc::Sender<anyhow::Result<Running>>) {
    let started = Instant::now();
    let mut last_err = None;
    // A port picked as free may be taken before the server binds it: try again then.
    for _attempt in 0..3 {
        match start_once(&assets, kind, started) {
            Ok((running, mut children)) => {
                let apiserver_log = running.apiserver_log.clone();
                register_exit_cleanup(children.pids(), running.root.clone());
                if kind == Kind::Full {
                    provisioner::spawn(running.kubeconfig.clone());
                }
                let _ = tx.send(Ok(running));
                // Report an unexpected death, then keep this thread (and so the
                // remaining children, through PR_SET_PDEATHSIG) alive until the end.
                if let Ok(status) = children.apiserver.wait()
                    && !EXITING.load(Ordering::SeqCst)
                {
                    say(&format!(
                        "envtest: kube-apiserver exited unexpectedly ({status}); log tail:\n{}",
                        tail(&apiserver_log, 30)
                    ));
                }
                loop {
                    std::thread::park();
                }
            }
            Err(StartError::Retry(e)) => last_err = Some(e),
            Err(StartError::Fatal(e)) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
    let _ = tx.send(Err(last_err.unwrap_or_else(|| {
        anyhow::anyhow!("could not start the control plane")
    })));
}

/// What to stop and remove when the test binary exits normally (`exit()`, also after
/// failed tests). Statics are never dropped, so this runs as a C `atexit` handler; it
/// kills and reaps the children (no zombies left to init) and removes the temporary
/// folder. PR_SET_PDEATHSIG and the reaper cover the exits that skip `atexit` (a signal,
/// an abort).
static EXIT_CLEANUP: Mutex<Option<(Vec<u32>, PathBuf)>> = Mutex::new(None);
static EXITING: AtomicBool = AtomicBool::new(false);

/// Is the test binary exiting (the `atexit` cleanup has begun)?
pub(crate) fn exiting() -> bool {
    EXITING.load(Ordering::SeqCst)
}

fn register_exit_cleanup(pids: Vec<u32>, root: PathBuf) {
    *EXIT_CLEANUP.lock().unwrap_or_else(|e| e.into_inner()) = Some((pids, root));
    // SAFETY: registers a plain `extern "C" fn()`; called once (the control plane starts
    // once per test binary).
    unsafe {
        libc::atexit(cleanup_at_exit);
    }
}

extern "C" fn cleanup_at_exit() {
    EXITING.store(true, Ordering::SeqCst);
    let Some((pids, root)) = EXIT_CLEANUP
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    else {
        return;
    };
    for &pid in &pids {
        // SAFETY: plain syscalls on our own children's pids (not reaped yet, or reaped by
        // the keeper thread, in which case waitpid fails with ECHILD and we move on).
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    for &pid in &pids {
        // SAFETY: see above.
        unsafe {
            libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
        }
    }
    let _ = fs::remove_dir_all(&root);
}

enum StartError {
    Retry(anyhow::Error),
    Fatal(anyhow::Error),
}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> Self {
        StartError::Fatal(e)
    }
}

impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> Self {
        StartError::Fatal(e.into())
    }
}

struct Children {
    etcd: Child,
    apiserver: Child,
    /// kube-controller-manager, kube-scheduler and kwok (full control plane only).
    controllers: Vec<Child>,
    /// Held open for the life of the test binary: the reaper removes the temporary folder
    /// when this pipe closes, that is when the test binary has ended.
    _reaper_pipe: ChildStdin,
}

impl Children {
    /// Every process, the API server's clients before the API server and etcd last.
    fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.controllers.iter().map(Child::id).collect();
        pids.push(self.apiserver.id());
        pids.push(self.etcd.id());
        pids
    }

    fn kill_all(&mut self) {
        for child in self
            .controllers
            .iter_mut()
            .chain([&mut self.apiserver, &mut self.etcd])
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_once(
    assets: &Path,
    kind: Kind,
    started: Instant,
) -> Result<(Running, Children), StartError> {
    let root = tempfile::Builder::new()
        .prefix("berth-envtest-")
        .tempdir()
        .context("creating the control plane's temporary folder")?
        .keep();
    let pki = root.join("pki");
    fs::create_dir_all(&pki)?;
    fs::create_dir_all(root.join("etcd-data"))?;
    make_pki(&pki)?;

    let reaper = spawn_reaper(&root)?;

    let etcd_port = free_port()?;
    let peer_port = free_port()?;
    let api_port = free_port()?;
    let server = format!("https://127.0.0.1:{api_port}");

    let admin_token = random_hex(16)?;
    let nobody_token = random_hex(16)?;
    fs::write(
        pki.join("tokens.csv"),
        format!(
            "{admin_token},{ADMIN_USER},admin-uid,system:masters\n\
             {nobody_token},{UNPRIVILEGED_USER},nobody-uid\n"
        ),
    )?;

    let kubeconfig = root.join("kubeconfig");
    let unprivileged_kubeconfig = root.join("kubeconfig-nobody");
    let ca_pem = fs::read(pki.join("ca.crt"))?;
    fs::write(
        &kubeconfig,
        kubeconfig_yaml(&server, &ca_pem, &admin_token, &nobody_token, ADMIN_CONTEXT),
    )?;
    fs::write(
        &unprivileged_kubeconfig,
        kubeconfig_yaml(
            &server,
            &ca_pem,
            &admin_token,
            &nobody_token,
            UNPRIVILEGED_CONTEXT,
        ),
    )?;

    let etcd_log = root.join("etcd.log");
    let apiserver_log = root.join("kube-apiserver.log");

    let etcd_client = format!("http://127.0.0.1:{etcd_port}");
    let etcd_peer = format!("http://127.0.0.1:{peer_port}");
    let mut etcd = spawn_child(
        Command::new(assets.join("etcd"))
            .arg("--name=envtest")
            .arg(format!("--data-dir={}", root.join("etcd-data").display()))
            .arg(format!("--listen-client-urls={etcd_client}"))
            .arg(format!("--advertise-client-urls={etcd_client}"))
            .arg(format!("--listen-peer-urls={etcd_peer}"))
            .arg(format!("--initial-advertise-peer-urls={etcd_peer}"))
            .arg(format!("--initial-cluster=envtest={etcd_peer}"))
            .arg("--unsafe-no-fsync=true")
            .arg("--log-level=warn"),
        &etcd_log,
    )
    .context("starting etcd")?;

    // Let etcd listen before the API server dials it (it would retry, but noisily).
    let etcd_addr: SocketAddr = ([127, 0, 0, 1], etcd_port).into();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&etcd_addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = etcd.try_wait() {
            let msg = format!("etcd exited ({status}); log tail:\n{}", tail(&etcd_log, 30));
            return Err(if log_says_port_taken(&etcd_log) {
                StartError::Retry(anyhow::anyhow!(msg))
            } else {
                StartError::Fatal(anyhow::anyhow!(msg))
            });
        }
        if Instant::now() > deadline {
            let _ = etcd.kill();
            return Err(StartError::Fatal(anyhow::anyhow!(
                "etcd did not listen on {etcd_addr} within 20s; log tail:\n{}",
                tail(&etcd_log, 30)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let pki_arg = |flag: &str, file: &str| format!("--{flag}={}", pki.join(file).display());
    let mut apiserver = Command::new(assets.join("kube-apiserver"));
    apiserver
        .arg(format!("--etcd-servers={etcd_client}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg(format!("--secure-port={api_port}"))
        .arg(pki_arg("tls-cert-file", "serving.crt"))
        .arg(pki_arg("tls-private-key-file", "serving.key"))
        .arg(pki_arg("token-auth-file", "tokens.csv"))
        .arg("--authorization-mode=RBAC")
        .arg(format!("--service-account-issuer={server}"))
        .arg(pki_arg("service-account-key-file", "sa.pub"))
        .arg(pki_arg("service-account-signing-key-file", "sa.key"))
        // Room for tests that apply generated repositories of hundreds of workspaces (a
        // Service each); a /24 holds only 254.
        .arg("--service-cluster-ip-range=10.0.0.0/16")
        .arg("--allow-privileged=true")
        .arg(format!("--cert-dir={}", root.join("cert-dir").display()));
    if kind == Kind::Plain {
        // No ServiceAccount controller makes the `default` ServiceAccounts that the
        // admission plugin wants for every pod; the full control plane has one and keeps
        // the plugin, as real clusters do.
        apiserver.arg("--disable-admission-plugins=ServiceAccount");
    }
    let apiserver =
        spawn_child(&mut apiserver, &apiserver_log).context("starting kube-apiserver")?;
    let mut children = Children {
        etcd,
        apiserver,
        controllers: Vec::new(),
        _reaper_pipe: reaper,
    };
    let mut logs = vec![
        ("etcd", etcd_log.clone()),
        ("kube-apiserver", apiserver_log.clone()),
    ];

    if let Err(e) = wait_ready(assets, &kubeconfig, &mut children.apiserver, &apiserver_log) {
        children.kill_all();
        let msg = format!(
            "{e:#}\n--- last lines of {} ---\n{}\n--- last lines of {} ---\n{}",
            apiserver_log.display(),
            tail(&apiserver_log, 40),
            etcd_log.display(),
            tail(&etcd_log, 10)
        );
        return Err(if log_says_port_taken(&apiserver_log) {
            StartError::Retry(anyhow::anyhow!(msg))
        } else {
            StartError::Fatal(anyhow::anyhow!(msg))
        });
    }

    if kind == Kind::Full {
        let result = start_controllers(assets, &root, &kubeconfig, &mut children, &mut logs);
        if let Err(e) = result {
            children.kill_all();
            let mut msg = format!("{e:#}");
            for (name, path) in &logs {
                let _ = write!(msg, "\n--- last lines of {name} ---\n{}", tail(path, 25));
            }
            return Err(StartError::Fatal(anyhow::anyhow!(msg)));
        }
    }

    Ok((
        Running {
            kind,
            root,
            assets: assets.to_path_buf(),
            server,
            kubeconfig,
            unprivileged_kubeconfig,
            apiserver_log,
            etcd_log,
            logs,
            started_in: started.elapsed(),
        },
        children,
    ))
}

/// Starts kube-controller-manager, kube-scheduler and kwok against the running API server,
/// creates the nodes and the StorageClass of [`CLUSTER_YAML`], and waits until the nodes
/// are Ready and both controllers hold their leader Lease (they are working).
fn start_controllers(
    assets: &Path,
    root: &Path,
    kubeconfig: &Path,
    children: &mut Children,
    logs: &mut Vec<(&'static str, PathBuf)>,
) -> anyhow::Result<()> {
    let pki = root.join("pki");
    let kubeconfig_arg = format!("--kubeconfig={}", kubeconfig.display());
    let log = root.join("kube-controller-manager.log");
    logs.push(("kube-controller-manager", log.clone()));
    children.controllers.push(
        spawn_child(
            Command::new(assets.join("kube-controller-manager"))
                .arg(&kubeconfig_arg)
                .args(controller_manager_args(&pki)),
            &log,
        )
        .context("starting kube-controller-manager")?,
    );
    let log = root.join("kube-scheduler.log");
    logs.push(("kube-scheduler", log.clone()));
    children.controllers.push(
        spawn_child(
            Command::new(assets.join("kube-scheduler"))
                .arg(&kubeconfig_arg)
                .args(SCHEDULER_ARGS),
            &log,
        )
        .context("starting kube-scheduler")?,
    );
    // kwok would read ~/.kwok/kwok.yaml first: give it a home of its own.
    let home = root.join("kwok-home");
    fs::create_dir_all(&home)?;
    let log = root.join("kwok.log");
    logs.push(("kwok", log.clone()));
    let stages = root.join("kwok-stages.yaml");
    fs::write(
        &stages,
        never_ready_stages(&fs::read_to_string(assets.join("kwok-stages.yaml"))?)?,
    )?;
    children.controllers.push(
        spawn_child(
            Command::new(assets.join("kwok"))
                .env("HOME", &home)
                .arg(&kubeconfig_arg)
                .arg(format!("--config={}", stages.display()))
                .args(KWOK_ARGS),
            &log,
        )
        .context("starting kwok")?,
    );

    let cluster = Path::new(env!("CARGO_MANIFEST_DIR")).join(CLUSTER_YAML);
    let out = Command::new(assets.join("kubectl"))
        .arg(&kubeconfig_arg)
        .args(["create", "-f"])
        .arg(&cluster)
        .stdin(Stdio::null())
        .output()
        .context("running kubectl create")?;
    if !out.status.success() {
        bail!(
            "kubectl create -f {} failed: {}",
            cluster.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let timeout = start_timeout();
    let deadline = Instant::now() + timeout;
    let kubectl = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new(assets.join("kubectl"))
            .arg(&kubeconfig_arg)
            .args(args)
            .arg("--request-timeout=5s")
            .stdin(Stdio::null())
            .output()
            .context("running kubectl")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    loop {
        for (child, (name, log)) in children.controllers.iter_mut().zip(&logs[2..]) {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{name} exited ({status}) before it was ready (log {})",
                    log.display()
                );
            }
        }
        let ready = kubectl(&[
            "get",
            "nodes",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}"#,
        ])?;
        let leaders = kubectl(&[
            "get",
            "leases",
            "-n",
            "kube-system",
            "kube-controller-manager",
            "kube-scheduler",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.spec.holderIdentity} {end}",
        ])?;
        let nodes_ready = NODES
            .iter()
            .all(|n| ready.split_whitespace().any(|r| r == format!("{n}=True")));
        let leading = leaders
            .split_whitespace()
            .filter(|l| !l.ends_with('='))
            .count()
            == 2;
        if nodes_ready && leading {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the controllers were not ready within {}s (nodes: {ready:?}; leader Leases: \
                 {leaders:?}); set BERTH_ENVTEST_START_TIMEOUT to wait longer",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// kube-controller-manager: every default controller, with the admin's credentials, the
/// service-account signing key (token controller) and the CA (root CA publisher, CSR
/// signer); no serving port. Leader election is on only so that its Lease says it works.
fn controller_manager_args(pki: &Path) -> Vec<String> {
    let file = |name: &str| pki.join(name).display().to_string();
    vec![
        "--controllers=*".into(),
        "--leader-elect=true".into(),
        "--secure-port=0".into(),
        format!("--service-account-private-key-file={}", file("sa.key")),
        format!("--root-ca-file={}", file("ca.crt")),
        format!("--cluster-signing-cert-file={}", file("ca.crt")),
        format!("--cluster-signing-key-file={}", file("ca.key")),
        // Tests make bursts of objects; the default client limits (20/s) would slow the
        // controllers down, not make them more real.
        "--kube-api-qps=200".into(),
        "--kube-api-burst=400".into(),
    ]
}

/// kube-scheduler: the default profile, no serving port.
const SCHEDULER_ARGS: &[&str] = &[
    "--leader-elect=true",
    "--secure-port=0",
    "--kube-api-qps=200",
    "--kube-api-burst=400",
];

/// kwok: the nodes annotated `kwok.x-k8s.io/node: fake`, a node Lease like a kubelet's,
/// pod IPs from a range of its own; no server (no logs or exec).
const KWOK_ARGS: &[&str] = &[
    "--manage-all-nodes=false",
    "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
    "--node-lease-duration-seconds=40",
    "--cidr=10.128.0.0/16",
    "--node-ip=10.127.0.1",
];

fn start_timeout() -> Duration {
    std::env::var("BERTH_ENVTEST_START_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_START_TIMEOUT)
}

/// Polls `/readyz` (through kubectl, as the admin) until it answers `ok`.
fn wait_ready(
    assets: &Path,
    kubeconfig: &Path,
    apiserver: &mut Child,
    apiserver_log: &Path,
) -> anyhow::Result<()> {
    let timeout = start_timeout();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = apiserver.try_wait()? {
            bail!(
                "kube-apiserver exited ({status}) before it was ready (log {})",
                apiserver_log.display()
            );
        }
        let out = Command::new(assets.join("kubectl"))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(["get", "--raw", "/readyz", "--request-timeout=5s"])
            .stdin(Stdio::null())
            .output()
            .context("running kubectl get --raw /readyz")?;
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
            return Ok(());
        }
        let last = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if Instant::now() > deadline {
            bail!(
                "kube-apiserver was not ready within {}s (last /readyz answer: {last}); \
                 set BERTH_ENVTEST_START_TIMEOUT to wait longer",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Spawns a child that gets SIGKILL when the spawning thread (the keeper) or the test
/// binary ends, with stdout and stderr going to `log`.
fn spawn_child(cmd: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure only calls async-signal-safe functions (prctl, getppid, _exit)
    // between fork and exec, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("spawning {:?}", cmd.get_program()))
}

/// A `sh` process that waits for its stdin to close (the test binary has ended: the
/// kernel closes the write end we hold), then, unless the `atexit` cleanup already did
/// (a normal exit), waits a moment for etcd and kube-apiserver to die of their
/// PR_SET_PDEATHSIG and removes the temporary folder.
fn spawn_reaper(root: &Path) -> anyhow::Result<ChildStdin> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"cat >/dev/null; [ -e "$1" ] || exit 0; sleep 1; rm -rf -- "$1""#)
        .arg("berth-envtest-reaper")
        .arg(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning the envtest reaper (sh)")?;
    child.stdin.take().context("reaper stdin")
}

fn log_says_port_taken(log: &Path) -> bool {
    tail(log, 50).contains("address already in use")
}

pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("running openssl (needed to make the control plane's certificates)")?;
    if !out.status.success() {
        bail!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A CA, a serving certificate for 127.0.0.1 and localhost signed by it (rustls checks
/// the IP SAN against the CA from the kubeconfig), and a service-account signing key.
fn make_pki(dir: &Path) -> anyhow::Result<()> {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca = vec!["req", "-x509", "-nodes", "-days", "30"];
    ca.extend(ec);
    ca.extend([
        "-subj",
        "/CN=berth-envtest-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca)?;
    let mut csr = vec!["req", "-nodes"];
    csr.extend(ec);
    csr.extend([
        "-subj",
        "/CN=kube-apiserver",
        "-keyout",
        "serving.key",
        "-out",
        "serving.csr",
    ]);
    openssl(dir, &csr)?;
    fs::write(
        dir.join("serving.ext"),
        "basicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "serving.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "serving.ext",
            "-out",
            "serving.crt",
        ],
    )?;
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "sa.key",
        ],
    )?;
    openssl(dir, &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
    Ok(())
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

fn kubeconfig_yaml(
    server: &str,
    ca_pem: &[u8],
    admin_token: &str,
    nobody_token: &str,
    current: &str,
) -> String {
    let ca = base64(ca_pem);
    let context = |name: &str, user: &str| {
        serde_json::json!({
            "name": name,
            "context": { "cluster": "envtest", "user": user, "namespace": "default" },
        })
    };
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "envtest",
            "cluster": { "server": server, "certificate-authority-data": ca },
        }],
        "users": [
            { "name": ADMIN_USER, "user": { "token": admin_token } },
            { "name": UNPRIVILEGED_USER, "user": { "token": nobody_token } },
        ],
        "contexts": [
            context(ADMIN_CONTEXT, ADMIN_USER),
            context(UNPRIVILEGED_CONTEXT, UNPRIVILEGED_USER),
        ],
        "current-context": current,
        "preferences": BTreeMap::<String, String>::new(),
    });
    serde_yaml::to_string(&config).expect("serializing a kubeconfig")
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The last `lines` lines of a (log) file, reading at most its last 64 KiB.
fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return format!("(cannot open {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Writes a line to the test binary's real stderr: libtest captures `eprintln!` of
/// passing tests, and a skip or a long build must be seen.
fn say(msg: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

/// A pod whose first container runs this image is never made Ready by kwok: a broken
/// release, for the rollout tests (tests/rollout.rs).
pub const NEVER_READY_IMAGE: &str = "mageai/mageai:never-ready";

/// kwok's stages with one more condition on the stage that makes pods Ready: not for
/// pods of [`NEVER_READY_IMAGE`].
fn never_ready_stages(stages: &str) -> anyhow::Result<String> {
    let anchor = "  name: pod-ready\n";
    let at = stages
        .find(anchor)
        .context("kwok's stages have no pod-ready stage")?;
    let rest = &stages[at..];
    let expressions = rest
        .find("    matchExpressions:\n")
        .context("kwok's pod-ready stage has no matchExpressions")?
        + "    matchExpressions:\n".len();
    let insert = at + expressions;
    Ok(format!(
        "{}    - key: '.spec.containers.[0].image'\n      operator: 'NotIn'\n      values:\n      - '{NEVER_READY_IMAGE}'\n{}",
        &stages[..insert],
        &stages[insert..]
    ))
}
