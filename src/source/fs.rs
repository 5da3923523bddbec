use crate::load::files::{self, IGNORE_FILE, SourceFile, Unreadable};
use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The input files under `root`, with paths relative to `root` using `/`, read by the rules
/// of [`crate::load::files`] (the same as for a git revision): only input names, nothing
/// hidden or under a `.berthignore` prefix. A `.gitignore`d path is skipped too (git never
/// holds it). Links are not followed and nested git repositories are not entered; both
/// are returned as unreadable entries, so the loader can say so.
pub fn read_dir(root: &Path) -> Result<Vec<SourceFile>> {
    if !root.is_dir() {
        bail!("{} is not a directory", root.display());
    }
    let mut out = Vec::new();
    let ignore_entry = read_ignore_file(root);
    let ignored = files::ignored_by(ignore_entry.as_ref());
    out.extend(ignore_entry);

    // Folders holding a `.git` (other than the root) are other repositories: recorded and
    // not entered. The filter runs inside the walker, hence the shared list.
    let nested: Arc<Mutex<Vec<String>>> = Arc::default();
    let walker = {
        let root = root.to_path_buf();
        let nested = nested.clone();
        let ignored = ignored.clone();
        ignore::WalkBuilder::new(&root)
            .hidden(true)
            .require_git(false)
            .follow_links(false)
            .sort_by_file_name(|a, b| a.cmp(b))
            .filter_entry(move |entry| {
                let Some(relative) = relative_path(&root, entry.path()) else {
                    return true; // the root itself
                };
                if files::is_skipped(&relative, &ignored) {
                    return false;
                }
                let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
                if is_dir && entry.path().join(".git").exists() {
                    nested
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(relative);
                    return false;
                }
                true
            })
            .build()
    };
    let mut to_read: Vec<(std::path::PathBuf, String)> = Vec::new();
    for entry in walker {
        let entry = entry.with_context(|| format!("reading {}", root.display()))?;
        let Some(relative) = relative_path(root, entry.path()) else {
            continue;
        };
        let Some(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_symlink() {
            out.push(SourceFile::unreadable(
                relative,
                Unreadable::Symlink {
                    target: link_target(path),
                },
            ));
        } else if kind.is_file() && files::is_input_name(&relative) {
            to_read.push((path.to_path_buf(), relative));
        }
    }
    // The walk only lists; reading the files is most of the work (100,000 of them in a
    // fleet), done on every core.
    out.par_extend(
        to_read
            .into_par_iter()
            .map(|(path, relative)| read_file(&path, relative)),
    );
    let nested = std::mem::take(&mut *nested.lock().unwrap_or_else(|e| e.into_inner()));
    out.extend(
        nested
            .into_iter()
            .map(|path| SourceFile::unreadable(path, Unreadable::Submodule)),
    );
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The repository's ignore file, if there is one: a symlink or a folder in its place is
/// reported as unreadable, as any other input would be.
fn read_ignore_file(root: &Path) -> Option<SourceFile> {
    let ignore_file = root.join(IGNORE_FILE);
    match std::fs::symlink_metadata(&ignore_file) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => Some(SourceFile::unreadable(
            IGNORE_FILE,
            Unreadable::Io(err.to_string()),
        )),
        Ok(meta) if meta.is_symlink() => Some(SourceFile::unreadable(
            IGNORE_FILE,
            Unreadable::Symlink {
                target: link_target(&ignore_file),
            },
        )),
        Ok(meta) if meta.is_dir() => Some(SourceFile::unreadable(IGNORE_FILE, Unreadable::Folder)),
        Ok(_) => Some(read_file(&ignore_file, IGNORE_FILE.to_string())),
    }
}

fn link_target(path: &Path) -> String {
    std::fs::read_link(path)
        .map(|t| t.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn relative_path(root: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    if relative.as_os_str().is_empty() {
        return None;
    }
    Some(relative.to_string_lossy().replace('\\', "/"))
}

/// One input file: its text, or why not. A file over the limit is not opened.
fn read_file(path: &Path, relative: String) -> SourceFile {
    let size = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(err) => return SourceFile::unreadable(relative, Unreadable::Io(err.to_string())),
    };
    if size > files::MAX_FILE_BYTES {
        return SourceFile::unreadable(relative, Unreadable::TooLarge { bytes: size });
    }
    match std::fs::read(path) {
        Ok(bytes) => SourceFile::from_bytes(relative, bytes),
        Err(err) => SourceFile::unreadable(relative, Unreadable::Io(err.to_string())),
    }
}
