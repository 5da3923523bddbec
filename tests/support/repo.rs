//! A copy of sample-repo whose namespaces and ApplySet are unique to one test, and the
//! `berth` command against the test control plane. Tests sharing the control plane never
//! see each other's objects.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use super::ControlPlane;

/// A copy of sample-repo with its own namespaces (`<prefix>-a` for analytics, `-m` for
/// ml-platform, `-z` for the ZenML runners) and ApplySet (`berth-test` in `<prefix>-berth`).
pub struct Repo {
    dir: tempfile::TempDir,
    pub prefix: String,
}

impl Repo {
    pub fn new(test: &str) -> Repo {
        let prefix = super::unique_name(test);
        let dir = tempfile::tempdir().expect("a temporary folder");
        let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sample-repo");
        for file in berth::source::read_dir(&sample).expect("reading sample-repo") {
            let target = dir.path().join(&file.path);
            std::fs::create_dir_all(target.parent().expect("a parent")).expect("mkdir");
            let text = file
                .text()
                .expect("sample-repo is text")
                .replace("namespace: analytics", &format!("namespace: {prefix}-a"))
                .replace("namespace: ml-platform", &format!("namespace: {prefix}-m"))
                .replace(
                    "namespace: zenml-runners",
                    &format!("namespace: {prefix}-z"),
                );
            std::fs::write(target, text).expect("writing the copy");
        }
        Repo { dir, prefix }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The analytics project's namespace.
    pub fn analytics(&self) -> String {
        format!("{}-a", self.prefix)
    }

    /// The ml-platform project's namespace.
    pub fn ml(&self) -> String {
        format!("{}-m", self.prefix)
    }

    /// The ApplySet parent's namespace.
    pub fn applyset_namespace(&self) -> String {
        format!("{}-berth", self.prefix)
    }

    /// Replaces `from` (which must be there) by `to` in `file`.
    pub fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.path().join(file);
        let text = std::fs::read_to_string(&path).expect("reading a repository file");
        assert!(text.contains(from), "{file} lacks {from}");
        std::fs::write(&path, text.replace(from, to)).expect("writing a repository file");
    }

    /// `berth <command> <repo> --kubeconfig … --applyset-namespace …` plus `args`.
    pub fn berth(&self, cp: &ControlPlane, command: &str, args: &[&str]) -> Output {
        self.berth_as(cp.kubeconfig_path(), command, args)
            .output()
            .expect("running berth")
    }

    /// The berth command, run with the identity of `kubeconfig`.
    pub fn berth_as(
        &self,
        kubeconfig: &Path,
        command: &str,
        args: &[&str],
    ) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("berth"));
        cmd.arg(command);
        if command == "restart" || command == "wake" {
            cmd.arg(args[0]).arg(self.path()).args(&args[1..]);
        } else if command == "rollout" {
            // `rollout <verb> [project]`, then the repository.
            cmd.args(args).arg(self.path());
        } else {
            cmd.arg(self.path()).args(args);
        }
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--applyset", "berth-test", "--applyset-namespace"])
            .arg(self.applyset_namespace())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "debug");
        cmd
    }

    /// `berth apply` that must succeed; its stdout.
    pub fn apply(&self, cp: &ControlPlane, args: &[&str]) -> String {
        let out = self.berth(cp, "apply", args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "apply failed:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `berth plan --format json`: its exit code (0 or 2) and the plan.
    pub fn plan_json(&self, cp: &ControlPlane) -> (i32, Value) {
        let out = self.berth(cp, "plan", &["--format", "json"]);
        let code = out.status.code().unwrap_or(-1);
        assert!(
            code == 0 || code == 2,
            "plan failed:\n{}",
            text(&out.stderr)
        );
        (
            code,
            serde_json::from_slice(&out.stdout).expect("the plan is JSON"),
        )
    }

    /// The objects berth renders for this repository.
    pub fn rendered(&self) -> Vec<Value> {
        let desired = berth::desired(
            berth::source::read_dir(self.path()).expect("reading the repository"),
            &Default::default(),
        );
        assert!(!desired.has_errors(), "{:?}", desired.diagnostics);
        desired.objects
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The changes of a JSON plan as `<action> <Kind>/<name>`.
pub fn changes(plan: &Value) -> Vec<String> {
    plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            format!(
                "{} {}/{}",
                c["action"].as_str().unwrap_or("?"),
                c["object"]["kind"].as_str().unwrap_or("?"),
                c["object"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}
