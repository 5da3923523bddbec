//! Source: where a repository's files come from — a folder on disk, or a revision of a git
//! repository read straight from its object database (no checkout). This is one of berth's
//! two I/O edges; everything after it works on the returned [`SourceFile`]s.
//!
//! For the long-running reconciler, [`Tracker`] follows a source: a git remote (https with
//! a token, ssh with a key and known_hosts, `file://` or a local path) fetched into a cache,
//! or a plain folder watched for saves — and, with a [`SignaturePolicy`], checks that the
//! commit it hands over is signed by an allowed key ([`signature`]).

mod auth;
mod fs;
mod git;
mod remote;
pub mod signature;
mod tracker;
mod watch;

pub use auth::{GitAuth, HostCheck, SecretKey, TokenSource, check_known_host};
pub use fs::read_dir;
pub use git::{Revision, read_commit, read_revision};
pub use remote::{
    GitRef, GitRemote, GitTracker, default_applyset_name, is_git_repository, looks_like_scp,
};
pub use signature::{AllowedSigners, SignaturePolicy, Signer, Verdict};
pub use tracker::{SourceSpec, Tracker};
pub use watch::{DEBOUNCE, FolderWatcher, watch};

#[cfg(test)]
mod tests {
    use crate::load::files::{MAX_FILE_BYTES, SourceFile};
    use proptest::prelude::*;
    use std::path::Path;

    #[derive(Debug, Clone)]
    enum Content {
        Text(String),
        Bytes(Vec<u8>),
        Large,
        Link(String),
    }

    fn content() -> impl Strategy<Value = Content> {
        prop_oneof![
            4 => "[a-z: \n#é]{0,40}".prop_map(Content::Text),
            2 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Content::Bytes),
            1 => Just(Content::Large),
            1 => prop_oneof![Just("x.yaml"), Just("../a"), Just("b/s.py"), Just("nowhere")]
                .prop_map(|t| Content::Link(t.to_string())),
        ]
    }

    fn tree() -> impl Strategy<Value = Vec<(String, Content)>> {
        let dir = prop_oneof![
            Just(""),
            Just("a/"),
            Just("a/c/"),
            Just("b/"),
            Just(".hid/"),
            Just("vendor/")
        ];
        let name = prop_oneof![
            Just("x.yaml"),
            Just("y.yml"),
            Just("s.py"),
            Just("r.sh"),
            Just("n.txt"),
            Just("README"),
            Just(".dot.yaml"),
            Just("z.yaml.bak"),
            Just(".berthignore"),
        ];
        proptest::collection::vec(((dir, name), content()), 1..12).prop_map(|entries| {
            let mut seen = std::collections::BTreeMap::new();
            for ((dir, name), content) in entries {
                seen.insert(format!("{dir}{name}"), content);
            }
            seen.into_iter().collect()
        })
    }

    fn write(root: &Path, entries: &[(String, Content)]) {
        for (path, content) in entries {
            let target = root.join(path);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            match content {
                Content::Text(text) => std::fs::write(&target, text).unwrap(),
                Content::Bytes(bytes) => std::fs::write(&target, bytes).unwrap(),
                Content::Large => {
                    std::fs::write(&target, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap()
                }
                Content::Link(to) => std::os::unix::fs::symlink(to, &target).unwrap(),
            }
        }
    }

    fn commit_all(root: &Path) {
        let repo = git2::Repository::init(root).unwrap();
        let mut index = repo.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::FORCE, None)
            .unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let who = git2::Signature::now("t", "t@example.com").unwrap();
        repo.commit(Some("HEAD"), &who, &who, "tree", &tree, &[])
            .unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// A folder and the same folder committed give the same files, read the same way:
        /// the same paths, the same text, the same reason when a file is unreadable.
        #[test]
        fn folder_and_git_read_the_same_files(entries in tree()) {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), &entries);
            commit_all(dir.path());
            let from_folder: Vec<SourceFile> = super::read_dir(dir.path()).unwrap();
            let from_git = super::read_revision(dir.path(), "HEAD").unwrap().files;
            prop_assert_eq!(&from_folder, &from_git);
            // Nothing that is input by name was left out without a word.
            for (path, _) in &entries {
                let ignored = entries.iter().any(|(p, c)| {
                    p == ".berthignore"
                        && matches!(c, Content::Text(t) if crate::load::files::ignore_list(t).iter().any(|i| path.starts_with(&format!("{i}/")) || path == i))
                });
                let hidden = path.split('/').any(|p| p.starts_with('.')) && path != ".berthignore";
                if crate::load::files::is_input_name(path) && !hidden && !ignored {
                    prop_assert!(from_folder.iter().any(|f| &f.path == path), "{} missing", path);
                }
            }
        }
    }
}
