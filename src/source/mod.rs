//! Source: where a repository's files come from — a folder on disk, or a revision of a git
//! repository read straight from its object database (no checkout). This is one of berth's
//! two I/O edges; everything after it works on the returned [`SourceFile`]s.

mod fs;
mod git;

pub use fs::read_dir;
pub use git::{Revision, read_revision};

/// Files larger than this are not read; the loader refuses YAML files that large.
pub const MAX_READ_BYTES: u64 = crate::load::yaml::MAX_FILE_BYTES as u64;
