//! Watching a local folder: file-system events (notify) debounced into one "changed" signal
//! per burst of saves, so an editor's write-rename-chmod dance reconciles once, within a
//! second of the save.

use anyhow::{Context, Result};
use notify::{EventKind, RecursiveMode, Watcher};
use std::path::{Component, Path};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a folder must stay quiet before a burst of events counts as one change.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// A folder under watch. Dropping it stops the watch.
pub struct FolderWatcher {
    _watcher: notify::RecommendedWatcher,
    events: mpsc::UnboundedReceiver<()>,
}

/// Start watching `root` recursively. Events under hidden folders (`.git`, editor state)
/// and pure reads are ignored.
pub fn watch(root: &Path) -> Result<FolderWatcher> {
    let (tx, events) = mpsc::unbounded_channel();
    let root_owned = root.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            // An overflow or watcher error: re-read to be safe.
            let _ = tx.send(());
            return;
        };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let relevant = event.paths.is_empty()
            || event
                .paths
                .iter()
                .any(|p| !is_hidden(p.strip_prefix(&root_owned).unwrap_or(p)));
        if relevant {
            let _ = tx.send(());
        }
    })
    .context("starting the file watcher")?;
    watcher
        .watch(root, RecursiveMode::Recursive)
        .with_context(|| format!("watching {}", root.display()))?;
    Ok(FolderWatcher {
        _watcher: watcher,
        events,
    })
}

fn is_hidden(relative: &Path) -> bool {
    relative.components().any(|c| match c {
        Component::Normal(name) => name.to_string_lossy().starts_with('.'),
        _ => false,
    })
}

impl FolderWatcher {
    /// Wait for a change, then until the folder has been quiet for `debounce`. `false`
    /// when the watcher stopped.
    pub async fn changed(&mut self, debounce: Duration) -> bool {
        if self.events.recv().await.is_none() {
            return false;
        }
        loop {
            match tokio::time::timeout(debounce, self.events.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return false,
                Err(_quiet) => return true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_paths() {
        assert!(is_hidden(Path::new(".git/index")));
        assert!(is_hidden(Path::new("a/.ws.yaml.swp")));
        assert!(!is_hidden(Path::new("workspaces/a.yaml")));
    }

    #[tokio::test]
    async fn a_burst_of_saves_is_one_change() {
        let dir = tempfile::tempdir().unwrap();
        let mut watcher = watch(dir.path()).unwrap();
        for i in 0..5 {
            std::fs::write(dir.path().join("a.yaml"), format!("n: {i}\n")).unwrap();
        }
        let started = std::time::Instant::now();
        let changed = tokio::time::timeout(Duration::from_secs(5), watcher.changed(DEBOUNCE))
            .await
            .unwrap();
        assert!(changed);
        assert!(started.elapsed() < Duration::from_secs(1));
        // Nothing more is pending: the burst was one change.
        assert!(
            tokio::time::timeout(Duration::from_millis(400), watcher.changed(DEBOUNCE))
                .await
                .is_err()
        );
        // A hidden file's change is not one.
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join(".git/x"), "x").unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(400), watcher.changed(DEBOUNCE))
                .await
                .is_err()
        );
    }
}
