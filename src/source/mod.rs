//! Source: where a repository's files come from — a folder on disk, or a revision of a git
//! repository read straight from its object database (no checkout). This is one of berth's
//! two I/O edges; everything after it works on the returned [`SourceFile`]s.
//!
//! For the long-running reconciler, [`Tracker`] follows a source: a git remote (https with
//! a token, ssh with a key and known_hosts, `file://` or a local path) fetched into a cache,
//! or a plain folder watched for saves.

mod auth;
mod fs;
mod git;
mod remote;
mod tracker;
mod watch;

pub use auth::{GitAuth, HostCheck, TokenSource, check_known_host};
pub use fs::read_dir;
pub use git::{Revision, read_commit, read_revision};
pub use remote::{
    GitRef, GitRemote, GitTracker, default_applyset_name, is_git_repository, looks_like_scp,
};
pub use tracker::{SourceSpec, Tracker};
pub use watch::{DEBOUNCE, FolderWatcher, watch};

/// Files larger than this are not read; the loader refuses YAML files that large.
pub const MAX_READ_BYTES: u64 = crate::load::yaml::MAX_FILE_BYTES as u64;
