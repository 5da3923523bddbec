//! Where reviewers look, with no cluster: diagnostics as GitHub annotations, SARIF (checked
//! against the SARIF 2.1.0 JSON schema) and JSON; resource deltas in diffs; and the CI
//! recipes of docs/ci.md, whose shell steps run here against temporary git repositories.
//!
//! `tests/fixtures/sarif-schema-2.1.0.json` is the SARIF 2.1.0 JSON schema (OASIS) as the
//! `serde-sarif` 0.8.0 crate ships it (`src/schema.json`, sha256 af47e7b6…895cea).

mod support;

use assert_cmd::Command;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn berth() -> Command {
    let mut cmd = Command::cargo_bin("berth").expect("the berth binary is built");
    cmd.current_dir(root()).env("NO_COLOR", "1");
    cmd.env_remove("GITHUB_STEP_SUMMARY");
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "advice.detachedHead=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running git");
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

fn copy_sample(to: &Path) {
    for file in berth::source::read_dir(&root().join("sample-repo")).unwrap() {
        let target = to.join(&file.path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, file.text().unwrap()).unwrap();
    }
}

fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} lacks {from}", file.display());
    std::fs::write(file, text.replacen(from, to, 1)).unwrap();
}

/// The 1-based line of `file` that contains `needle`.
fn line_of(file: &Path, needle: &str) -> usize {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{} lacks {needle}", file.display()))
        + 1
}

/// The `language` pattern of the SARIF 2.1.0 schema has a stray `]`, which the regex check
/// of the draft-07 meta-schema refuses, so the schema would not compile. It constrains only
/// `language` properties, which berth never writes; the test puts in what the property's
/// description says (two letters, then optionally `-` and two letters).
const BROKEN_LANGUAGE_PATTERN: &str = "^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}]?$";

/// Every error of `document` against the SARIF 2.1.0 schema.
fn sarif_errors(document: &Value) -> Vec<String> {
    let text =
        std::fs::read_to_string(root().join("tests/fixtures/sarif-schema-2.1.0.json")).unwrap();
    assert_eq!(
        text.matches(BROKEN_LANGUAGE_PATTERN).count(),
        2,
        "the vendored schema changed: look at this repair again"
    );
    let text = text.replace(BROKEN_LANGUAGE_PATTERN, "^[a-zA-Z]{2}(-[a-zA-Z]{2})?$");
    let schema: Value = serde_json::from_str(&text).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the SARIF schema compiles");
    validator
        .iter_errors(document)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// A workspace of known size, for resource deltas.
const NEW_WORKSPACE: &str = "apiVersion: berth/v1alpha1
kind: Workspace
metadata:
  name: forecast-dev
spec:
  project: ml-platform
  environment: dev
  resources:
    requests: {cpu: \"2\", memory: 6Gi}
    limits: {cpu: \"3\", memory: 12Gi, nvidia.com/gpu: \"2\"}
  storage:
    size: 40Gi
";

/// A git repository with sample-repo in `config/berth` at HEAD~1 and `change` applied to
/// it at HEAD.
fn pull_request(change: impl FnOnce(&Path)) -> (tempfile::TempDir, PathBuf) {
    let repo = tempfile::tempdir().unwrap();
    let berth_dir = repo.path().join("config/berth");
    copy_sample(&berth_dir);
    git(repo.path(), &["init", "-q"]);
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "base"]);
    change(&berth_dir);
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "change"]);
    (repo, berth_dir)
}

