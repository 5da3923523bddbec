//! `berth watch` from the command line: its flags, and turning them into a [`Config`].
//! Kept out of main.rs so the command line stays a thin shell and the flags are tested.

use super::config::Config;
use super::leader::LeaderConfig;
use crate::cluster::applyset::ApplySet;
use crate::source::{
    GitAuth, GitRef, GitRemote, SecretKey, SignaturePolicy, SourceSpec, TokenSource,
    default_applyset_name, is_git_repository, looks_like_scp,
};
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The flags of `berth watch`.
#[derive(clap::Args, Debug, Clone)]
pub struct WatchArgs {
    /// What to follow: a git URL (https://…, ssh://…, git@host:org/repo.git, file://…), a
    /// local git repository (its committed revisions are followed, not its work tree), or a
    /// plain folder (read as it is on disk, and re-applied within a second of a save).
    pub source: String,
    /// Follow this branch [default: main].
    #[arg(long, conflicts_with_all = ["tag", "commit"])]
    pub branch: Option<String>,
    /// Follow this tag instead of a branch.
    #[arg(long, conflicts_with = "commit")]
    pub tag: Option<String>,
    /// Pin this commit: applied once, then only kept in force (drift healing).
    #[arg(long)]
    pub commit: Option<String>,
    /// The berth repository's folder inside the git repository.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "",
        hide_default_value = true
    )]
    pub path: String,
    /// Follow SOURCE's files on disk even though it is a git repository.
    #[arg(long)]
    pub folder: bool,
    /// How often to fetch (e.g. 30s, 2m, 500ms).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub interval: Duration,
    /// How often to compare the cluster with the last good revision and heal drift.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub drift_interval: Duration,
    /// https: a file holding the access token (re-read at every fetch).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["git_token_env", "git_token_secret"])]
    pub git_token_file: Option<PathBuf>,
    /// https: the environment variable holding the access token.
    #[arg(long, value_name = "VAR", conflicts_with = "git_token_secret")]
    pub git_token_env: Option<String>,
    /// https: the Kubernetes Secret holding the access token, as NAMESPACE/NAME[:KEY] (the
    /// key `token` by default), read through the API server before every fetch (berth
    /// needs `get` on it).
    #[arg(long, value_name = "NAMESPACE/NAME[:KEY]")]
    pub git_token_secret: Option<SecretKey>,
    /// https: the user name sent with the token [default: x-access-token].
    #[arg(long)]
    pub git_username: Option<String>,
    /// ssh: the private key file (without passphrase).
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,
    /// ssh: the known_hosts file the server's key must be in [default: ~/.ssh/known_hosts].
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Where the bare clone of a remote is kept [default: $BERTH_CACHE_DIR, else
    /// $XDG_CACHE_HOME/berth, else ~/.cache/berth].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// A file holding the webhooks' shared secret (else $BERTH_WEBHOOK_SECRET). Without a
    /// secret, POST /hooks/git refuses everything.
    #[arg(long, value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Address of the status page (/ and /api/status), /healthz, /readyz, /metrics and
    /// /hooks/git (`none`: no server).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Run without leader election (only when exactly one instance runs).
    #[arg(long)]
    pub no_leader_elect: bool,
    /// How long the leader Lease lasts without renewal; a standby takes over after it. The
    /// leader stops writing two thirds of it after its last renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How long one reconcile cycle (plan and apply) may take; past it, the apply is
    /// stopped (nothing more is sent, nothing is pruned) and retried with backoff.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub cycle_timeout: Duration,
    /// After SIGTERM/SIGINT, how long an apply in flight may still run before it is
    /// abandoned (keep it below the pod's terminationGracePeriodSeconds).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// This instance's name in the leader Lease [default: $POD_NAME, else host-pid].
    #[arg(long)]
    pub identity: Option<String>,
    /// Keep objects git no longer holds instead of deleting them.
    #[arg(long)]
    pub no_prune: bool,
    /// Allow a revision to delete more than half of what berth owns.
    #[arg(long)]
    pub allow_mass_prune: bool,
    /// Apply only a commit signed by a key of --allowed-signers (an SSH signature, git's
    /// gpg.format=ssh). The commit to be applied is checked (the branch's head, the tag's
    /// commit), not its ancestors; any other head is refused and the last good one stays.
    #[arg(long, requires = "allowed_signers")]
    pub verify_commits: bool,
    /// The allowed signers (ssh-keygen's ALLOWED SIGNERS format, as git's
    /// gpg.ssh.allowedSignersFile), re-read at every fetch.
    #[arg(long, value_name = "FILE", requires = "verify_commits")]
    pub allowed_signers: Option<PathBuf>,
    /// With --verify-commits, also require the committer's e-mail to be one of the signing
    /// key's principals (git does not check this).
    #[arg(long, requires = "verify_commits")]
    pub signer_must_be_committer: bool,
    /// Post commit statuses to this git host: gitea (or forgejo), github, gitlab. The
    /// context is `berth/<applyset>`; the token is --commit-status-token-file's, else the
    /// git token's.
    #[arg(long, value_name = "HOST", value_parser = ["gitea", "forgejo", "github", "gitlab"])]
    pub commit_status: Option<String>,
    /// The host's API root [default: SOURCE's scheme://host[:port] for gitea;
    /// https://api.github.com; https://gitlab.com].
    #[arg(long, value_name = "URL", requires = "commit_status")]
    pub commit_status_api: Option<String>,
    /// The repository (`owner/name`; GitLab: the project's path) [default: from SOURCE's
    /// path].
    #[arg(long, value_name = "OWNER/NAME", requires = "commit_status")]
    pub commit_status_repo: Option<String>,
    /// A file holding the token for commit statuses (re-read for every status).
    #[arg(
        long,
        value_name = "FILE",
        requires = "commit_status",
        conflicts_with = "commit_status_token_env"
    )]
    pub commit_status_token_file: Option<PathBuf>,
    /// The environment variable holding the token for commit statuses.
    #[arg(long, value_name = "VAR", requires = "commit_status")]
    pub commit_status_token_env: Option<String>,
    /// The status page's URL as people reach it: the statuses' link [default: the
    /// --listen address].
    #[arg(long, value_name = "URL")]
    pub status_url: Option<String>,
    /// Also POST each revision's final status (and errors) as JSON to this URL, signed
    /// with HMAC-SHA256 in `X-Berth-Signature` (for chat tools).
    #[arg(long, value_name = "URL", requires = "notify_webhook_secret_file")]
    pub notify_webhook: Option<String>,
    /// The file holding --notify-webhook's signing secret.
    #[arg(long, value_name = "FILE", requires = "notify_webhook")]
    pub notify_webhook_secret_file: Option<PathBuf>,
}

