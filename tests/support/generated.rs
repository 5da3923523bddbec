//! Large generated repositories (`berth-bench gen`) in a local git remote, for tests that
//! need an apply long enough to interrupt: each revision (`--rev`) changes every object.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A bare remote and a work folder whose contents are a generated repository.
pub struct GeneratedRepo {
    dir: tempfile::TempDir,
    pub workspaces: usize,
    /// Prefix of every namespace the repository renders (unique to the test).
    pub prefix: String,
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@berth.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("running git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl GeneratedRepo {
    /// An empty remote; nothing committed yet.
    pub fn new(test: &str, workspaces: usize) -> GeneratedRepo {
        let prefix = format!("{}-", super::unique_name(test));
        let dir = tempfile::tempdir().expect("a temporary folder");
        git(dir.path(), &["init", "-q", "--bare", "remote.git"]);
        let repo = GeneratedRepo {
            dir,
            workspaces,
            prefix,
        };
        std::fs::create_dir(repo.work()).expect("mkdir work");
        git(&repo.work(), &["init", "-q"]);
        git(&repo.work(), &["checkout", "-q", "-b", "main"]);
        let bare = repo.bare();
        git(
            &repo.work(),
            &[
                "remote",
                "add",
                "origin",
                bare.to_str().expect("a UTF-8 path"),
            ],
        );
        repo
    }

    pub fn bare(&self) -> PathBuf {
        self.dir.path().join("remote.git")
    }

    /// The work folder: the repository as last generated (for `berth apply` and `plan`).
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.bare().display())
    }

    /// A folder for a test's other files (logs, kubeconfigs, caches).
    pub fn scratch(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).expect("mkdir");
        path
    }

    /// Generate revision `rev` into the work folder (replacing what was there).
    pub fn generate(&self, rev: &str) {
        for entry in std::fs::read_dir(self.work()).expect("reading the work folder") {
            let path = entry.expect("an entry").path();
            if path.file_name().is_some_and(|n| n != ".git") {
                std::fs::remove_dir_all(&path)
                    .or_else(|_| std::fs::remove_file(&path))
                    .expect("clearing the work folder");
            }
        }
        let out = self.scratch("gen-out").join(rev);
        let status = Command::new(assert_cmd::cargo::cargo_bin("berth-bench"))
            .args(["gen", "--workspaces", &self.workspaces.to_string()])
            .args(["--namespace-prefix", &self.prefix, "--rev", rev])
            .arg("--out")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("running berth-bench gen");
        assert!(status.success(), "berth-bench gen failed");
        let copy = Command::new("cp")
            .arg("-r")
            .arg(format!("{}/.", out.display()))
            .arg(self.work())
            .status()
            .expect("running cp");
        assert!(copy.success(), "copying the generated repository");
    }

    /// Generate `rev`, commit it and push it; the commit's id.
    pub fn commit(&self, rev: &str) -> String {
        self.generate(rev);
        git(&self.work(), &["add", "-A"]);
        git(
            &self.work(),
            &["commit", "-q", "-m", &format!("revision {rev}")],
        );
        git(&self.work(), &["push", "-q", "origin", "main"]);
        git(&self.work(), &["rev-parse", "HEAD"])
    }
}