#[test]
fn validate_speaks_json_github_and_schema_valid_sarif() {
    let broken = "tests/fixtures/broken";
    let json = berth()
        .args(["validate", broken, "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(json.status.code(), Some(1), "exit codes are unchanged");
    let report: Value = serde_json::from_slice(&json.stdout).expect("one JSON document");
    let errors = report["errors"].as_u64().unwrap();
    let warnings = report["warnings"].as_u64().unwrap();
    assert_eq!(report["valid"], false);
    assert!(errors > 10, "the fixtures hold many errors: {report}");
    // The same counts as the text report on stderr.
    assert!(
        text(&json.stderr).contains(&format!("{errors} error(s), {warnings} warning(s)")),
        "{}",
        text(&json.stderr)
    );
    let diagnostics = report["diagnostics"].as_array().unwrap();
    assert_eq!(diagnostics.len() as u64, errors + warnings);
    assert!(
        diagnostics
            .iter()
            .any(|d| d["file"] == "projects.yaml" && d["field"] == "spec.imgae"),
        "{report}"
    );

    let github = berth()
        .args(["validate", broken, "--format", "github"])
        .output()
        .unwrap();
    assert_eq!(github.status.code(), Some(1));
    let lines: Vec<String> = text(&github.stdout).lines().map(str::to_string).collect();
    // GitHub keeps 10 error annotations per step: the tenth says how many more there are.
    assert_eq!(lines.len(), 10, "{lines:#?}");
    let imgae = root().join("tests/fixtures/broken/projects.yaml");
    let expected = format!(
        "::error file=tests/fixtures/broken/projects.yaml,line={},col=3,title=berth%3A spec.imgae::unknown field `imgae`%0Ahelp: did you mean `image`?",
        line_of(&imgae, "imgae:")
    );
    assert!(lines.contains(&expected), "{lines:#?}");
    assert_eq!(
        lines[9],
        format!(
            "::error title=berth::{} more error(s) not annotated (GitHub shows 10 per step): see this step's log",
            errors - 9
        )
    );

    let sarif = berth()
        .args(["validate", broken, "--format", "sarif"])
        .output()
        .unwrap();
    assert_eq!(sarif.status.code(), Some(1));
    let log: Value = serde_json::from_slice(&sarif.stdout).unwrap();
    assert_eq!(sarif_errors(&log), Vec::<String>::new());
    // The schema check does check: a level SARIF does not have is refused.
    let mut wrong = log.clone();
    wrong["runs"][0]["results"][0]["level"] = "fatal".into();
    assert_ne!(sarif_errors(&wrong), Vec::<String>::new());
    let results = log["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len() as u64, errors + warnings);
    let imgae_result = results
        .iter()
        .find(|r| {
            r["message"]["text"]
                .as_str()
                .unwrap()
                .starts_with("spec.imgae:")
        })
        .expect("the unknown field is a result");
    let location = &imgae_result["locations"][0]["physicalLocation"];
    assert_eq!(
        location["artifactLocation"]["uri"],
        "tests/fixtures/broken/projects.yaml"
    );
    assert_eq!(
        location["region"]["startLine"].as_u64(),
        Some(line_of(&imgae, "imgae:") as u64)
    );
    assert_eq!(imgae_result["ruleId"], "invalid");
    assert_eq!(imgae_result["level"], "error");

    // A valid repository: exit 0, and its counts.
    let valid = berth()
        .args(["validate", "sample-repo", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(valid.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&valid.stdout).unwrap();
    assert_eq!(report["valid"], true);
    assert_eq!(report["workspaces"], 6);
    assert_eq!(report["diagnostics"], serde_json::json!([]));
    let sarif = berth()
        .args(["validate", "sample-repo", "--format", "sarif"])
        .output()
        .unwrap();
    assert_eq!(sarif.status.code(), Some(0));
    let log: Value = serde_json::from_slice(&sarif.stdout).unwrap();
    assert_eq!(sarif_errors(&log), Vec::<String>::new());
    assert_eq!(log["runs"][0]["results"], serde_json::json!([]));
}

#[test]
fn a_diff_annotates_what_cannot_be_applied_at_its_line() {
    let (repo, berth_dir) = pull_request(|dir| {
        edit(
            &dir.join("workspaces/analytics/etl-dev.yaml"),
            "size: 20Gi",
            "size: 10Gi",
        );
    });
    let etl_dev = berth_dir.join("workspaces/analytics/etl-dev.yaml");
    let summary = repo.path().join("step-summary.md");
    let out = berth()
        .args(["diff", "--base", "HEAD~1", "--format", "github"])
        .arg(&berth_dir)
        .env("GITHUB_STEP_SUMMARY", &summary)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    // Paths start at the git repository's root, where GitHub looks.
    assert_eq!(
        lines[0],
        format!(
            "::error file=config/berth/workspaces/analytics/etl-dev.yaml,line={},col=11,title=berth%3A spec.storage.size::StatefulSet/analytics/etl-dev: storage.size cannot shrink (20Gi → 10Gi): Kubernetes volumes only grow. Keep 20Gi, or move the data to a new workspace",
            line_of(&etl_dev, "size: 10Gi")
        ),
        "{lines:#?}"
    );
    // The plan is one notice, not an annotation per object.
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[1].starts_with("::notice title=berth diff ")
            && lines[1].ends_with("1 cannot be applied, 57 unchanged; resources: -10Gi storage"),
        "{lines:#?}"
    );
    // The whole markdown plan went to the job summary.
    let md = std::fs::read_to_string(&summary).expect("the job summary was written");
    assert!(md.starts_with("### berth diff "), "{md}");
    assert!(
        md.contains("**cannot apply:** storage.size cannot shrink"),
        "{md}"
    );

    let out = berth()
        .args(["diff", "--base", "HEAD~1", "--format", "sarif"])
        .arg(&berth_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let log: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sarif_errors(&log), Vec::<String>::new());
    let run = &log["runs"][0];
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{log}");
    assert_eq!(results[0]["ruleId"], "cannot-apply");
    assert_eq!(
        results[0]["locations"][0]["physicalLocation"]["region"]["startLine"].as_u64(),
        Some(line_of(&etl_dev, "size: 10Gi") as u64)
    );
    assert_eq!(
        run["properties"]["resources"]["total"]["storage_bytes"],
        -(10i64 << 30)
    );
}

#[test]
fn an_invalid_head_is_annotated_and_plans_nothing() {
    let (_repo, berth_dir) = pull_request(|dir| {
        edit(
            &dir.join("workspaces/ml/serving-prod.yaml"),
            "project: ml-platform",
            "project: ml-platfrom",
        );
    });
    for (format, needle) in [
        (
            "github",
            "::error file=config/berth/workspaces/ml/serving-prod.yaml,line=",
        ),
        (
            "sarif",
            "\"uri\": \"config/berth/workspaces/ml/serving-prod.yaml\"",
        ),
    ] {
        let out = berth()
            .args(["diff", "--base", "HEAD~1", "--format", format])
            .arg(&berth_dir)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stdout).contains(needle), "{}", text(&out.stdout));
        assert!(text(&out.stdout).contains("ml-platfrom"));
        if format == "sarif" {
            let log: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(sarif_errors(&log), Vec::<String>::new());
        }
    }
}

#[test]
fn a_new_workspace_adds_exactly_its_resources_in_every_format() {
    let (_repo, berth_dir) = pull_request(|dir| {
        std::fs::write(dir.join("workspaces/ml/forecast-dev.yaml"), NEW_WORKSPACE).unwrap();
    });
    let diff = |format: &str| {
        let out = berth()
            .args(["diff", "--base", "HEAD~1", "--format", format])
            .arg(&berth_dir)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let plan: Value = serde_json::from_str(&diff("json")).unwrap();
    let total = &plan["resources"]["total"];
    let expected = serde_json::json!({
        "workspaces": 1,
        "cpu_requests_millicores": 2000,
        "cpu_limits_millicores": 3000,
        "memory_requests_bytes": 6i64 << 30,
        "memory_limits_bytes": 12i64 << 30,
        "gpus": 2,
        "storage_bytes": 40i64 << 30,
        "summary": "+1 workspace, +2 CPU requested (+3 limit), +6Gi memory requested (+12Gi limit), +2 GPUs, +40Gi storage",
    });
    assert_eq!(total, &expected);
    assert_eq!(plan["resources"]["projects"]["ml-platform"], expected);
    assert_eq!(
        plan["resources"]["projects"].as_object().map(|p| p.len()),
        Some(1)
    );
    let text_plan = diff("text");
    assert!(
        text_plan.contains("\nresources: +1 workspace, +2 CPU requested (+3 limit), +6Gi memory requested (+12Gi limit), +2 GPUs, +40Gi storage (project ml-platform)\n"),
        "{text_plan}"
    );
    let md = diff("markdown");
    assert!(
        md.contains("**Resources:** +1 workspace, +2 CPU requested (+3 limit), +6Gi memory requested (+12Gi limit), +2 GPUs, +40Gi storage (project ml-platform)"),
        "{md}"
    );
}

// ---- The recipes of docs/ci.md ----

/// The YAML block of docs/ci.md whose first line is `# <name>`.
fn recipe(name: &str) -> serde_yaml::Value {
    let doc = std::fs::read_to_string(root().join("docs/ci.md")).unwrap();
    let block = doc
        .split("```yaml\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
        .find(|block| block.starts_with(&format!("# {name}\n")))
        .unwrap_or_else(|| panic!("docs/ci.md has no ```yaml block starting with `# {name}`"));
    serde_yaml::from_str(block).expect("the recipe is YAML")
}

fn yaml_str<'a>(value: &'a serde_yaml::Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(serde_yaml::Value::as_str)
}

/// Literal environment variables of a YAML `env:`/`variables:` map (values with
/// `${{ … }}` expressions only exist on the CI system).
fn literal_env(map: Option<&serde_yaml::Value>) -> BTreeMap<String, String> {
    map.and_then(serde_yaml::Value::as_mapping)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let value = match v {
                serde_yaml::Value::String(s) => s.clone(),
                serde_yaml::Value::Number(n) => n.to_string(),
                _ => return None,
            };
            let key = k.as_str()?.to_string();
            (!value.contains("${{")).then_some((key, value))
        })
        .collect()
}

/// A pull request as CI sees it: an `origin` with `main` (sample-repo at the root), and a
/// clone on branch `feature` that has `origin/main`, as a full-history checkout has.
struct PullRequest {
    _dirs: tempfile::TempDir,
    work: PathBuf,
    summary: PathBuf,
    /// Whether [`PullRequest::push`] pushes `feature` to `origin` (a real git host).
    pushes: bool,
}

impl PullRequest {
    /// `origin` is a bare repository in a temporary folder.
    fn new() -> PullRequest {
        PullRequest::with_origin(None)
    }

    /// `origin` is `url` (an empty repository, which gets `main`), or a bare repository in
    /// a temporary folder.
    fn with_origin(url: Option<&str>) -> PullRequest {
        let dirs = tempfile::tempdir().unwrap();
        let seed = dirs.path().join("seed");
        copy_sample(&seed);
        git(&seed, &["init", "-q"]);
        git(&seed, &["add", "."]);
        git(&seed, &["commit", "-q", "-m", "base"]);
        let origin = match url {
            Some(url) => {
                git(&seed, &["push", "-q", url, "HEAD:main"]);
                url.to_string()
            }
            None => {
                let origin = dirs.path().join("origin.git");
                git(
                    dirs.path(),
                    &["clone", "-q", "--bare", "seed", origin.to_str().unwrap()],
                );
                origin.display().to_string()
            }
        };
        let work = dirs.path().join("work");
        git(
            dirs.path(),
            &["clone", "-q", &origin, work.to_str().unwrap()],
        );
        git(&work, &["checkout", "-q", "-b", "feature"]);
        let summary = dirs.path().join("step-summary.md");
        PullRequest {
            _dirs: dirs,
            work,
            summary,
            pushes: url.is_some(),
        }
    }

    /// Commit a change, as a push to the pull request; files CI left behind are gone, as
    /// in a fresh checkout.
    fn push(&self, change: impl FnOnce(&Path)) {
        git(&self.work, &["clean", "-q", "-fdx"]);
        change(&self.work);
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", "push"]);
        if self.pushes {
            git(&self.work, &["push", "-q", "origin", "feature"]);
        }
        let _ = std::fs::remove_file(&self.summary);
    }

    fn merge_base(&self) -> String {
        git(&self.work, &["merge-base", "origin/main", "HEAD"])
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.work.join(name)).unwrap_or_default()
    }

    /// Run a script as CI does (bash, errexit, pipefail), with berth on PATH.
    fn run(&self, script: &str, env: &BTreeMap<String, String>) -> std::process::Output {
        let berth = assert_cmd::cargo::cargo_bin("berth");
        let path = format!(
            "{}:{}",
            berth.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        std::process::Command::new("bash")
            .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
            .current_dir(&self.work)
            .env("PATH", path)
            .env("NO_COLOR", "1")
            .envs(env)
            .output()
            .expect("running bash")
    }
}

/// What one run of the GitHub workflow did: the steps run (by name) with their output,
/// and whether the job succeeded.
struct JobRun {
    ran: Vec<(String, std::process::Output)>,
    skipped: Vec<String>,
    succeeded: bool,
}

impl JobRun {
    fn stdout_of(&self, step: &str) -> String {
        self.ran
            .iter()
            .find(|(name, _)| name == step)
            .map(|(_, out)| text(&out.stdout))
            .unwrap_or_else(|| panic!("step {step} did not run"))
    }
}

/// Steps of the workflow that are not run here: installing berth, and posting (network).
const GITHUB_NOT_RUN: [&str; 2] = ["install-berth", "post-comment"];

/// Run the shell steps of the GitHub workflow in the pull request, honouring `if:` as
/// GitHub does: no `if` runs only while every step before succeeded; `!cancelled()` runs
/// anyway. `context` is what the CI system would set beside (and over) the literal
/// environment of the workflow and its steps.
fn run_github(
    workflow: &serde_yaml::Value,
    pr: &PullRequest,
    context: &BTreeMap<String, String>,
) -> JobRun {
    let job = &workflow["jobs"]["plan"];
    let mut env = literal_env(job.get("env"));
    env.insert("GITHUB_BASE_REF".into(), "main".into());
    env.insert("GITHUB_REPOSITORY".into(), "example/config".into());
    env.insert(
        "GITHUB_STEP_SUMMARY".into(),
        pr.summary.display().to_string(),
    );
    let mut run = JobRun {
        ran: Vec::new(),
        skipped: Vec::new(),
        succeeded: true,
    };
    for step in job["steps"].as_sequence().expect("steps") {
        if let Some(action) = yaml_str(step, "uses") {
            assert!(action.starts_with("actions/checkout@"), "{action}");
            assert_eq!(
                step["with"]["fetch-depth"].as_u64(),
                Some(0),
                "diff needs the base branch's history"
            );
            continue;
        }
        let name = yaml_str(step, "name")
            .expect("every step has a name")
            .to_string();
        let script = yaml_str(step, "run").expect("a shell step");
        if let Some(id) = yaml_str(step, "id")
            && GITHUB_NOT_RUN.contains(&id)
        {
            run.skipped.push(id.to_string());
            continue;
        }
        let runs = match yaml_str(step, "if") {
            None => run.succeeded,
            Some("${{ !cancelled() }}") => true,
            Some(other) => panic!("this test does not know the condition `{other}`"),
        };
        if !runs {
            continue;
        }
        let mut step_env = env.clone();
        step_env.extend(literal_env(step.get("env")));
        step_env.extend(context.clone());
        let out = pr.run(script, &step_env);
        run.succeeded &= out.status.success();
        run.ran.push((name, out));
    }
    run
}

/// Run the script of the GitLab `berth-plan` job in the pull request.
fn run_gitlab(pipeline: &serde_yaml::Value, pr: &PullRequest) -> std::process::Output {
    let job = &pipeline["berth-plan"];
    let script: Vec<&str> = job["script"]
        .as_sequence()
        .expect("a script")
        .iter()
        .map(|line| line.as_str().expect("script lines are strings"))
        .collect();
    let mut env = literal_env(job.get("variables"));
    env.insert("CI_MERGE_REQUEST_DIFF_BASE_SHA".into(), pr.merge_base());
    pr.run(&script.join("\n"), &env)
}

fn grow_a_workspace(work: &Path) {
    std::fs::write(work.join("workspaces/ml/forecast-dev.yaml"), NEW_WORKSPACE).unwrap();
}

fn shrink_etl_dev(work: &Path) {
    edit(
        &work.join("workspaces/analytics/etl-dev.yaml"),
        "size: 20Gi",
        "size: 10Gi",
    );
}

fn misspell_a_project(work: &Path) {
    edit(
        &work.join("workspaces/ml/serving-prod.yaml"),
        "project: ml-platform",
        "project: ml-platfrom",
    );
}

#[test]
fn the_github_recipe_comments_the_plan_and_annotates_problems() {
    let workflow = recipe(".github/workflows/berth.yml");
    assert_eq!(
        workflow["permissions"]["pull-requests"].as_str(),
        Some("write"),
        "the comment needs it"
    );
    let pr = PullRequest::new();

    // First push: a new workspace. Valid, changes, no problem: the job passes.
    pr.push(grow_a_workspace);
    let first = run_github(&workflow, &pr, &BTreeMap::new());
    let log: Vec<String> = first
        .ran
        .iter()
        .map(|(name, out)| {
            format!(
                "{name}: {:?}\n{}\n{}",
                out.status,
                text(&out.stdout),
                text(&out.stderr)
            )
        })
        .collect();
    assert!(first.succeeded, "{log:#?}");
    assert_eq!(
        first.skipped, GITHUB_NOT_RUN,
        "only install and post are left out"
    );
    let comment = pr.file("comment.md");
    let marker = comment.lines().next().unwrap_or_default().to_string();
    assert_eq!(marker, "<!-- berth-plan: . -->");
    assert!(comment.contains("### berth diff "), "{comment}");
    assert!(
        comment.contains("**Resources:** +1 workspace, +2 CPU requested (+3 limit), +6Gi memory requested (+12Gi limit), +2 GPUs, +40Gi storage (project ml-platform)"),
        "{comment}"
    );
    assert!(
        first
            .stdout_of("Validate")
            .starts_with("::notice title=berth validate::valid — 2 projects, 7 workspaces"),
        "{log:#?}"
    );
    let summary = std::fs::read_to_string(&pr.summary).expect("the plan is in the job summary");
    assert!(summary.contains("**Resources:** +1 workspace"), "{summary}");

    // Second push: a storage shrink. Annotated at its line; the same comment is updated
    // (same first line), and the job fails after it.
    pr.push(shrink_etl_dev);
    let second = run_github(&workflow, &pr, &BTreeMap::new());
    assert!(!second.succeeded);
    let plan = second.stdout_of("Plan");
    let line = line_of(
        &pr.work.join("workspaces/analytics/etl-dev.yaml"),
        "size: 10Gi",
    );
    assert!(
        plan.contains(&format!(
            "::error file=workspaces/analytics/etl-dev.yaml,line={line},col=11,title=berth%3A spec.storage.size::"
        )),
        "{plan}"
    );
    let comment = pr.file("comment.md");
    assert_eq!(comment.lines().next(), Some(marker.as_str()));
    assert!(
        comment.contains("**cannot apply:** storage.size cannot shrink"),
        "{comment}"
    );
    let last = second.ran.last().expect("steps ran");
    assert_eq!(last.0, "Fail if something cannot be applied");
    assert!(!last.1.status.success());

    // Third push: the head does not validate. Validate fails with the annotation; the
    // comment still replaces the stale plan.
    pr.push(misspell_a_project);
    let third = run_github(&workflow, &pr, &BTreeMap::new());
    assert!(!third.succeeded);
    assert!(
        third
            .stdout_of("Validate")
            .contains("::error file=workspaces/ml/serving-prod.yaml,line="),
        "{}",
        third.stdout_of("Validate")
    );
    let names: Vec<&str> = third.ran.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Validate", "Write the comment"]);
    let comment = pr.file("comment.md");
    assert_eq!(comment.lines().next(), Some(marker.as_str()));
    assert!(comment.contains("does not validate"), "{comment}");
}

#[test]
fn the_gitlab_recipe_writes_the_note_and_fails_only_on_errors() {
    let pipeline = recipe(".gitlab-ci.yml");
    let poster = &pipeline["berth-comment"];
    assert_eq!(poster["needs"][0].as_str(), Some("berth-plan"));
    assert_eq!(
        pipeline["berth-plan"]["artifacts"]["paths"][0].as_str(),
        Some("comment.md"),
        "the note's text goes to the posting job"
    );
    let pr = PullRequest::new();

    pr.push(grow_a_workspace);
    let out = run_gitlab(&pipeline, &pr);
    assert!(
        out.status.success(),
        "exit 2 (changes) passes: {}",
        text(&out.stderr)
    );
    let comment = pr.file("comment.md");
    let marker = comment.lines().next().unwrap_or_default().to_string();
    assert_eq!(marker, "<!-- berth-plan: . -->");
    assert!(comment.contains("+2 GPUs, +40Gi storage"), "{comment}");

    pr.push(shrink_etl_dev);
    let out = run_gitlab(&pipeline, &pr);
    assert!(!out.status.success());
    let comment = pr.file("comment.md");
    assert_eq!(comment.lines().next(), Some(marker.as_str()));
    assert!(comment.contains("**cannot apply:**"), "{comment}");
    // The job log shows the problem at its line.
    assert!(
        text(&out.stderr).contains("workspaces/analytics/etl-dev.yaml:"),
        "{}",
        text(&out.stderr)
    );

    pr.push(misspell_a_project);
    let out = run_gitlab(&pipeline, &pr);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("ml-platfrom"),
        "{}",
        text(&out.stderr)
    );
    let comment = pr.file("comment.md");
    assert_eq!(comment.lines().next(), Some(marker.as_str()));
    assert!(comment.contains("does not validate"), "{comment}");
}