/// `https://git.example.com:3000/org/platform.git` → (`https://git.example.com:3000`,
/// `org/platform`); `None` for a URL without a host and path (ssh's scp form is handled:
/// `git@host:org/repo.git` → `https://host`).
pub fn host_and_repo(url: &str) -> Option<(String, String)> {
    let (api, path) = if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/')?;
        let host = authority.rsplit('@').next()?;
        let scheme = if scheme == "http" { "http" } else { "https" };
        let host = if scheme == "https" && url.starts_with("ssh://") {
            host.split(':').next()?
        } else {
            host
        };
        (format!("{scheme}://{host}"), path)
    } else if looks_like_scp(url) {
        let (user_host, path) = url.split_once(':')?;
        (format!("https://{}", user_host.rsplit('@').next()?), path)
    } else {
        return None;
    };
    let repo = path.trim_matches('/').trim_end_matches(".git").to_string();
    (!repo.is_empty()).then_some((api, repo))
}

/// `30s`, `5m`, `1h`, `250ms`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| text.split_at(i))
        .unwrap_or((text, "s"));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 30s, 5m, 500ms)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (ms, s, m, h)")),
    };
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(format!("`{text}` must be more than zero"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn is_url(source: &str) -> bool {
    source.contains("://") || looks_like_scp(source)
}

/// The ApplySet name `berth watch SOURCE` and `berth status SOURCE` use by default: a
/// plain folder's as `berth apply FOLDER` names it, else `berth-<repository name>`.
pub fn default_applyset(source: &str, folder: bool) -> Result<String> {
    let path = Path::new(source);
    if !is_url(source) && (folder || !is_git_repository(path)) {
        return Ok(ApplySet::default_name(path));
    }
    let name = if is_url(source) {
        source.to_string()
    } else {
        path.canonicalize()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| source.to_string())
    };
    default_applyset_name(&name)
}

fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("berth");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache/berth"),
        None => std::env::temp_dir().join("berth-cache"),
    }
}

