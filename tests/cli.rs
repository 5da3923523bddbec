//! The `berth` binary end to end, with no cluster: validate, render, offline and
//! `--live-from` plans, and `diff` between two git revisions.

use assert_cmd::Command;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn berth() -> Command {
    let mut cmd = Command::cargo_bin("berth").expect("the berth binary is built");
    cmd.current_dir(root()).env("NO_COLOR", "1");
    cmd
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn sample_repo_is_valid_without_warnings() {
    let out = berth().args(["validate", "sample-repo"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    assert!(stdout(&out).contains("2 projects, 6 workspaces, 3 policies"));
}

#[test]
fn offline_plan_of_sample_repo_in_every_format() {
    for format in ["text", "markdown", "json"] {
        let out = berth()
            .args(["plan", "sample-repo", "--offline", "--format", format])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "changes exit 2: {}",
            stderr(&out)
        );
        insta::assert_snapshot!(format!("offline_plan_{format}"), stdout(&out));
    }
}

#[test]
fn render_is_deterministic_and_kubectl_shaped() {
    let first = berth().args(["render", "sample-repo"]).output().unwrap();
    let second = berth().args(["render", "sample-repo"]).output().unwrap();
    assert_eq!(first.status.code(), Some(0));
    assert_eq!(first.stdout, second.stdout, "render must be byte-identical");
    let text = stdout(&first);
    let docs: Vec<Value> = text
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for kind in [
        "Namespace",
        "ConfigMap",
        "Service",
        "StatefulSet",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "Lease",
    ] {
        assert!(kinds.contains(&kind), "no {kind} rendered");
    }
    let workloads = kinds.iter().filter(|k| **k == "StatefulSet").count();
    assert_eq!(workloads, 6, "one StatefulSet per workspace");
    for doc in &docs {
        for field in ["/apiVersion", "/kind", "/metadata/name"] {
            assert!(doc.pointer(field).is_some(), "{field} missing in {doc}");
        }
        assert_eq!(
            doc.pointer("/metadata/labels/app.kubernetes.io~1managed-by"),
            Some(&Value::from("berth"))
        );
    }
    insta::assert_snapshot!("render_sample_repo", text);
}

#[test]
fn broken_fixtures_report_every_error_with_position() {
    let out = berth()
        .args(["validate", "tests/fixtures/broken", "--color", "never"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    // One line per diagnostic names file:line:column and the field.
    let headlines: Vec<&str> = err.lines().collect();
    for expected in [
        "nested/aliases.yaml:6:11: error: invalid YAML: YAML aliases expand",
        "nested/deep.yaml:1:",
        "nested/syntax.yaml:6:5: error: invalid YAML",
        "projects.yaml:4:9: error: metadata.name: invalid name `Bad_Name`",
        // One namespace, one project: at both `namespace` lines.
        "projects.yaml:6:14: error: spec.namespace: namespace `data` is also the namespace of project `data` (projects.yaml:25:14)",
        "projects.yaml:25:14: error: spec.namespace: namespace `data` is also the namespace of project `Bad_Name` (projects.yaml:6:14)",
        "projects.yaml:8:3: error: spec.imgae: unknown field `imgae`",
        "projects.yaml:10:11: error: spec.inheritance.mode: self-hosted inheritance needs `userDefinedVars`",
        "projects.yaml:12:13: error: spec.inheritance.byEnvironment.dev[0]: invalid pattern `re:(unclosed`",
        "projects.yaml:14:13: error: spec.env[0].name: invalid variable name `1BAD`",
        "projects.yaml:16:7: error: spec.env[1]: `TOKEN` has both `value` and `secretRef`",
        "projects.yaml:34:11: error: spec.inheritance.mode: \"inherited\" is not one of",
        "projects.yaml:44:14: error: spec.env[0].value: expected string, found number",
        "policy.yaml:14:9: error: metadata.name: duplicate Policy `limits`",
        "workspaces.yaml:6:12: error: spec.project: unknown project `nowhere`",
        "workspaces.yaml:15:10: error: spec.image: image `nginx:latest` is not allowed",
        "workspaces.yaml:17:21: error: spec.resources.requests.cpu: cpu requests 64 exceeds the maximum 8",
        "workspaces.yaml:18:19: error: spec.resources.limits.cpu: cpu limit 1 is below its request",
        "workspaces.yaml:18:30: error: spec.resources.limits.memory: `lots` is not a Kubernetes quantity",
        "workspaces.yaml:22:13: error: spec.env[0].name: `ENV` is set by berth",
        "workspaces.yaml:26:15: error: spec.lifecycle.preStart.script: script `scripts/missing.py` does not exist",
        "workspaces.yaml:28:13: error: apiVersion: unsupported apiVersion `berth/v1/alpha1`",
        "workspaces.yaml:34:7: error: kind: unknown kind `Workspaces`",
    ] {
        assert!(
            headlines.iter().any(|l| l.starts_with(expected)),
            "missing `{expected}` in:\n{err}"
        );
    }
    assert!(err.contains("23 error(s)"), "{err}");
    // The offending source line is shown under each error, the token underlined, and the
    // help after it.
    assert!(
        err.contains("8 |   imgae: typo\n  |   ^^^^^\n  = help: did you mean `image`?"),
        "{err}"
    );
    assert!(
        err.contains("   = help: first declared at policy.yaml:4:9"),
        "{err}"
    );
}

#[test]
fn invalid_tree_renders_and_plans_nothing() {
    for args in [
        &["render", "tests/fixtures/broken"][..],
        &["plan", "tests/fixtures/broken", "--offline"][..],
    ] {
        let out = berth().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(stdout(&out), "", "{args:?} must print no objects or plan");
    }
}

#[test]
fn checked_in_schemas_are_up_to_date() {
    for (name, schema) in berth::model::schemas() {
        let path = root().join("schemas").join(format!("{name}.json"));
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        let fresh = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        assert!(
            on_disk == fresh,
            "{} is stale: run `cargo run -- schemas --out schemas`",
            path.display()
        );
    }
}

#[test]
fn sample_files_carry_a_schema_modeline_that_resolves() {
    let sample = root().join("sample-repo");
    for file in berth::source::read_dir(&sample).unwrap() {
        // Mage's own files (under the Mage project folder) are not berth documents.
        if !file.path.ends_with(".yaml") || !file.text().unwrap().contains("apiVersion: berth/") {
            continue;
        }
        for doc in file.text().unwrap().split("\n---\n") {
            let line = doc
                .lines()
                .find_map(|l| l.strip_prefix("# yaml-language-server: $schema="))
                .unwrap_or_else(|| panic!("{}: a document lacks the modeline", file.path));
            let dir = sample.join(&file.path).parent().unwrap().to_path_buf();
            assert!(
                dir.join(line).is_file(),
                "{}: {line} does not exist",
                file.path
            );
        }
    }
}

/// Export the sample repository's rendered objects as a `kubectl get -o yaml` List, with the
/// fields a real API server adds (defaults, canonical quantities, metadata noise).
fn write_live(dir: &Path, edit: impl Fn(&mut Value)) {
    let out = berth().args(["render", "sample-repo"]).output().unwrap();
    let mut items: Vec<Value> = stdout(&out)
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect();
    for item in &mut items {
        item["metadata"]["resourceVersion"] = "12345".into();
        item["metadata"]["uid"] = "0000-1111".into();
        item["metadata"]["managedFields"] = serde_json::json!([{"manager": "berth"}]);
        if item["kind"] == "StatefulSet" {
            item["spec"]["podManagementPolicy"] = "OrderedReady".into();
            item["spec"]["revisionHistoryLimit"] = 10.into();
            item["status"] = serde_json::json!({"replicas": 1});
            let resources = &mut item["spec"]["template"]["spec"]["containers"][0]["resources"];
            if resources["requests"]["cpu"] == "500m" {
                resources["requests"]["cpu"] = "0.5".into();
            }
            if resources["limits"]["memory"] == "4Gi" {
                resources["limits"]["memory"] = "4096Mi".into();
            }
        }
        edit(item);
    }
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    std::fs::write(dir.join("live.yaml"), serde_yaml::to_string(&list).unwrap()).unwrap();
}

#[test]
fn plan_against_exported_live_objects_has_no_false_drift() {
    let dir = tempfile::tempdir().unwrap();
    write_live(dir.path(), |_| {});
    let out = berth()
        .args(["plan", "sample-repo", "--live-from"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("No changes"));

    // A real drift is found, named and diffed; an object berth no longer renders is pruned.
    write_live(dir.path(), |item| {
        if item["kind"] == "StatefulSet" && item["metadata"]["name"] == "etl-prod" {
            item["spec"]["template"]["spec"]["containers"][0]["image"] =
                "mageai/mageai:0.9.0".into();
        }
        if item["kind"] == "Service" && item["metadata"]["name"] == "etl-dev" {
            item["metadata"]["name"] = "etl-old".into();
        }
    });
    let out = berth()
        .args(["plan", "sample-repo", "--format", "json", "--live-from"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let changes = plan["changes"].as_array().unwrap();
    let summary: Vec<(String, String)> = changes
        .iter()
        .map(|c| {
            let o = &c["object"];
            (
                c["action"].as_str().unwrap().to_string(),
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["name"].as_str().unwrap()
                ),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("create".to_string(), "Service/etl-dev".to_string()),
            ("update".to_string(), "StatefulSet/etl-prod".to_string()),
            ("delete".to_string(), "Service/etl-old".to_string()),
        ]
    );
    assert_eq!(
        changes[1]["fields"],
        serde_json::json!(["spec.template.spec.containers[0].image"])
    );
    assert!(
        changes[1]["diff"]
            .as_str()
            .unwrap()
            .contains("+        image: mageai/mageai:0.9.76")
    );
}

fn git(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

fn copy_dir(from: &Path, to: &Path) {
    for file in berth::source::read_dir(from).unwrap() {
        let target = to.join(&file.path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, file.text().unwrap()).unwrap();
    }
}

#[test]
fn diff_between_commits_restarts_exactly_the_inheriting_workspaces() {
    let repo = tempfile::tempdir().unwrap();
    // The berth repository is a folder inside a larger git repository.
    let berth_dir = repo.path().join("deploy/berth");
    copy_dir(&root().join("sample-repo"), &berth_dir);
    git(repo.path(), &["init", "-q"]);
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "base"]);

    // Change a project variable that only the analytics dev workspaces inherit
    // (DEV_ENV_* via byEnvironment.dev), then commit.
    let project = berth_dir.join("projects/analytics.yaml");
    let text = std::fs::read_to_string(&project).unwrap();
    std::fs::write(
        &project,
        text.replace("s3://analytics-dev-scratch", "s3://analytics-dev-v2"),
    )
    .unwrap();
    git(
        repo.path(),
        &["commit", "-q", "-am", "move dev scratch bucket"],
    );

    let out = berth()
        .args(["diff", "--base", "HEAD~1", "--format", "json"])
        .arg(&berth_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let restarts: Vec<(String, Vec<String>, bool)> = plan["restarts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let vars = r["variables"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["name"].as_str().unwrap().to_string())
                .collect();
            (
                r["workspace"].as_str().unwrap().to_string(),
                vars,
                r.get("pending").is_some(),
            )
        })
        .collect();
    assert_eq!(
        restarts,
        [
            (
                "etl-dev".to_string(),
                vec!["DEV_ENV_BUCKET".to_string()],
                false
            ),
            (
                "reporting-dev".to_string(),
                vec!["DEV_ENV_BUCKET".to_string()],
                true
            ),
        ],
        "only the dev workspaces of analytics inherit DEV_ENV_BUCKET"
    );
    // Markdown for the pull request names the restarts and the variable.
    let out = berth()
        .args(["diff", "--base", "HEAD~1", "--format", "markdown"])
        .arg(&berth_dir)
        .output()
        .unwrap();
    let md = stdout(&out);
    assert!(md.contains("| `analytics/etl-dev` | `DEV_ENV_BUCKET` (changed, project env via byEnvironment.dev `DEV_ENV_*`) | restarts on apply |"), "{md}");
    assert!(md.contains("pending — manual"), "{md}");

    // Same revision on both sides: nothing to do, exit 0.
    let out = berth()
        .args(["diff", "--base", "HEAD", "--head", "HEAD"])
        .arg(&berth_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn unknown_revision_is_a_clear_error() {
    let out = berth()
        .args(["diff", "--base", "no-such-rev", "sample-repo"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown git revision `no-such-rev`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn help_explains_every_command() {
    let out = berth().arg("--help").output().unwrap();
    let help = stdout(&out);
    for command in ["validate", "render", "plan", "diff"] {
        assert!(help.contains(command), "{help}");
    }
    let out = berth().args(["plan", "--help"]).output().unwrap();
    assert!(stdout(&out).contains("--live-from"));
}

#[test]
fn explain_names_the_origin_of_every_value() {
    let out = berth()
        .args(["explain", "analytics/etl_daily/load_orders", "sample-repo"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    insta::assert_snapshot!("explain_block", stdout(&out));
    let out = berth()
        .args(["explain", "training-dev", "sample-repo"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    insta::assert_snapshot!("explain_workspace", stdout(&out));
    let out = berth()
        .args(["explain", "analytics/nope/x", "sample-repo"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("k8s blocks: analytics/etl_daily/load_orders"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn raising_a_block_memory_shows_in_the_pull_request_diff() {
    let repo = tempfile::tempdir().unwrap();
    copy_dir(&root().join("sample-repo"), repo.path());
    git(repo.path(), &["init", "-q"]);
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "base"]);
    let pipeline = repo
        .path()
        .join("mage/analytics/pipelines/etl_daily/metadata.yaml");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(&pipeline, text.replace("memory: 4Gi", "memory: 8Gi")).unwrap();
    git(
        repo.path(),
        &["commit", "-q", "-am", "more memory for load_orders"],
    );

    let out = berth()
        .args(["diff", "--base", "HEAD~1", "--format", "json"])
        .arg(repo.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let changes = plan["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{plan:#}");
    assert_eq!(changes[0]["object"]["name"], "mage-executor-jobs");
    // Mage builds the block's Job in each workspace of the project: one key each.
    assert_eq!(
        changes[0]["fields"],
        serde_json::json!([
            "data.etl-dev.etl_daily.load_orders.yaml",
            "data.etl-prod.etl_daily.load_orders.yaml",
            "data.legacy-reports.etl_daily.load_orders.yaml",
            "data.reporting-dev.etl_daily.load_orders.yaml"
        ])
    );
    let diff = changes[0]["diff"].as_str().unwrap();
    let changed = |sign: char, text: &str| {
        diff.lines()
            .any(|l| l.starts_with(sign) && l[1..].trim() == text)
    };
    assert!(
        changed('-', "memory: 4Gi") && changed('+', "memory: 8Gi"),
        "{diff}"
    );
    assert!(
        plan["restarts"].as_array().unwrap().is_empty(),
        "executor config restarts no workspace"
    );
}
