//! Outages for tests, on the real control plane: kill the control plane's etcd and start
//! it again ([`kill_etcd`]), and a TCP proxy in front of the API server that a test cuts
//! and heals ([`Proxy`]), a network partition between one client and the API server.
//!
//! Both change the control plane every test of the binary shares: use them in a test file
//! of their own, and serialise its tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::ControlPlane;

/// The etcd of a control plane, killed by [`kill_etcd`]; [`EtcdDown::restart`] brings it
/// back with the same command line and data.
pub struct EtcdDown {
    argv: Vec<String>,
    log: PathBuf,
    client_port: u16,
}

/// The pid and command line of the control plane's etcd (found in /proc by its data
/// folder, which is unique to this control plane).
fn find_etcd(cp: &ControlPlane) -> anyhow::Result<(i32, Vec<String>)> {
    let data_dir = format!("--data-dir={}", cp.inner.root.join("etcd-data").display());
    find_process("/etcd", &data_dir)
}

/// The pid and command line of the process whose binary ends with `binary` and that has
/// the argument `marker`.
fn find_process(binary: &str, marker: &str) -> anyhow::Result<(i32, Vec<String>)> {
    let data_dir = marker.to_string();
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_etcd = argv.first().is_some_and(|a| a.ends_with(binary));
        // A killed etcd not yet reaped is a zombie with an empty command line: skipped.
        if is_etcd && argv.contains(&data_dir) {
            return Ok((pid, argv));
        }
    }
    bail!("no {binary} process with {data_dir}")
}

fn client_port(argv: &[String]) -> anyhow::Result<u16> {
    argv.iter()
        .find_map(|a| a.strip_prefix("--listen-client-urls=http://127.0.0.1:"))
        .and_then(|p| p.parse().ok())
        .context("etcd's --listen-client-urls")
}