fn default_identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()) {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "berth".into());
    format!("{host}-{}", std::process::id())
}

impl WatchArgs {
    /// The source these flags describe.
    pub fn source_spec(&self) -> Result<SourceSpec> {
        let path = Path::new(&self.source);
        if !is_url(&self.source) && (self.folder || !is_git_repository(path)) {
            if !self.path.is_empty() {
                bail!("--path is for git sources; for a folder, name the folder itself");
            }
            if self.branch.is_some() || self.tag.is_some() || self.commit.is_some() {
                bail!(
                    "{} is not a git repository: --branch, --tag and --commit need one",
                    self.source
                );
            }
            return Ok(SourceSpec::Folder(path.to_path_buf()));
        }
        let reference = match (&self.branch, &self.tag, &self.commit) {
            (_, Some(tag), _) => GitRef::Tag(tag.clone()),
            (_, _, Some(commit)) => GitRef::Commit(commit.clone()),
            (Some(branch), _, _) => GitRef::Branch(branch.clone()),
            _ => GitRef::Branch("main".into()),
        };
        let token = match (
            &self.git_token_file,
            &self.git_token_env,
            &self.git_token_secret,
        ) {
            (Some(file), _, _) => Some(TokenSource::File(file.clone())),
            (_, Some(var), _) => Some(TokenSource::Env(var.clone())),
            (_, _, Some(secret)) => Some(TokenSource::Secret(Box::new(secret.clone()))),
            _ => None,
        };
        let known_hosts = self.known_hosts.clone().or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ssh/known_hosts"))
        });
        Ok(SourceSpec::Git {
            remote: GitRemote {
                url: self.source.clone(),
                reference,
                subpath: self.path.trim_matches('/').to_string(),
                auth: GitAuth {
                    token,
                    username: self.git_username.clone(),
                    ssh_key: self.ssh_key.clone(),
                    known_hosts,
                },
            },
            cache_dir: self.cache_dir.clone().unwrap_or_else(default_cache_dir),
        })
    }

    /// The reconciler's configuration.
    pub fn config(&self, applyset: Option<String>, applyset_namespace: String) -> Result<Config> {
        let source = self.source_spec()?;
        let name = match applyset {
            Some(name) => name,
            None => default_applyset(&self.source, self.folder)?,
        };
        let set = ApplySet {
            name,
            namespace: applyset_namespace,
        };
        let identity = self.identity.clone().unwrap_or_else(default_identity);
        let mut config = Config::new(source, set.clone(), identity.clone());
        config.poll_interval = self.interval;
        config.drift_interval = self.drift_interval;
        config.prune = !self.no_prune;
        config.cycle_timeout = self.cycle_timeout;
        config.shutdown_grace = self.shutdown_grace;
        config.allow_mass_prune = self.allow_mass_prune;
        config.verify_commits = match (self.verify_commits, &self.allowed_signers) {
            (true, Some(file)) => {
                if matches!(config.source, SourceSpec::Folder(_)) {
                    bail!(
                        "--verify-commits checks commits: {} is followed as a folder, which has none",
                        self.source
                    );
                }
                Some(SignaturePolicy {
                    allowed_signers: file.clone(),
                    signer_must_be_committer: self.signer_must_be_committer,
                })
            }
            _ => None,
        };
        config.listen = match self.listen.as_str() {
            "none" | "" => None,
            listen => Some(
                listen
                    .parse::<SocketAddr>()
                    .with_context(|| format!("--listen {listen}: expected HOST:PORT"))?,
            ),
        };
        config.webhook_secret = match &self.webhook_secret_file {
            // A missing file (an optional Secret volume) leaves webhooks off, loudly.
            Some(file) if !file.exists() => {
                tracing::warn!(file = %file.display(), "the webhook secret file does not exist");
                None
            }
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .with_context(|| format!("reading the webhook secret {}", file.display()))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("BERTH_WEBHOOK_SECRET").ok(),
        };
        config.notify = self.notify_config(&config)?;
        if !self.no_leader_elect {
            config.leader = Some(LeaderConfig {
                namespace: set.namespace.clone(),
                name: format!("{}-leader", set.name),
                identity,
                lease_duration: self.lease_duration,
            });
        }
        Ok(config)
    }
}

