//! Test support: a real kube-apiserver + etcd for integration tests (envtest-style).
//!
//! Use it from an integration test file with `mod support;`:
//!
//! ```ignore
//! mod support;
//!
//! #[tokio::test]
//! async fn my_test() {
//!     let Some(cp) = support::control_plane().await else { return };
//!     let client = cp.client().await;
//!     let ns = cp.namespace("my-test").await;
//!     // ... talk to a real API server in namespace `ns` ...
//! }
//! ```
//!
//! What you get, and what you do not:
//!
//! * ONE control plane per test binary, started lazily by the first test that asks for it
//!   and shared by every test of that binary. Tests stay apart by working in their own
//!   namespace ([`ControlPlane::namespace`]); nothing is ever cleaned up inside the API
//!   (etcd lives in a temporary folder that is thrown away when the test binary exits).
//! * Only kube-apiserver and etcd run: storage, validation, defaulting, admission,
//!   server-side apply, RBAC, dry-run, watches. There is NO kubelet, NO scheduler and NO
//!   controller-manager: no Pod is ever created for a StatefulSet, status is never written,
//!   garbage collection does not happen and a deleted namespace stays `Terminating`.
//!   Where a test needs a controller's effect, the test plays the controller through the
//!   real API, e.g. [`mark_statefulset_rolled_out`].
//! * Two identities: an admin (`system:masters`, [`ControlPlane::client`]) and a user with
//!   no RBAC rights at all ([`ControlPlane::unprivileged_client`], user
//!   [`UNPRIVILEGED_USER`]), for tests of `403 Forbidden`.
//! * The binaries come from `$KUBEBUILDER_ASSETS` (kube-apiserver, etcd, kubectl), else
//!   from `scripts/envtest path` (which builds them once into a cache folder). When they
//!   cannot be had, tests are skipped with a loud `SKIPPED: no control plane` on stderr,
//!   except under `CI=true`, where that is a failure.
//! * No orphans: etcd and kube-apiserver are started from a thread that lives as long as
//!   the test binary, with `PR_SET_PDEATHSIG=SIGKILL`, so they die with the test binary
//!   however it ends (normal exit, panic, signal). A small reaper process removes the
//!   temporary folder once the test binary is gone.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
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
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// The user name of the identity without any RBAC rights.
pub const UNPRIVILEGED_USER: &str = "berth-nobody";
/// The user name of the admin identity (group `system:masters`).
pub const ADMIN_USER: &str = "admin";

const ADMIN_CONTEXT: &str = "envtest";
const UNPRIVILEGED_CONTEXT: &str = "envtest-nobody";

/// How long kube-apiserver may take to report `/readyz` ok (override with
/// `BERTH_ENVTEST_START_TIMEOUT`, in seconds).
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(90);

/// A handle on the shared control plane of this test binary. Cheap to copy.
#[derive(Clone, Copy, Debug)]
pub struct ControlPlane {
    inner: &'static Running,
}

#[derive(Debug)]
struct Running {
    /// Temporary folder with certificates, kubeconfigs, etcd data and logs.
    root: PathBuf,
    assets: PathBuf,
    server: String,
    kubeconfig: PathBuf,
    unprivileged_kubeconfig: PathBuf,
    apiserver_log: PathBuf,
    etcd_log: PathBuf,
    started_in: Duration,
}

enum State {
    Running(Running),
    Skipped(String),
    Failed(String),
}

static STATE: OnceLock<State> = OnceLock::new();

/// Returns the control plane of this test binary, starting it on first use.
///
/// Returns `None` (after printing `SKIPPED: no control plane` to stderr) when the binaries
/// cannot be found or built, unless `CI=true`, where it panics. Panics when the binaries
/// are there but the control plane fails to start, with the tail of its logs.
pub async fn control_plane() -> Option<ControlPlane> {
    // Starting may block for a while (and for a long while when `scripts/envtest path`
    // has to build the binaries): keep it off the test's async runtime.
    let state = tokio::task::spawn_blocking(|| STATE.get_or_init(start))
        .await
        .expect("control plane start-up thread panicked");
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

    /// The folder holding kube-apiserver, etcd and kubectl.
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
        let kubeconfig = Kubeconfig::read_from(&self.inner.kubeconfig)
            .expect("reading the control plane's kubeconfig");
        let options = KubeConfigOptions {
            context: Some(context.to_string()),
            ..KubeConfigOptions::default()
        };
        let config = Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .expect("loading the control plane's kubeconfig");
        Client::try_from(config).expect("building a kube client")
    }

    /// Creates a fresh namespace named `<prefix>-<unique suffix>` and returns its name.
    /// Namespaces are never deleted (no namespace controller runs to finalize them).
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

