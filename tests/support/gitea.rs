//! A real git host for tests: Gitea (built by `scripts/gitea`), one server per test binary,
//! started on first use with SQLite in a temporary folder, an admin user `berth`, an
//! access token, its HTTP server on a free loopback port and, when `ssh-keygen` can make
//! its host key, its built-in SSH server on another ([`Gitea::ssh`]).
//! Each test makes its own repository ([`Gitea::repository`]) and, once berth listens, a
//! push webhook pointing at it ([`GiteaRepo::add_push_hook`]).
//!
//! Its API is read back with a tiny HTTP/1.1 client of this file, not with berth's own:
//! what berth posted is checked by something other than berth.
//!
//! Missing Gitea (it cannot be built here) is a skip, and under CI=true a failure.

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const USER: &str = "berth";
const PASSWORD: &str = "berth-Passw0rd!";

/// The test binary's Gitea.
#[derive(Debug)]
pub struct Gitea {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub token: String,
    /// A file holding [`Gitea::token`] (for `--git-token-file`).
    pub token_file: PathBuf,
    pub root: PathBuf,
    pub log: PathBuf,
    /// Gitea's built-in SSH server, or why it does not run.
    ssh: Result<GiteaSsh, String>,
}

/// Gitea's built-in SSH server: `ssh://git@127.0.0.1:<port>/<owner>/<repo>.git`.
#[derive(Debug)]
pub struct GiteaSsh {
    pub port: u16,
    /// A known_hosts file with the server's host key (for `--known-hosts`).
    pub known_hosts: PathBuf,
}

static GITEA: OnceLock<Result<Gitea, String>> = OnceLock::new();

/// The Gitea of this test binary, started on first use; `None` (after saying why) when it
/// cannot be had here, unless CI=true, where that panics.
pub fn gitea() -> Option<&'static Gitea> {
    match GITEA.get_or_init(|| start().map_err(|e| format!("{e:#}"))) {
        Ok(gitea) => Some(gitea),
        Err(why) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("no Gitea, and CI=true makes that a failure: {why}");
            }
            super::say(&format!(
                "SKIPPED: no Gitea: {why} (run scripts/gitea path; under CI=true this is a failure)"
            ));
            None
        }
    }
}