impl WatchArgs {
    /// Commit statuses and the chat webhook, from the flags.
    fn notify_config(&self, config: &Config) -> Result<super::notify::Config> {
        use super::notify::providers::Host;
        let mut notify = super::notify::Config {
            target_url: self.status_url.clone(),
            ..Default::default()
        };
        if let Some(host) = &self.commit_status {
            let host = Host::parse(host).map_err(anyhow::Error::msg)?;
            let derived = host_and_repo(&self.source);
            let api = match (&self.commit_status_api, host.default_api(), &derived) {
                (Some(api), _, _) => api.clone(),
                (None, Some(api), _) => api.to_string(),
                (None, None, Some((api, _))) => api.clone(),
                (None, None, None) => bail!(
                    "--commit-status {}: cannot tell the host's API from {}: pass --commit-status-api",
                    self.commit_status.as_deref().unwrap_or_default(),
                    self.source
                ),
            };
            let repo = match (&self.commit_status_repo, &derived) {
                (Some(repo), _) => repo.clone(),
                (None, Some((_, repo))) => repo.clone(),
                (None, None) => bail!(
                    "--commit-status: cannot tell the repository from {}: pass --commit-status-repo",
                    self.source
                ),
            };
            let token = match (
                &self.commit_status_token_file,
                &self.commit_status_token_env,
            ) {
                (Some(file), _) => TokenSource::File(file.clone()),
                (_, Some(var)) => TokenSource::Env(var.clone()),
                _ => match &config.source {
                    SourceSpec::Git { remote, .. } if remote.auth.token.is_some() => remote
                        .auth
                        .token
                        .clone()
                        .unwrap_or(TokenSource::Env(String::new())),
                    _ => bail!(
                        "--commit-status needs a token: --commit-status-token-file, \
                         --commit-status-token-env or the git token (--git-token-file, \
                         --git-token-env or --git-token-secret)"
                    ),
                },
            };
            notify.status = Some(super::notify::StatusTarget {
                provider: std::sync::Arc::from(host.provider(&api, &repo)),
                token,
            });
        }
        if let (Some(url), Some(file)) = (&self.notify_webhook, &self.notify_webhook_secret_file) {
            let secret = std::fs::read_to_string(file)
                .with_context(|| format!("reading the notify webhook secret {}", file.display()))?
                .trim()
                .to_string();
            if secret.is_empty() {
                bail!("the notify webhook secret {} is empty", file.display());
            }
            notify.chat = Some(super::notify::chat::ChatHook {
                url: url.clone(),
                secret,
                source: config.source.describe(),
            });
        }
        Ok(notify)
    }
}