/// SIGKILL `pid` (our own child, `what`) and wait until `addr` refuses connections.
fn kill_until_closed(what: &str, pid: i32, addr: &str) {
    // SAFETY: a plain syscall on a pid we just read, belonging to our own child.
    let killed = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(
        killed,
        0,
        "kill -9 {pid}: {}",
        std::io::Error::last_os_error()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "{what} (pid {pid}) still listened on {addr} 10s after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Start `argv` again (logging to `log`) from a thread that never ends, so that the
/// child's parent thread (PR_SET_PDEATHSIG, as for the others) lives as long as the test
/// binary.
fn respawn(what: &str, argv: &[String], log: &std::path::Path) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (argv, log) = (argv.to_vec(), log.to_path_buf());
    std::thread::Builder::new()
        .name(format!("{what}-restarted"))
        .spawn(move || {
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            let child = super::spawn_child(&mut cmd, &log);
            let _ = tx.send(child.as_ref().map(|c| c.id()).map_err(|e| format!("{e:#}")));
            let _child = child;
            loop {
                std::thread::park();
            }
        })
        .unwrap_or_else(|e| panic!("spawning the {what} thread: {e}"));
    rx.recv()
        .unwrap_or_else(|e| panic!("the {what} thread answers: {e}"))
        .unwrap_or_else(|e| panic!("restarting {what}: {e}"));
}

/// SIGKILL the control plane's etcd (kube-apiserver keeps running, and answers with errors
/// or not at all), and wait until its port refuses connections.
pub fn kill_etcd(cp: &ControlPlane) -> EtcdDown {
    let (pid, argv) = find_etcd(cp).expect("the control plane's etcd");
    let port = client_port(&argv).expect("etcd's client port");
    kill_until_closed("etcd", pid, &format!("127.0.0.1:{port}"));
    EtcdDown {
        log: cp.inner.root.join("etcd-restarted.log"),
        argv,
        client_port: port,
    }
}

impl EtcdDown {
    /// Start etcd again (same flags, same data folder) and wait until kube-apiserver is
    /// ready again. The new etcd lives as long as the test binary (it is started from a
    /// thread that never ends, with PR_SET_PDEATHSIG like the others).
    pub fn restart(self, cp: &ControlPlane) {
        respawn("etcd", &self.argv, &self.log);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.client_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "etcd did not listen again within 30s; log {}:\n{}",
                self.log.display(),
                super::tail(&self.log, 20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        wait_apiserver_ready(cp, Duration::from_secs(60));
    }
}

/// The control plane's kube-apiserver, killed by [`kill_apiserver`];
/// [`ApiserverDown::restart`] starts it again with the same command line (same port,
/// certificates and etcd).
pub struct ApiserverDown {
    argv: Vec<String>,
    log: PathBuf,
}

/// SIGKILL the control plane's kube-apiserver (etcd keeps running), and wait until its
/// port refuses connections.
pub fn kill_apiserver(cp: &ControlPlane) -> ApiserverDown {
    let cert_dir = format!("--cert-dir={}", cp.inner.root.join("cert-dir").display());
    let (pid, argv) = find_process("/kube-apiserver", &cert_dir).expect("the kube-apiserver");
    kill_until_closed(
        "kube-apiserver",
        pid,
        cp.server().trim_start_matches("https://"),
    );
    ApiserverDown {
        log: cp.inner.root.join("kube-apiserver-restarted.log"),
        argv,
    }
}

impl ApiserverDown {
    /// Start kube-apiserver again and wait until it is ready. It lives as long as the test
    /// binary (started from a thread that never ends, as [`EtcdDown::restart`] does).
    pub fn restart(self, cp: &ControlPlane) {
        respawn("kube-apiserver", &self.argv, &self.log);
        wait_apiserver_ready(cp, Duration::from_secs(90));
    }
}

/// Wait (up to `timeout`) until kube-apiserver's `/readyz` answers ok.
pub fn wait_apiserver_ready(cp: &ControlPlane, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let out = cp
            .kubectl()
            .args(["get", "--raw", "/readyz", "--request-timeout=5s"])
            .stdin(Stdio::null())
            .output()
            .expect("running kubectl");
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "kube-apiserver was not ready again within {timeout:?}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            cp.log_tails(15)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A TCP proxy to the API server. While cut, it is a partition: bytes in either direction
/// are dropped (not delivered late), new connections are accepted and then ignored, and
/// when it heals, every connection from before the cut is closed, as a partition that
/// outlasts TCP's patience leaves them. Runs on the test's tokio runtime.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
}

struct ProxyState {
    cut: AtomicBool,
    /// Incremented at every cut: connections of an older generation are dead.
    generation: AtomicU64,
}

impl Proxy {
    /// A proxy on a free loopback port to the control plane's API server.
    pub async fn start(cp: &ControlPlane) -> Proxy {
        let target: SocketAddr = cp
            .server()
            .trim_start_matches("https://")
            .parse()
            .expect("the API server's address");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let state = Arc::new(ProxyState {
            cut: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        });
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let generation = state.generation.load(Ordering::SeqCst);
                    if state.cut.load(Ordering::SeqCst) {
                        // Accepted by the "network", never answered: read and drop.
                        swallow(client, &state, generation).await;
                        return;
                    }
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        _ = pipe(client_read, server_write, &state, generation) => {}
                        _ = pipe(server_read, client_write, &state, generation) => {}
                    }
                });
            }
        });
        Proxy { addr, state }
    }

    /// The proxy's URL, `https://127.0.0.1:<port>` (the serving certificate names the IP,
    /// so TLS through the proxy verifies as it does directly).
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A kubeconfig like the control plane's admin one, through this proxy.
    pub fn kubeconfig(&self, cp: &ControlPlane, dir: &Path) -> PathBuf {
        let text = std::fs::read_to_string(cp.kubeconfig_path()).expect("reading the kubeconfig");
        assert!(
            text.contains(cp.server()),
            "the kubeconfig names {}",
            cp.server()
        );
        let path = dir.join("kubeconfig-through-proxy");
        std::fs::write(&path, text.replace(cp.server(), &self.url()))
            .expect("writing the proxy's kubeconfig");
        path
    }

    /// Partition: from now on nothing passes, either way.
    pub fn cut(&self) {
        self.state.generation.fetch_add(1, Ordering::SeqCst);
        self.state.cut.store(true, Ordering::SeqCst);
    }

    /// Heal: new connections pass again; those from before the cut are closed.
    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }
}

/// Forward bytes one way while the connection is alive; drop them while cut; end (closing
/// both halves) once healed after a cut.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: &ProxyState,
    generation: u64,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Wake up now and then, so a silent connection still ends when the cut heals.
        let read = tokio::time::timeout(Duration::from_millis(200), from.read(&mut buf)).await;
        let dead = state.generation.load(Ordering::SeqCst) != generation;
        if dead && !state.cut.load(Ordering::SeqCst) {
            return;
        }
        let n = match read {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => n,
        };
        if dead {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Read and drop everything of a connection made while cut, until it closes or the cut
/// heals.
async fn swallow(mut client: TcpStream, state: &ProxyState, generation: u64) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::time::timeout(Duration::from_millis(200), client.read(&mut buf)).await;
        if !state.cut.load(Ordering::SeqCst)
            || state.generation.load(Ordering::SeqCst) != generation
        {
            return;
        }
        if matches!(read, Ok(Ok(0)) | Ok(Err(_))) {
            return;
        }
    }
}
