//! Nothing read is silently dropped: a file berth would use but cannot read whole is an
//! error with its path, values the API server would refuse are refused at validate, and a
//! revision with an unreadable file changes nothing in a cluster.

mod support;

use assert_cmd::Command;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn berth() -> Command {
    let mut cmd = Command::cargo_bin("berth").expect("the berth binary is built");
    cmd.env("NO_COLOR", "1");
    cmd
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A copy of sample-repo in a temporary folder, with `namespace: X` renamed by `rename`.
fn sample_copy(rename: impl Fn(&str) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in berth::source::read_dir(&root().join("sample-repo")).unwrap() {
        let target = dir.path().join(&file.path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, rename(file.text().unwrap())).unwrap();
    }
    dir
}

fn append(path: &Path, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn validate(dir: &Path) -> (i32, String) {
    let out = berth().arg("validate").arg(dir).output().unwrap();
    (out.status.code().unwrap_or(-1), stderr(&out))
}

const EVIL_WORKSPACE: &str = "apiVersion: berth/v1alpha1
kind: Workspace
metadata: {name: miner}
spec:
  project: analytics
  environment: dev
  image: evil.example.com/miner:latest
";

/// Seen: one 0xFF byte appended to the policy file made berth skip it, and a workspace the
/// policy refuses became valid (exit 0).
#[test]
fn a_non_utf8_policy_file_is_an_error_not_a_bypassed_guardrail() {
    let dir = sample_copy(str::to_string);
    std::fs::write(dir.path().join("workspaces/miner.yaml"), EVIL_WORKSPACE).unwrap();
    let (code, err) = validate(dir.path());
    assert_eq!(code, 1, "the guardrail refuses the image:\n{err}");
    assert!(err.contains("not allowed"), "{err}");

    append(&dir.path().join("policies/platform.yaml"), b"\xff");
    let (code, err) = validate(dir.path());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("policies/platform.yaml:") && err.contains("not UTF-8 text (byte 0xFF"),
        "the unreadable file is named:\n{err}"
    );
}

/// Seen: a NUL byte truncated a YAML file silently: the workspaces after it disappeared.
#[test]
fn a_nul_byte_is_an_error_at_its_line() {
    let dir = sample_copy(str::to_string);
    let path = dir.path().join("workspaces/analytics/etl-dev.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("value: debug", "value: de\0bug", 1)).unwrap();
    let (code, err) = validate(dir.path());
    assert_eq!(code, 1, "{err}");
    let (line, column) = text
        .lines()
        .enumerate()
        .find_map(|(i, l)| Some((i + 1, l.find("value: debug")? + "value: de".len() + 1)))
        .unwrap();
    assert!(
        err.contains(&format!(
            "workspaces/analytics/etl-dev.yaml:{line}:{column}: error: this file holds a NUL byte"
        )),
        "{err}"
    );
}

/// Seen: Mage files and scripts over 2 MiB were read as empty: executor Jobs fell back to
/// namespace `default`, scripts rendered empty.
#[test]
fn oversized_mage_files_and_scripts_are_errors() {
    let dir = sample_copy(str::to_string);
    let padding = format!("# {}\n", "x".repeat(3 * 1024 * 1024));
    append(
        &dir.path().join("mage/analytics/metadata.yaml"),
        padding.as_bytes(),
    );
    append(
        &dir.path().join("scripts/training_pre_start.py"),
        padding.as_bytes(),
    );
    let (code, err) = validate(dir.path());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("mage/analytics/metadata.yaml:1:1: error: this Mage file is "),
        "{err}"
    );
    assert!(
        err.contains("spec.lifecycle.preStart.script: script `scripts/training_pre_start.py` is "),
        "{err}"
    );
    assert!(
        err.contains("berth reads files of at most 2097152 bytes"),
        "{err}"
    );
}

/// Only input names are read: a folder of unrelated files costs nothing and says nothing.
#[test]
fn files_that_are_not_input_are_never_read() {
    let dir = sample_copy(str::to_string);
    std::fs::write(dir.path().join("notes.txt"), b"\xff\xfe\0binary").unwrap();
    std::fs::write(dir.path().join("dump.bin"), vec![0u8; 3 * 1024 * 1024]).unwrap();
    std::fs::write(dir.path().join("scripts/README.md"), b"\xff").unwrap();
    let files = berth::source::read_dir(dir.path()).unwrap();
    assert!(
        files
            .iter()
            .all(|f| berth::load::files::is_input_name(&f.path)),
        "{:?}",
        files.iter().map(|f| &f.path).collect::<Vec<_>>()
    );
    let (code, err) = validate(dir.path());
    assert_eq!((code, err.as_str()), (0, ""));
}

/// Seen: symlinked files and folders were skipped without a word in a folder, and read as
/// a file holding the link's target by `berth diff`.
#[test]
fn symlinks_and_nested_repositories_are_named_in_folders_and_in_git() {
    let dir = sample_copy(str::to_string);
    let d = dir.path();
    std::fs::rename(
        d.join("workspaces/analytics/etl-dev.yaml"),
        d.join("etl-dev.real"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "../../etl-dev.real",
        d.join("workspaces/analytics/etl-dev.yaml"),
    )
    .unwrap();
    std::os::unix::fs::symlink("workspaces", d.join("more-workspaces")).unwrap();
    let (code, err) = validate(d);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("workspaces/analytics/etl-dev.yaml:1:1: error: this file is a symbolic link (to `../../etl-dev.real`)"),
        "{err}"
    );
    assert!(
        err.contains("more-workspaces:1:1: warning: `more-workspaces` is a symbolic link"),
        "{err}"
    );

    // The same tree committed: `berth diff` reads it the same way.
    git(d, &["init", "-q"]);
    git(d, &["add", "-A"]);
    git(d, &["commit", "-q", "-m", "links"]);
    let out = berth()
        .args(["diff", "--base", "HEAD", "--head", "HEAD"])
        .arg(d)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("workspaces/analytics/etl-dev.yaml:1:1: error: this file is a symbolic link (to `../../etl-dev.real`)"),
        "{err}"
    );

    // A nested repository's files belong to another repository: an error, not a silence.
    let nested = d.join("vendor/other");
    std::fs::create_dir_all(nested.join(".git")).unwrap();
    std::fs::write(nested.join("ws.yaml"), EVIL_WORKSPACE).unwrap();
    let (_, err) = validate(d);
    assert!(
        err.contains("vendor/other:1:1: error: `vendor/other` is a git submodule"),
        "{err}"
    );
    std::fs::write(d.join(".berthignore"), "vendor/\n").unwrap();
    let (_, err) = validate(d);
    assert!(!err.contains("vendor/other"), "{err}");
}

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
}