/// The comments of pull request `number` on the test Gitea, oldest first, as (id, body).
fn gitea_comments(repo: &support::gitea::GiteaRepo, number: u64) -> Vec<(u64, String)> {
    let (code, answer) = repo
        .gitea
        .request(
            "GET",
            &format!(
                "/api/v1/repos/{}/{}/issues/{number}/comments",
                support::gitea::USER,
                repo.name
            ),
            None,
        )
        .expect("reading the comments");
    assert_eq!(code, 200, "reading the comments: {answer}");
    answer
        .as_array()
        .expect("a list of comments")
        .iter()
        .map(|c| {
            (
                c["id"].as_u64().expect("a comment id"),
                c["body"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The GitHub workflow with docs/ci.md's Gitea comment step in place of `gh`'s, run twice
/// against a real pull request on Gitea (tests/support/gitea.rs): the first run creates
/// the plan comment, the second (another commit) edits it; the pull request has one
/// comment, the latest plan, read back through Gitea's API.
#[test]
fn the_gitea_recipe_keeps_one_plan_comment_on_a_real_pull_request() {
    let Some(gitea) = support::gitea::gitea() else {
        return;
    };
    let repo = gitea.repository(&support::unique_name("ci-comment"));
    let owner_repo = format!("{}/{}", support::gitea::USER, repo.name);
    let mut workflow = recipe(".github/workflows/berth.yml");
    let gitea_step = recipe("Gitea and Forgejo: the comment step")[0].clone();
    assert_eq!(
        yaml_str(&gitea_step, "name"),
        Some("Post or update the plan comment")
    );
    let steps = workflow["jobs"]["plan"]["steps"]
        .as_sequence_mut()
        .expect("steps");
    let post = steps
        .iter()
        .position(|s| yaml_str(s, "id") == Some("post-comment"))
        .expect("the workflow posts the comment");
    steps[post] = gitea_step;

    let pr = PullRequest::with_origin(Some(&repo.push_url()));
    pr.push(grow_a_workspace);
    // Gitea records a pushed branch a moment after the push (its queue): until then the
    // pull request's head is "not found".
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (code, answer) = loop {
        let (code, answer) = gitea
            .request(
                "POST",
                &format!("/api/v1/repos/{owner_repo}/pulls"),
                Some(&serde_json::json!({"head": "feature", "base": "main", "title": "grow"})),
            )
            .expect("opening the pull request");
        if code != 404 || std::time::Instant::now() > deadline {
            break (code, answer);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(code, 201, "opening the pull request: {answer}");
    let number = answer["number"].as_u64().expect("a pull request number");
    // What Gitea Actions sets (GITHUB_* as GitHub does), and the step's secret and number.
    let context: BTreeMap<String, String> = [
        ("GITHUB_SERVER_URL", gitea.url.clone()),
        ("GITHUB_REPOSITORY", owner_repo.clone()),
        ("TOKEN", gitea.token.clone()),
        ("PR", number.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let posted = |run: &JobRun| {
        let (_, out) = run
            .ran
            .iter()
            .find(|(name, _)| name == "Post or update the plan comment")
            .expect("the comment step ran");
        assert!(
            out.status.success(),
            "the comment step: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(
            !text(&out.stdout).contains(&gitea.token) && !text(&out.stderr).contains(&gitea.token),
            "the token is not printed"
        );
    };

    let first = run_github(&workflow, &pr, &context);
    assert!(first.succeeded, "exit 2 (changes) passes");
    posted(&first);
    let comments = gitea_comments(&repo, number);
    assert_eq!(comments.len(), 1, "one comment: {comments:#?}");
    let first_comment = pr.file("comment.md");
    assert_eq!(comments[0].1.trim_end(), first_comment.trim_end());
    assert!(first_comment.contains("+1 workspace"), "{first_comment}");
    let id = comments[0].0;

    // A second commit on the pull request: the same comment is edited, none is added.
    pr.push(shrink_etl_dev);
    let second = run_github(&workflow, &pr, &context);
    assert!(
        !second.succeeded,
        "a shrink cannot be applied: the job fails"
    );
    posted(&second);
    let comments = gitea_comments(&repo, number);
    assert_eq!(comments.len(), 1, "still one comment: {comments:#?}");
    assert_eq!(comments[0].0, id, "the first comment, edited");
    let second_comment = pr.file("comment.md");
    assert_ne!(first_comment, second_comment);
    assert_eq!(comments[0].1.trim_end(), second_comment.trim_end());
    assert!(
        comments[0]
            .1
            .contains("**cannot apply:** storage.size cannot shrink"),
        "the latest plan: {}",
        comments[0].1
    );
}