fn binary_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("BERTH_GITEA_DIR").map(PathBuf::from)
        && dir.join("gitea").is_file()
        && dir.join("static/options").is_dir()
    {
        return Ok(dir);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gitea");
    let out = Command::new(&script)
        .arg("path")
        .env(
            "PATH",
            format!(
                "/usr/local/go/bin:{}",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "scripts/gitea path failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn start() -> anyhow::Result<Gitea> {
    let dir = binary_dir()?;
    let binary = dir.join("gitea");
    let root = tempfile::Builder::new()
        .prefix("berth-gitea-")
        .tempdir()
        .context("creating Gitea's folder")?
        .keep();
    let port = super::free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let ini = root.join("app.ini");
    let r = root.display();
    let ssh = ssh_host_key(&root);
    let ssh_ini = match &ssh {
        Ok(ssh) => format!(
            "DISABLE_SSH = false\nSTART_SSH_SERVER = true\nSSH_DOMAIN = 127.0.0.1\n\
             SSH_LISTEN_HOST = 127.0.0.1\nSSH_PORT = {port}\nSSH_LISTEN_PORT = {port}\n\
             SSH_SERVER_HOST_KEYS = {key}\nBUILTIN_SSH_SERVER_USER = git\n",
            port = ssh.port,
            key = root.join("ssh-host-key").display(),
        ),
        Err(_) => "DISABLE_SSH = true\n".to_string(),
    };
    std::fs::write(
        &ini,
        format!(
            "APP_NAME = berth test\nRUN_MODE = prod\nWORK_PATH = {r}\n\
             I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true\n\
             [server]\nHTTP_ADDR = 127.0.0.1\nHTTP_PORT = {port}\nROOT_URL = {url}/\n\
             STATIC_ROOT_PATH = {static_root}\n{ssh_ini}OFFLINE_MODE = true\n\
             LFS_START_SERVER = false\n\
             [database]\nDB_TYPE = sqlite3\nPATH = {r}/gitea.db\n\
             [repository]\nROOT = {r}/repos\nDEFAULT_BRANCH = main\n\
             [security]\nINSTALL_LOCK = true\nSECRET_KEY = {secret}\n\
             ALLOWED_HOST_LIST = loopback\n\
             [webhook]\nDELIVER_TIMEOUT = 5\n\
             [oauth2]\nENABLED = false\n\
             [service]\nDISABLE_REGISTRATION = true\n\
             [indexer]\nISSUE_INDEXER_TYPE = db\nREPO_INDEXER_ENABLED = false\n\
             [session]\nPROVIDER = memory\n\
             [cron]\nENABLED = false\n\
             [log]\nMODE = console\nLEVEL = Warn\nROOT_PATH = {r}/log\n",
            static_root = dir.join("static").display(),
            secret = super::random_hex(16)?,
        ),
    )?;
    let gitea = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new(&binary)
            .arg("--config")
            .arg(&ini)
            .arg("--work-path")
            .arg(&root)
            .args(args)
            .output()
            .with_context(|| format!("running gitea {args:?}"))?;
        if !out.status.success() {
            bail!(
                "gitea {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let started = Instant::now();
    gitea(&["migrate"])?;
    gitea(&[
        "admin",
        "user",
        "create",
        "--admin",
        "--username",
        USER,
        "--password",
        PASSWORD,
        "--email",
        "berth@berth.invalid",
        "--must-change-password=false",
    ])?;
    let token = gitea(&[
        "admin",
        "user",
        "generate-access-token",
        "--username",
        USER,
        "--token-name",
        "berth-tests",
        "--scopes",
        "all",
        "--raw",
    ])?;
    let token = token.lines().last().unwrap_or_default().trim().to_string();
    if token.len() < 20 {
        bail!("gitea generated no token: {token:?}");
    }
    let token_file = root.join("token");
    std::fs::write(&token_file, format!("{token}\n"))?;
    let log = root.join("gitea.log");
    // The server's parent is a thread that lives as long as the test binary (see
    // super::spawn_child: it dies with that thread).
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let (binary, ini, root, log) = (binary.clone(), ini.clone(), root.clone(), log.clone());
        std::thread::Builder::new()
            .name("gitea-keeper".into())
            .spawn(move || {
                let mut cmd = Command::new(&binary);
                cmd.arg("--config")
                    .arg(&ini)
                    .arg("--work-path")
                    .arg(&root)
                    .arg("web");
                match super::spawn_child(&mut cmd, &log) {
                    Ok(child) => {
                        let _ = tx.send(Ok(child.id()));
                        let _keep: Child = child;
                        loop {
                            std::thread::park();
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("{e:#}")));
                    }
                }
            })
            .context("spawning the Gitea keeper thread")?;
    }
    rx.recv()
        .context("the Gitea keeper thread died")?
        .map_err(anyhow::Error::msg)?;
    let gitea = Gitea {
        url,
        token,
        token_file,
        root,
        log,
        ssh,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = gitea.request("GET", "/api/v1/version", None) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "Gitea did not answer within 60 s; last lines of {}:\n{}",
                gitea.log.display(),
                super::tail(&gitea.log, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    super::say(&format!(
        "gitea: up at {} in {:.1}s ({})",
        gitea.url,
        started.elapsed().as_secs_f64(),
        gitea.root.display()
    ));
    Ok(gitea)
}

/// An ed25519 host key for Gitea's SSH server (made by `ssh-keygen`, so Gitea need not
/// make an RSA one), a free port for it, and a known_hosts file that holds the key.
fn ssh_host_key(root: &Path) -> Result<GiteaSsh, String> {
    let key = root.join("ssh-host-key");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "gitea-host", "-f"])
        .arg(&key)
        .output()
        .map_err(|e| format!("running ssh-keygen (openssh-client) for its host key: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ssh-keygen: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let public = std::fs::read_to_string(key.with_extension("pub"))
        .map_err(|e| format!("reading the host key: {e}"))?;
    let port = super::free_port().map_err(|e| format!("{e:#}"))?;
    let known_hosts = root.join("known_hosts");
    let mut fields = public.split_whitespace();
    let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
        return Err(format!("an odd public key: {public}"));
    };
    std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {kind} {blob}\n"))
        .map_err(|e| format!("writing known_hosts: {e}"))?;
    Ok(GiteaSsh { port, known_hosts })
}

impl Gitea {
    /// Gitea's SSH server; `None` (after saying why) when it does not run here, unless
    /// CI=true, where that panics.
    pub fn ssh(&self) -> Option<&GiteaSsh> {
        match &self.ssh {
            Ok(ssh) => Some(ssh),
            Err(why) => {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("no SSH server in Gitea, and CI=true makes that a failure: {why}");
                }
                super::say(&format!("SKIPPED: no SSH server in Gitea: {why}"));
                None
            }
        }
    }

    /// Register `public_key` (OpenSSH's one-line form) for [`USER`].
    pub fn add_ssh_key(&self, title: &str, public_key: &str) {
        let (code, answer) = self
            .request(
                "POST",
                "/api/v1/user/keys",
                Some(&json!({"title": title, "key": public_key.trim()})),
            )
            .expect("registering an ssh key");
        assert_eq!(code, 201, "registering the ssh key: {answer}");
    }

    /// One API request as the admin user (blocking; tiny: `Connection: close`, the whole
    /// answer read). The status code and the body as JSON (`null` when empty).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        self.request_as(method, path, body, Some(&self.token))
    }

    pub fn request_as(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let authority = self.url.trim_start_matches("http://");
        let mut stream =
            TcpStream::connect(authority).with_context(|| format!("connecting to {authority}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let auth = token
            .map(|t| format!("Authorization: token {t}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\n{auth}Accept: application/json\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        let text = String::from_utf8_lossy(&answer);
        let (head, rest) = text.split_once("\r\n\r\n").context("an HTTP answer")?;
        let code: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("an HTTP status")?;
        let rest = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        let value = if rest.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&rest).unwrap_or(Value::String(rest))
        };
        Ok((code, value))
    }

    /// A new empty repository `name` of [`USER`].
    pub fn repository(&'static self, name: &str) -> GiteaRepo {
        let (code, answer) = self
            .request(
                "POST",
                "/api/v1/user/repos",
                Some(&json!({"name": name, "default_branch": "main", "auto_init": false, "private": true})),
            )
            .expect("creating a Gitea repository");
        assert_eq!(code, 201, "creating repository {name}: {answer}");
        GiteaRepo {
            gitea: self,
            name: name.to_string(),
        }
    }
}

fn dechunk(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// A repository on the test Gitea.
pub struct GiteaRepo {
    pub gitea: &'static Gitea,
    pub name: String,
}

impl GiteaRepo {
    /// The clone URL (no credentials in it: berth reads the token from a file).
    pub fn clone_url(&self) -> String {
        format!("{}/{USER}/{}.git", self.gitea.url, self.name)
    }

    /// The clone URL over Gitea's SSH server.
    pub fn ssh_url(&self, ssh: &GiteaSsh) -> String {
        format!("ssh://git@127.0.0.1:{}/{USER}/{}.git", ssh.port, self.name)
    }

    /// A push URL with the token in it, for the tests' own `git push`.
    pub fn push_url(&self) -> String {
        format!(
            "http://{USER}:{}@{}/{USER}/{}.git",
            self.gitea.token,
            self.gitea.url.trim_start_matches("http://"),
            self.name
        )
    }

    /// A Gitea push webhook (type `gitea`, JSON, signed with `secret`) to `url`.
    pub fn add_push_hook(&self, url: &str, secret: &str) {
        let (code, answer) = self
            .gitea
            .request(
                "POST",
                &format!("/api/v1/repos/{USER}/{}/hooks", self.name),
                Some(&json!({
                    "type": "gitea",
                    "active": true,
                    "events": ["push"],
                    "config": {"url": url, "content_type": "json", "secret": secret},
                })),
            )
            .expect("creating a Gitea webhook");
        assert_eq!(code, 201, "creating the webhook: {answer}");
    }

    /// Every status of `commit`, oldest first (by id), as (state, context, description,
    /// target_url).
    pub fn statuses(&self, commit: &str) -> Vec<(String, String, String, String)> {
        let (code, answer) = self
            .gitea
            .request(
                "GET",
                &format!(
                    "/api/v1/repos/{USER}/{}/statuses/{commit}?limit=50",
                    self.name
                ),
                None,
            )
            .expect("reading the statuses");
        assert_eq!(code, 200, "reading the statuses: {answer}");
        let mut list: Vec<(i64, (String, String, String, String))> = answer
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| {
                let text = |k: &str| {
                    s.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                (
                    s.get("id").and_then(Value::as_i64).unwrap_or_default(),
                    (
                        text("status"),
                        text("context"),
                        text("description"),
                        text("target_url"),
                    ),
                )
            })
            .collect();
        list.sort_by_key(|(id, _)| *id);
        list.into_iter().map(|(_, s)| s).collect()
    }

    /// The states of `context` on `commit`, oldest first.
    pub fn states(&self, commit: &str, context: &str) -> Vec<String> {
        self.statuses(commit)
            .into_iter()
            .filter(|s| s.1 == context)
            .map(|s| s.0)
            .collect()
    }
}