/// Run `berth watch` until SIGTERM or SIGINT.
pub async fn watch(
    args: WatchArgs,
    kube_config: kube::Config,
    applyset: Option<String>,
    applyset_namespace: String,
) -> Result<()> {
    let config = args.config(applyset, applyset_namespace)?;
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        signals.cancel();
    });
    let running = super::run::start(config, kube_config, shutdown).await?;
    if let Some(addr) = running.addr {
        tracing::info!(%addr, "listening");
    }
    running.wait().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        watch: WatchArgs,
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sources_from_flags() {
        let args =
            Cli::parse_from(["x", "https://example.com/org/platform.git", "--tag", "v1"]).watch;
        let SourceSpec::Git { remote, .. } = args.source_spec().unwrap() else {
            panic!("a URL is a git source")
        };
        assert_eq!(remote.reference, GitRef::Tag("v1".into()));
        let config = args.config(None, "berth-system".into()).unwrap();
        assert_eq!(config.applyset.name, "berth-platform");
        assert_eq!(config.poll_interval, Duration::from_secs(30));
        assert_eq!(config.cycle_timeout, Duration::from_secs(300));
        assert_eq!(config.shutdown_grace, Duration::from_secs(20));
        assert_eq!(
            config.leader.as_ref().unwrap().lease_duration,
            Duration::from_secs(15)
        );

        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().to_string_lossy().into_owned();
        let args = Cli::parse_from(["x", folder.as_str()]).watch;
        assert!(matches!(args.source_spec().unwrap(), SourceSpec::Folder(_)));
        let args = Cli::parse_from(["x", folder.as_str(), "--branch", "main"]).watch;
        assert!(args.source_spec().is_err(), "a folder has no branches");
        git2::Repository::init(dir.path()).unwrap();
        let args = Cli::parse_from(["x", folder.as_str()]).watch;
        assert!(matches!(
            args.source_spec().unwrap(),
            SourceSpec::Git { .. }
        ));
        let args = Cli::parse_from(["x", folder.as_str(), "--folder"]).watch;
        assert!(matches!(args.source_spec().unwrap(), SourceSpec::Folder(_)));
    }

    #[test]
    fn commit_statuses_from_flags() {
        assert_eq!(
            host_and_repo("http://127.0.0.1:3000/berth/platform.git"),
            Some(("http://127.0.0.1:3000".into(), "berth/platform".into()))
        );
        assert_eq!(
            host_and_repo("https://bot@git.example.com/org/sub/platform"),
            Some(("https://git.example.com".into(), "org/sub/platform".into()))
        );
        assert_eq!(
            host_and_repo("git@github.com:octo/platform.git"),
            Some(("https://github.com".into(), "octo/platform".into()))
        );
        assert_eq!(host_and_repo("/srv/git/platform.git"), None);
        let url = "http://127.0.0.1:3000/berth/platform.git";
        let args = Cli::parse_from(["x", url, "--commit-status", "gitea"]).watch;
        let err = args.config(None, "b".into()).unwrap_err().to_string();
        assert!(err.contains("needs a token"), "{err}");
        let args =
            Cli::parse_from(["x", url, "--commit-status", "gitea", "--git-token-env", "T"]).watch;
        let config = args.config(None, "b".into()).unwrap();
        let status = config.notify.status.unwrap();
        assert_eq!(status.provider.name(), "gitea");
        assert_eq!(status.token, TokenSource::Env("T".into()));
        // A Secret's token is the git token, and the statuses' when they have none.
        let args = Cli::parse_from([
            "x",
            url,
            "--commit-status",
            "gitea",
            "--git-token-secret",
            "berth/berth-git",
        ])
        .watch;
        let config = args.config(None, "b".into()).unwrap();
        let secret = TokenSource::Secret(Box::new("berth/berth-git:token".parse().unwrap()));
        assert_eq!(config.notify.status.unwrap().token, secret);
        let SourceSpec::Git { remote, .. } = config.source else {
            panic!("a git source")
        };
        assert_eq!(remote.auth.token, Some(secret));
        assert!(Cli::try_parse_from(["x", url, "--git-token-secret", "no-namespace"]).is_err());
        assert!(
            Cli::try_parse_from([
                "x",
                url,
                "--git-token-secret",
                "a/b",
                "--git-token-file",
                "/t"
            ])
            .is_err()
        );
        assert!(Cli::try_parse_from(["x", url, "--commit-status", "bitbucket"]).is_err());
        assert!(
            Cli::try_parse_from(["x", url, "--notify-webhook", "http://h/"]).is_err(),
            "a chat hook needs its secret"
        );
    }

    #[test]
    fn verifying_commits_takes_an_allowed_signers_file_and_a_git_source() {
        let url = "https://example.com/org/platform.git";
        let args = Cli::parse_from(["x", url]).watch;
        assert_eq!(args.config(None, "b".into()).unwrap().verify_commits, None);
        let args = Cli::parse_from([
            "x",
            url,
            "--verify-commits",
            "--allowed-signers",
            "/etc/berth/signers/allowed_signers",
        ])
        .watch;
        assert_eq!(
            args.config(None, "b".into()).unwrap().verify_commits,
            Some(SignaturePolicy {
                allowed_signers: "/etc/berth/signers/allowed_signers".into(),
                signer_must_be_committer: false,
            })
        );
        // Each flag needs the other; the committer rule needs both.
        for flags in [
            &["--verify-commits"][..],
            &["--allowed-signers", "f"],
            &["--signer-must-be-committer"],
        ] {
            let parsed = Cli::try_parse_from(["x", url].iter().chain(flags));
            assert!(parsed.is_err(), "{flags:?} alone is accepted");
        }
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().to_string_lossy().into_owned();
        let args = Cli::parse_from([
            "x",
            folder.as_str(),
            "--verify-commits",
            "--allowed-signers",
            "f",
        ])
        .watch;
        let err = args.config(None, "b".into()).unwrap_err().to_string();
        assert!(
            err.contains("followed as a folder, which has none"),
            "{err}"
        );
    }
}