/// Seen: values that pass validate but fail at apply (a partial apply) or vanish later.
#[test]
fn values_the_api_server_would_refuse_are_refused_at_validate() {
    let dir = sample_copy(str::to_string);
    let d = dir.path();
    let ws = d.join("workspaces/analytics/etl-dev.yaml");
    let text = std::fs::read_to_string(&ws).unwrap();
    let long = "a".repeat(64);
    std::fs::write(
        &ws,
        text.replace("team: analytics", &format!("team: {long}")),
    )
    .unwrap();
    let pipeline = d.join("mage/analytics/pipelines/etl_daily/metadata.yaml");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(
        &pipeline,
        text.replacen(
            "    resource_limits:\n",
            "    job:\n      backoff_limit: -1\n      ttl_seconds_after_finished: 3000000000\n    resource_limits:\n",
            1,
        ),
    )
    .unwrap();
    let (code, err) = validate(d);
    assert_eq!(code, 1, "{err}");
    for expected in [
        "workspaces/analytics/etl-dev.yaml:7:11: error: metadata.labels.team: invalid label value",
        "mage/analytics/pipelines/etl_daily/metadata.yaml:13:22: error: blocks[0].executor_config.job.backoff_limit",
        "mage/analytics/pipelines/etl_daily/metadata.yaml:14:35: error: blocks[0].executor_config.job.ttl_seconds_after_finished",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
}

/// Seen: `berth render DIR | head -1` panicked (exit 101).
#[test]
fn a_closed_stdout_ends_quietly() {
    for args in [
        vec!["render", "sample-repo"],
        vec!["plan", "sample-repo", "--offline"],
    ] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("berth"))
            .args(&args)
            .current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the reading end before berth writes anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        let expected = if args[0] == "plan" { 2 } else { 0 };
        assert_eq!(out.status.code(), Some(expected), "{args:?}: {err}");
    }
}

/// Seen: with one 0xFF byte in etl-dev.yaml and a NUL in etl-prod.yaml, `berth apply`
/// deleted 7 objects and exited 0. Now the revision is invalid: nothing changes, exit 1.
#[tokio::test]
async fn an_unreadable_file_never_prunes() {
    let Some(cp) = support::control_plane().await else {
        return;
    };
    let prefix = support::unique_name("unread");
    let dir = sample_copy(|text| {
        text.replace("namespace: analytics", &format!("namespace: {prefix}-a"))
            .replace("namespace: ml-platform", &format!("namespace: {prefix}-m"))
            .replace(
                "namespace: zenml-runners",
                &format!("namespace: {prefix}-z"),
            )
    });
    let apply = || {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("berth"))
            .arg("apply")
            .arg(dir.path())
            .arg("--kubeconfig")
            .arg(cp.kubeconfig_path())
            .args(["--applyset", "berth-input", "--applyset-namespace"])
            .arg(format!("{prefix}-berth"))
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let out = apply();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    append(
        &dir.path().join("workspaces/analytics/etl-dev.yaml"),
        b"\xff",
    );
    let prod = dir.path().join("workspaces/analytics/etl-prod.yaml");
    let text = std::fs::read_to_string(&prod).unwrap();
    std::fs::write(&prod, text.replacen("spec:", "spec:\0", 1)).unwrap();
    let out = apply();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nothing was applied"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("deleted"));

    let client = cp.client().await;
    let sts: kube::Api<k8s_openapi::api::apps::v1::StatefulSet> =
        kube::Api::namespaced(client, &format!("{prefix}-a"));
    for name in ["etl-dev", "etl-prod"] {
        assert!(
            sts.get_opt(name).await.unwrap().is_some(),
            "StatefulSet {name} must survive an unreadable revision"
        );
    }
}