/// The test plays the controller: no StatefulSet controller and no kubelet run here, so
/// nothing ever writes a StatefulSet's status. This writes, through the real API (the
/// `status` subresource, as the controller would), the status of a StatefulSet whose
/// rollout has completed for its current spec: `observedGeneration` = `generation`,
/// `currentRevision` = `updateRevision`, and every replica ready, available, current and
/// updated. The revision name is `<name>-<generation>` (a real controller uses a hash).
pub async fn mark_statefulset_rolled_out(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<StatefulSet> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let sts = api
        .get(name)
        .await
        .with_context(|| format!("reading StatefulSet {namespace}/{name}"))?;
    let generation = sts
        .metadata
        .generation
        .with_context(|| format!("StatefulSet {namespace}/{name} has no generation"))?;
    let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let revision = format!("{name}-{generation}");
    let status = serde_json::json!({
        "status": {
            "observedGeneration": generation,
            "replicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "currentReplicas": replicas,
            "updatedReplicas": replicas,
            "currentRevision": revision,
            "updateRevision": revision,
            "collisionCount": 0,
        }
    });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .with_context(|| format!("writing the status of StatefulSet {namespace}/{name}"))
}

// ---------------------------------------------------------------------------------------
// Start-up
// ---------------------------------------------------------------------------------------

fn start() -> State {
    let assets = match find_assets() {
        Ok(dir) => dir,
        Err(why) => return State::Skipped(format!("{why:#}")),
    };
    // The processes must be children of a thread that lives as long as the test binary:
    // PR_SET_PDEATHSIG fires when the *thread* that forked them ends, and libtest ends a
    // test's thread when the test ends.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("envtest-keeper".into())
        .spawn(move || keeper(assets, tx))
        .expect("spawning the envtest keeper thread");
    match rx.recv() {
        Ok(Ok(running)) => {
            say(&format!(
                "envtest: control plane up at {} in {:.1}s (kubeconfig {})",
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

fn has_assets(dir: &Path) -> bool {
    ["kube-apiserver", "etcd", "kubectl"]
        .iter()
        .all(|b| is_executable(&dir.join(b)))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn find_assets() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if has_assets(&dir) {
            return Ok(dir);
        }
        say(&format!(
            "envtest: KUBEBUILDER_ASSETS={} lacks kube-apiserver, etcd or kubectl; \
             trying scripts/envtest path",
            dir.display()
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
    if !has_assets(&dir) {
        bail!(
            "{} path printed {:?}, which lacks kube-apiserver, etcd or kubectl",
            script.display(),
            dir
        );
    }
    Ok(dir)
}

/// Runs on the `envtest-keeper` thread for the rest of the test binary's life.
fn keeper(assets: PathBuf, tx: std::sync::mpsc::Sender<anyhow::Result<Running>>) {
    let started = Instant::now();
    let mut last_err = None;
    // A port picked as free may be taken before the server binds it: try again then.
    for _attempt in 0..3 {
        match start_once(&assets, started) {
            Ok((running, mut children)) => {
                let apiserver_log = running.apiserver_log.clone();
                register_exit_cleanup(
                    vec![children.apiserver.id(), children.etcd.id()],
                    running.root.clone(),
                );
                let _ = tx.send(Ok(running));
                // Report an unexpected death, then keep this thread (and so the
                // remaining child, through PR_SET_PDEATHSIG) alive until the end.
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
    /// Held open for the life of the test binary: the reaper removes the temporary folder
    /// when this pipe closes, that is when the test binary has ended.
    _reaper_pipe: ChildStdin,
}

fn start_once(assets: &Path, started: Instant) -> Result<(Running, Children), StartError> {
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
    let apiserver = spawn_child(
        Command::new(assets.join("kube-apiserver"))
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
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--allow-privileged=true")
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg(format!("--cert-dir={}", root.join("cert-dir").display())),
        &apiserver_log,
    )
    .context("starting kube-apiserver")?;
    let mut children = Children {
        etcd,
        apiserver,
        _reaper_pipe: reaper,
    };

    if let Err(e) = wait_ready(assets, &kubeconfig, &mut children.apiserver, &apiserver_log) {
        let _ = children.apiserver.kill();
        let _ = children.apiserver.wait();
        let _ = children.etcd.kill();
        let _ = children.etcd.wait();
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

    Ok((
        Running {
            root,
            assets: assets.to_path_buf(),
            server,
            kubeconfig,
            unprivileged_kubeconfig,
            apiserver_log,
            etcd_log,
            started_in: started.elapsed(),
        },
        children,
    ))
}

/// Polls `/readyz` (through kubectl, as the admin) until it answers `ok`.
fn wait_ready(
    assets: &Path,
    kubeconfig: &Path,
    apiserver: &mut Child,
    apiserver_log: &Path,
) -> anyhow::Result<()> {
    let timeout = std::env::var("BERTH_ENVTEST_START_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_START_TIMEOUT);
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

fn free_port() -> anyhow::Result<u16> {
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
