use crate::load::files::{self, IGNORE_FILE, SourceFile, Unreadable};
use anyhow::{Context, Result, anyhow};
use git2::{Commit, ObjectType, Odb, Oid, Repository, Tree, TreeWalkMode, TreeWalkResult};
use rayon::prelude::*;
use std::path::Path;

/// A revision read from git: its commit and the files of the berth repository in it.
#[derive(Debug, Clone)]
pub struct Revision {
    pub commit: String,
    pub summary: String,
    pub files: Vec<SourceFile>,
    /// What the signature check said about the commit, when the source checks signatures
    /// (`berth watch --verify-commits`); `None` when it does not.
    pub signature: Option<super::Verdict>,
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

    let files = read_tree(repo, &tree).with_context(|| format!("reading revision `{rev}`"))?;
    Ok(Revision {
        commit: commit.id().to_string(),
        summary: commit
            .summary()
            .ok()
            .flatten()
            .unwrap_or_default()
            .to_string(),
        files,
        signature: None,
    })
}

/// A symbolic link's mode in a git tree.
const SYMLINK_MODE: i32 = 0o120000;

/// The input files of a tree, by the rules of [`crate::load::files`] (the same as for a
/// folder): only input names, nothing hidden or under a `.berthignore` prefix; links and
/// submodules are returned as unreadable entries. Blobs that are not input are never
/// loaded, and an oversized one is measured from its header, not read.
fn read_tree(repo: &Repository, tree: &Tree<'_>) -> Result<Vec<SourceFile>> {
    let odb = repo.odb().context("opening the object database")?;
    let mut out = Vec::new();
    let symlink = |id: git2::Oid| Unreadable::Symlink {
        target: repo
            .find_blob(id)
            .map(|b| String::from_utf8_lossy(b.content()).into_owned())
            .unwrap_or_default(),
    };
    let ignore_entry =
        tree.get_name(IGNORE_FILE)
            .map(|entry| match (entry.kind(), entry.filemode()) {
                (Some(ObjectType::Blob), SYMLINK_MODE) => {
                    SourceFile::unreadable(IGNORE_FILE, symlink(entry.id()))
                }
                (Some(ObjectType::Blob), _) => read_blob(&odb, IGNORE_FILE.to_string(), entry.id()),
                (Some(ObjectType::Commit), _) => {
                    SourceFile::unreadable(IGNORE_FILE, Unreadable::Submodule)
                }
                _ => SourceFile::unreadable(IGNORE_FILE, Unreadable::Folder),
            });
    let ignored = files::ignored_by(ignore_entry.as_ref());
    out.extend(ignore_entry);
    let mut to_read: Vec<(String, Oid)> = Vec::new();

    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let Ok(name) = entry.name() else {
            // Not UTF-8: a name berth could never refer to; say so rather than drop it.
            let path = format!("{dir}{}", String::from_utf8_lossy(entry.name_bytes()));
            out.push(SourceFile::unreadable(
                path,
                Unreadable::Io("its name is not UTF-8".into()),
            ));
            return TreeWalkResult::Skip;
        };
        let path = format!("{dir}{name}");
        if path == IGNORE_FILE {
            return TreeWalkResult::Skip; // read above
        }
        if files::is_skipped(&path, &ignored) {
            return TreeWalkResult::Skip;
        }
        match entry.kind() {
            Some(ObjectType::Tree) => {}
            Some(ObjectType::Commit) => {
                out.push(SourceFile::unreadable(path, Unreadable::Submodule));
            }
            Some(ObjectType::Blob) if entry.filemode() == SYMLINK_MODE => {
                out.push(SourceFile::unreadable(path, symlink(entry.id())));
            }
            Some(ObjectType::Blob) if files::is_input_name(&path) => {
                to_read.push((path, entry.id()));
            }
            _ => {}
        }
        TreeWalkResult::Ok
    })
    .context("walking the git tree")?;
    out.extend(read_blobs(repo, &to_read));
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The input blobs a tree walk listed. The walk only lists; the blobs (100,000 of them in a
/// fleet, each inflated on its own when loose) are read on every core, each reader with its
/// own handle on the object database, as git2's are not shared between threads.
fn read_blobs(repo: &Repository, to_read: &[(String, Oid)]) -> Vec<SourceFile> {
    let chunk = to_read
        .len()
        .div_ceil(4 * rayon::current_num_threads())
        .max(1);
    let dir = repo.path();
    to_read
        .par_chunks(chunk)
        .flat_map_iter(|chunk| {
            let opened = Repository::open(dir);
            let odb = match &opened {
                Ok(repo) => repo.odb(),
                Err(err) => Err(git2::Error::from_str(err.message())),
            };
            chunk
                .iter()
                .map(|(path, id)| match &odb {
                    Ok(odb) => read_blob(odb, path.clone(), *id),
                    Err(err) => {
                        SourceFile::unreadable(path.clone(), Unreadable::Io(err.message().into()))
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One input blob: its text, or why not. A blob over the limit is measured from its header,
/// not read.
fn read_blob(odb: &Odb<'_>, path: String, id: Oid) -> SourceFile {
    match odb.read_header(id) {
        Ok((size, _)) if size as u64 > files::MAX_FILE_BYTES => {
            SourceFile::unreadable(path, Unreadable::TooLarge { bytes: size as u64 })
        }
        Ok(_) => match odb.read(id) {
            Ok(blob) => SourceFile::from_bytes(path, blob.data().to_vec()),
            Err(err) => SourceFile::unreadable(path, Unreadable::Io(err.message().into())),
        },
        Err(err) => SourceFile::unreadable(path, Unreadable::Io(err.message().into())),
    }
}
