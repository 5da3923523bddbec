//! Following a git remote: a bare clone kept in a cache folder, fetched on demand, whose
//! revisions are read straight from the object database (no checkout, as `berth diff`
//! does). One remote per tracker; works for https, ssh, `file://` URLs and local paths.

use super::auth::GitAuth;
use super::git::{Revision, read_commit};
use super::signature::{SignaturePolicy, Verdict};
use anyhow::{Context, Result, anyhow, bail};
use git2::{AutotagOption, FetchOptions, Oid, Repository};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// What to follow in the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRef {
    /// The tip of a branch; moves with every push.
    Branch(String),
    /// A tag; moves only when the tag is moved.
    Tag(String),
    /// A fixed commit (full or abbreviated id): fetched once, never moves.
    Commit(String),
}

impl std::fmt::Display for GitRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitRef::Branch(b) => write!(f, "branch {b}"),
            GitRef::Tag(t) => write!(f, "tag {t}"),
            GitRef::Commit(c) => write!(f, "commit {c}"),
        }
    }
}

impl GitRef {
    /// The full ref name a push event names for this ref (`refs/heads/main`), if any.
    pub fn full_name(&self) -> Option<String> {
        match self {
            GitRef::Branch(b) => Some(format!("refs/heads/{b}")),
            GitRef::Tag(t) => Some(format!("refs/tags/{t}")),
            GitRef::Commit(_) => None,
        }
    }
}

/// Where a remote is and what of it to read.
#[derive(Debug, Clone)]
pub struct GitRemote {
    /// `https://…`, `ssh://…`, `git@host:org/repo.git`, `file://…` or a local path.
    pub url: String,
    pub reference: GitRef,
    /// The berth repository's folder inside the git repository (`""`: the root).
    pub subpath: String,
    pub auth: GitAuth,
}

/// A bare clone of one remote in the cache folder.
pub struct GitTracker {
    remote: GitRemote,
    repo: Repository,
    /// The fixed commit, once found (a `Commit` ref is fetched only until then).
    pinned: Option<Oid>,
}

impl GitTracker {
    /// Open (or create) the bare clone of `remote` under `cache_dir`.
    pub fn open(remote: GitRemote, cache_dir: &Path) -> Result<GitTracker> {
        let dir = cache_dir.join(clone_folder(&remote.url));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let repo = match Repository::open_bare(&dir) {
            Ok(repo) => repo,
            Err(_) => Repository::init_bare(&dir)
                .with_context(|| format!("creating a bare clone in {}", dir.display()))?,
        };
        Ok(GitTracker {
            remote,
            repo,
            pinned: None,
        })
    }

    pub fn remote(&self) -> &GitRemote {
        &self.remote
    }

    /// Fetch the followed ref and return the commit it points at. Blocking (network).
    /// `token` is the token as read before (a Secret's), if it was.
    pub fn fetch(&mut self, token: Option<String>) -> Result<String> {
        if let Some(oid) = self.pinned {
            return Ok(oid.to_string());
        }
        let refspecs: Vec<String> = match &self.remote.reference {
            GitRef::Branch(b) => vec![format!("+refs/heads/{b}:refs/remotes/origin/{b}")],
            GitRef::Tag(t) => vec![format!("+refs/tags/{t}:refs/tags/{t}")],
            // A commit is reachable from some branch or tag: fetch them all, once.
            GitRef::Commit(_) => vec![
                "+refs/heads/*:refs/remotes/origin/*".to_string(),
                "+refs/tags/*:refs/tags/*".to_string(),
            ],
        };
        let url = local_url(&self.remote.url);
        let redact = |text: &str| self.remote.auth.redact_also(text, token.as_deref());
        let mut remote = self
            .repo
            .remote_anonymous(&url)
            .with_context(|| format!("using remote {}", redact(&url)))?;
        let mut options = FetchOptions::new();
        let refused_host_key = std::sync::Arc::new(std::sync::Mutex::new(None));
        options.remote_callbacks(
            self.remote
                .auth
                .callbacks(token.clone(), refused_host_key.clone()),
        );
        options.download_tags(AutotagOption::None);
        remote
            .fetch(&refspecs, Some(&mut options), None)
            .map_err(|e| {
                // libgit2 words a refused token as an unsupported scheme ("server
                // requires authentication that we do not support"): say what it means.
                let refused = e.code() == git2::ErrorCode::Auth
                    || (e.class() == git2::ErrorClass::Http
                        && e.message().contains("authentication"));
                let host_key = refused_host_key.lock().ok().and_then(|r| r.clone());
                if let Some(why) = host_key {
                    anyhow!("{why}")
                } else if refused && self.remote.auth.token.is_some() {
                    anyhow!("the server refused the token (a wrong or expired token, or one without read access?)")
                } else {
                    anyhow!("{}", redact(e.message()))
                }
            })
            .with_context(|| {
                format!(
                    "fetching {} of {}",
                    self.remote.reference,
                    redact(&self.remote.url)
                )
            })?;
        let oid = match &self.remote.reference {
            GitRef::Branch(b) => self
                .repo
                .refname_to_id(&format!("refs/remotes/origin/{b}"))
                .with_context(|| format!("the remote has no branch `{b}`"))?,
            GitRef::Tag(t) => self
                .repo
                .revparse_single(&format!("refs/tags/{t}"))
                .and_then(|o| o.peel_to_commit())
                .map(|c| c.id())
                .with_context(|| format!("the remote has no tag `{t}`"))?,
            GitRef::Commit(c) => {
                let oid = self
                    .repo
                    .revparse_single(c)
                    .and_then(|o| o.peel_to_commit())
                    .map(|c| c.id())
                    .with_context(|| {
                        format!("commit `{c}` is on no branch or tag of the remote")
                    })?;
                self.pinned = Some(oid);
                oid
            }
        };
        Ok(oid.to_string())
    }

