//! Large generated repositories (`berth-bench gen`) in a local git remote, for tests that
//! need an apply long enough to interrupt: each revision (`--rev`) changes every object.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A `berth watch` command ready to spawn ([`GeneratedRepo::watch_command`]).
pub struct WatchCommand {
    pub command: Command,
    /// Where its server listens (`host:port`).
    pub addr: String,
    /// Its JSON log (stderr).
    pub log: PathBuf,
    /// Its scratch folder.
    pub dir: PathBuf,
}

/// A minimal HTTP/1.1 GET: the status code and the body (0 and nothing when nothing
/// answers).
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    status_and_body(&response)
}

/// The status code and body of a raw HTTP/1.1 response (0 and nothing when it has none).
pub fn status_and_body(response: &str) -> (u16, String) {
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// A bare remote and a work folder whose contents are a generated repository.
pub struct GeneratedRepo {
    dir: tempfile::TempDir,
    pub workspaces: usize,
    /// Prefix of every namespace the repository renders (unique to the test).
    pub prefix: String,
}

pub fn git(dir: &Path, args: &[&str]) -> String {
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

impl GeneratedRepo {
    /// An empty remote; nothing committed yet.
    pub fn new(test: &str, workspaces: usize) -> GeneratedRepo {
        let prefix = format!("{}-", super::unique_name(test));
        let dir = tempfile::tempdir().expect("a temporary folder");
        git(dir.path(), &["init", "-q", "--bare", "remote.git"]);
        let repo = GeneratedRepo {
            dir,
            workspaces,
            prefix,
        };
        std::fs::create_dir(repo.work()).expect("mkdir work");
        git(&repo.work(), &["init", "-q"]);
        git(&repo.work(), &["checkout", "-q", "-b", "main"]);
        let bare = repo.bare();
        git(
            &repo.work(),
            &[
                "remote",
                "add",
                "origin",
                bare.to_str().expect("a UTF-8 path"),
            ],
        );
        repo
    }

    pub fn bare(&self) -> PathBuf {
        self.dir.path().join("remote.git")
    }

    /// The work folder: the repository as last generated (for `berth apply` and `plan`).
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.bare().display())
    }

    /// A folder for a test's other files (logs, kubeconfigs, caches).
    pub fn scratch(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).expect("mkdir");
        path
    }

    /// `berth watch` of this repository's remote (branch `main`, polled every 500 ms) into
    /// the ApplySet `applyset` in `<prefix>berth`: its server on a free loopback port, its
    /// cache and JSON log in the scratch folder `name`. The caller adds its own flags and
    /// spawns it.
    pub fn watch_command(&self, name: &str, applyset: &str, kubeconfig: &Path) -> WatchCommand {
        let dir = self.scratch(name);
        let log = dir.join("stderr.jsonl");
        let addr = format!("127.0.0.1:{}", super::free_port().expect("a free port"));
        // Benchmarks may run a release build of berth (`BERTH_BENCH_BIN`) from this debug test.
        let berth = std::env::var_os("BERTH_BENCH_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| assert_cmd::cargo::cargo_bin("berth"));
        let mut command = Command::new(berth);
        command
            .arg("watch")
            .arg(self.url())
            .args(["--branch", "main", "--interval", "500ms"])
            .args(["--listen", &addr])
            .args(["--applyset", applyset, "--applyset-namespace"])
            .arg(format!("{}berth", self.prefix))
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info,kube_client=off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("creating the log file"));
        WatchCommand {
            command,
            addr,
            log,
            dir,
        }
    }

    /// Generate revision `rev` into the work folder (replacing what was there).
    pub fn generate(&self, rev: &str) {
        for entry in std::fs::read_dir(self.work()).expect("reading the work folder") {
            let path = entry.expect("an entry").path();
            if path.file_name().is_some_and(|n| n != ".git") {
                std::fs::remove_dir_all(&path)
                    .or_else(|_| std::fs::remove_file(&path))
                    .expect("clearing the work folder");
            }
        }
        let out = self.scratch("gen-out").join(rev);
        let status = Command::new(assert_cmd::cargo::cargo_bin("berth-bench"))
            .args(["gen", "--workspaces", &self.workspaces.to_string()])
            .args(["--namespace-prefix", &self.prefix, "--rev", rev])
            .arg("--out")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("running berth-bench gen");
        assert!(status.success(), "berth-bench gen failed");
        let copy = Command::new("cp")
            .arg("-r")
            .arg(format!("{}/.", out.display()))
            .arg(self.work())
            .status()
            .expect("running cp");
        assert!(copy.success(), "copying the generated repository");
    }

    /// Generate `rev`, commit it and push it; the commit's id.
    pub fn commit(&self, rev: &str) -> String {
        self.generate(rev);
        git(&self.work(), &["add", "-A"]);
        git(
            &self.work(),
            &["commit", "-q", "-m", &format!("revision {rev}")],
        );
        git(&self.work(), &["push", "-q", "origin", "main"]);
        git(&self.work(), &["rev-parse", "HEAD"])
    }
}
