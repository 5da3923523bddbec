use crate::load::SourceFile;
use anyhow::{Context, Result, bail};
use std::path::Path;

/// Every text file under `root` (hidden files and `.gitignore`d paths left out, as git
/// would), with paths relative to `root` using `/`.
pub fn read_dir(root: &Path) -> Result<Vec<SourceFile>> {
    if !root.is_dir() {
        bail!("{} is not a directory", root.display());
    }
    let mut files = Vec::new();
    let walker = ignore::WalkBuilder::new(root)
        .hidden(true)
        .require_git(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    for entry in walker {
        let entry = entry.with_context(|| format!("reading {}", root.display()))?;
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        let relative = path
            .strip_prefix(root)
            .with_context(|| format!("{} is outside {}", path.display(), root.display()))?
            .to_string_lossy()
            .replace('\\', "/");
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        let text = if size > super::MAX_READ_BYTES {
            // Keep the file, unread, so the loader can say it is too large.
            String::new()
        } else {
            match std::fs::read(path) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => text,
                    Err(_) => continue, // not text: no document, no script
                },
                Err(err) => {
                    return Err(err).with_context(|| format!("reading {}", path.display()));
                }
            }
        };
        files.push(SourceFile {
            path: relative,
            text,
            bytes: size,
        });
    }
    Ok(files)
}