    /// The berth repository's files at `commit`. Blocking (reads the object database).
    pub fn read(&self, commit: &str) -> Result<Revision> {
        let oid = Oid::from_str(commit).with_context(|| format!("bad commit id `{commit}`"))?;
        let commit = self
            .repo
            .find_commit(oid)
            .with_context(|| format!("commit {oid} is not in the cache"))?;
        read_commit(&self.repo, &commit, &self.remote.subpath)
    }

    /// Whether `commit` is signed as `policy` requires. Blocking (reads the allowed signers
    /// file and the commit).
    pub fn verify(&self, commit: &str, policy: &SignaturePolicy) -> Verdict {
        match Oid::from_str(commit) {
            Ok(oid) => super::signature::verify_commit(&self.repo, oid, policy),
            Err(_) => Verdict::Refused(format!("`{commit}` is not a commit id")),
        }
    }
}

/// The cache folder of a remote: readable, and unique per URL.
fn clone_folder(url: &str) -> String {
    let digest = Sha256::digest(url.as_bytes());
    let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    let name: String = url
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("repo")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(40)
        .collect();
    format!("{name}-{hash}.git")
}

/// A local path as libgit2 wants it (absolute); URLs as they are.
fn local_url(url: &str) -> String {
    if url.contains("://") || looks_like_scp(url) {
        return url.to_string();
    }
    PathBuf::from(url)
        .canonicalize()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| url.to_string())
}

/// `git@host:org/repo.git`, the scp-like ssh syntax.
pub fn looks_like_scp(url: &str) -> bool {
    match url.split_once(':') {
        Some((host, rest)) => host.contains('@') && !host.contains('/') && !rest.starts_with("//"),
        None => false,
    }
}

/// Whether `path` is a git repository of its own (bare or not) rather than a plain folder.
pub fn is_git_repository(path: &Path) -> bool {
    Repository::open(path).is_ok()
}

/// A name for the ApplySet of a remote: `berth-<repository name>`.
pub fn default_applyset_name(url: &str) -> Result<String> {
    let name = url
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .rsplit(['/', ':'])
        .next()
        .unwrap_or_default()
        .to_lowercase();
    let mut out: String = format!("berth-{name}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    out.truncate(63);
    let out = out.trim_end_matches('-').to_string();
    if out == "berth" {
        bail!("cannot name an ApplySet after `{url}`: pass --applyset");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scp_like_urls_are_recognised() {
        assert!(looks_like_scp("git@github.com:org/repo.git"));
        assert!(!looks_like_scp("https://github.com/org/repo.git"));
        assert!(!looks_like_scp("/srv/git/repo.git"));
        assert!(!looks_like_scp("C:/x"));
    }

    #[test]
    fn cache_folders_and_applyset_names() {
        let a = clone_folder("https://example.com/org/platform.git");
        assert!(a.starts_with("platform-") && a.ends_with(".git"), "{a}");
        assert_ne!(a, clone_folder("https://example.com/other/platform.git"));
        assert_eq!(
            default_applyset_name("git@github.com:org/Data_Platform.git").unwrap(),
            "berth-data-platform"
        );
        assert!(default_applyset_name("/").is_err());
    }
}
