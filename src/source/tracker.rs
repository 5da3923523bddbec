//! A followed source, whatever it is: a git remote (fetched) or a plain folder (read as it
//! is on disk). The reconciler asks it for the latest revision and never cares which.
//! With a [`SignaturePolicy`], every revision it hands over says whether its commit is
//! signed by an allowed key; the check runs at every fetch, not once per commit, so a
//! changed allowed-signers file is heeded for the head as it is.

use super::auth::TokenSource;
use super::git::Revision;
use super::remote::{GitRemote, GitTracker};
use super::signature::{AllowedSigners, SignaturePolicy};
use super::watch::{FolderWatcher, watch};
use anyhow::{Context, Result, anyhow};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What to follow.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    /// A git remote, kept as a bare clone under `cache_dir`.
    Git {
        remote: GitRemote,
        cache_dir: PathBuf,
    },
    /// A folder on disk, read as it is (and watched for saves).
    Folder(PathBuf),
}

impl SourceSpec {
    /// Words for logs and status (credentials redacted).
    pub fn describe(&self) -> String {
        match self {
            SourceSpec::Git { remote, .. } => format!(
                "{} ({}{})",
                remote.auth.redact(&remote.url),
                remote.reference,
                if remote.subpath.is_empty() {
                    String::new()
                } else {
                    format!(", folder {}", remote.subpath)
                }
            ),
            SourceSpec::Folder(path) => format!("folder {}", path.display()),
        }
    }
}

enum Inner {
    Git {
        tracker: Box<GitTracker>,
        last: Option<Revision>,
    },
    Folder(PathBuf),
}

/// A source being followed. Cheap to clone; git and disk work runs off the async runtime.
#[derive(Clone)]
pub struct Tracker {
    spec: SourceSpec,
    inner: Arc<Mutex<Inner>>,
    verify: Option<Arc<SignaturePolicy>>,
    /// Reads a token kept in a Kubernetes Secret.
    kube: Option<kube::Client>,
}

impl Tracker {
    pub fn open(spec: SourceSpec) -> Result<Tracker> {
        let inner = match &spec {
            SourceSpec::Git { remote, cache_dir } => Inner::Git {
                tracker: Box::new(GitTracker::open(remote.clone(), cache_dir)?),
                last: None,
            },
            SourceSpec::Folder(path) => {
                anyhow::ensure!(path.is_dir(), "{} is not a directory", path.display());
                Inner::Folder(path.clone())
            }
        };
        Ok(Tracker {
            spec,
            inner: Arc::new(Mutex::new(inner)),
            verify: None,
            kube: None,
        })
    }

    /// Read a git token kept in a Kubernetes Secret through `client`, before every fetch.
    pub fn reading_secrets_with(mut self, client: kube::Client) -> Tracker {
        self.kube = Some(client);
        self
    }

    /// Check every revision's signature against `policy` (`None`: no check). The
    /// allowed-signers file is read once now, so that a missing or unreadable one stops
    /// `berth watch` at its start instead of refusing every revision; a folder has no
    /// commits to check.
    pub fn verifying(mut self, policy: Option<SignaturePolicy>) -> Result<Tracker> {
        if let Some(policy) = &policy {
            if let SourceSpec::Folder(path) = &self.spec {
                anyhow::bail!(
                    "{} is a folder: it has no commits whose signatures --verify-commits could check",
                    path.display()
                );
            }
            let signers = AllowedSigners::read(&policy.allowed_signers)?;
            if signers.is_empty() {
                tracing::warn!(
                    file = %policy.allowed_signers.display(),
                    "the allowed signers file lists no key: every revision will be refused"
                );
            }
        }
        self.verify = policy.map(Arc::new);
        Ok(self)
    }

    pub fn spec(&self) -> &SourceSpec {
        &self.spec
    }

    /// The full ref a push event must name to concern this source (`refs/heads/main`);
    /// `None` for folders and fixed commits.
    pub fn followed_ref(&self) -> Option<String> {
        match &self.spec {
            SourceSpec::Git { remote, .. } => remote.reference.full_name(),
            SourceSpec::Folder(_) => None,
        }
    }

    /// A watcher for a folder source (`None` for git).
    pub fn watcher(&self) -> Result<Option<FolderWatcher>> {
        match &self.spec {
            SourceSpec::Folder(path) => watch(path).map(Some),
            SourceSpec::Git { .. } => Ok(None),
        }
    }

    /// Fetch (git) or re-read (folder) and return the latest revision. A folder's revision
    /// id is a hash of its files, so an unchanged folder has an unchanged revision.
    pub async fn latest(&self) -> Result<Revision> {
        // A Secret's token is read here, off the git thread; a file's or variable's when
        // the server asks for it.
        let token = match &self.spec {
            SourceSpec::Git { remote, .. } => match &remote.auth.token {
                Some(source @ TokenSource::Secret(_)) => source
                    .read(self.kube.as_ref())
                    .await
                    .map_err(|why| anyhow!(why))
                    .with_context(|| {
                        format!(
                            "fetching {} of {}",
                            remote.reference,
                            remote.auth.redact(&remote.url)
                        )
                    })?,
                _ => None,
            },
            SourceSpec::Folder(_) => None,
        };
        let inner = self.inner.clone();
        let verify = self.verify.clone();
        tokio::task::spawn_blocking(move || {
            let mut inner = inner
                .lock()
                .map_err(|_| anyhow!("the source's lock was poisoned"))?;
            match &mut *inner {
                Inner::Git { tracker, last } => {
                    let commit = tracker.fetch(token)?;
                    let mut revision = match last.as_ref().filter(|r| r.commit == commit) {
                        Some(revision) => revision.clone(),
                        None => {
                            let revision = tracker.read(&commit)?;
                            *last = Some(revision.clone());
                            revision
                        }
                    };
                    if let Some(policy) = &verify {
                        revision.signature = Some(tracker.verify(&commit, policy));
                    }
                    Ok(revision)
                }
                Inner::Folder(path) => {
                    let files = super::read_dir(path)?;
                    let mut digest = Sha256::new();
                    for file in &files {
                        digest.update(file.path.as_bytes());
                        digest.update([0]);
                        match &file.content {
                            Ok(text) => digest.update(text.as_bytes()),
                            Err(why) => digest.update(format!("unreadable: {why}").as_bytes()),
                        }
                        digest.update([0]);
                    }
                    let hash: String = digest.finalize()[..8]
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    Ok(Revision {
                        commit: format!("folder-{hash}"),
                        summary: format!("{} as on disk", path.display()),
                        files,
                        signature: None,
                    })
                }
            }
        })
        .await
        .context("the source reader stopped")?
    }
}
