use crate::load::SourceFile;
use anyhow::{Context, Result, anyhow};
use git2::{Commit, ObjectType, Repository, TreeWalkMode, TreeWalkResult};
use std::path::Path;

/// A revision read from git: its commit and the files of the berth repository in it.
#[derive(Debug, Clone)]
pub struct Revision {
    pub commit: String,
    pub summary: String,
    pub files: Vec<SourceFile>,
}

/// Read the files under `path` as they are at `rev` (a branch, tag, commit or any
/// `git rev-parse` expression) in the git repository containing `path`.
pub fn read_revision(path: &Path, rev: &str) -> Result<Revision> {
    let repo = Repository::discover(path)
        .with_context(|| format!("{} is not inside a git repository", path.display()))?;
    let workdir = repo
        .workdir()
        .ok_or_else(|| anyhow!("the git repository at {} is bare", path.display()))?;
    let absolute = path
        .canonicalize()
        .with_context(|| format!("resolving {}", path.display()))?;
    let workdir = workdir
        .canonicalize()
        .with_context(|| format!("resolving {}", workdir.display()))?;
    let prefix = absolute
        .strip_prefix(&workdir)
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .unwrap_or_default();

    let commit = repo
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .with_context(|| format!("unknown git revision `{rev}`"))?;
    read_commit(&repo, &commit, &prefix)
}

/// Read the files under the folder `prefix` (`""` for the root) of `commit`, straight from
/// the object database: works in bare repositories too (the reconciler's cache is one).
pub fn read_commit(repo: &Repository, commit: &Commit<'_>, prefix: &str) -> Result<Revision> {
    let rev = commit.id().to_string();
    let mut tree = commit.tree().context("reading the commit's tree")?;
    let prefix = prefix.trim_matches('/');
    if !prefix.is_empty() {
        let entry = tree
            .get_path(Path::new(prefix))
            .with_context(|| format!("`{prefix}` does not exist at revision `{rev}`"))?;
        tree = entry
            .to_object(repo)
            .and_then(|o| o.peel_to_tree())
            .with_context(|| format!("`{prefix}` is not a folder at revision `{rev}`"))?;
    }

    let mut files = Vec::new();
    let mut failure = None;
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() != Some(ObjectType::Blob) {
            return TreeWalkResult::Ok;
        }
        let name = entry.name().unwrap_or_default();
        let path = format!("{dir}{name}");
        match entry.to_object(repo).and_then(|o| o.peel_to_blob()) {
            Ok(blob) => {
                let text = if blob.size() as u64 > super::MAX_READ_BYTES {
                    String::new()
                } else {
                    match std::str::from_utf8(blob.content()) {
                        Ok(text) => text.to_string(),
                        Err(_) => return TreeWalkResult::Ok,
                    }
                };
                files.push(SourceFile {
                    path,
                    text,
                    bytes: blob.size() as u64,
                });
            }
            Err(err) => {
                failure = Some(anyhow!(err).context(format!("reading {path} at `{rev}`")));
                return TreeWalkResult::Abort;
            }
        }
        TreeWalkResult::Ok
    })
    .context("walking the git tree")?;
    if let Some(err) = failure {
        return Err(err);
    }
    Ok(Revision {
        commit: commit.id().to_string(),
        summary: commit
            .summary()
            .ok()
            .flatten()
            .unwrap_or_default()
            .to_string(),
        files,
    })
}
