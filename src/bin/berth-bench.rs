//! `berth-bench`: tooling for `scripts/bench` (see BENCHMARKS.md). Not part of berth's
//! command line or library API.
//!
//! - `gen`: a synthetic berth repository of N workspaces over projects, environments and
//!   inheritance rules, the same bytes for the same seed;
//! - `manifests`: the objects `berth apply` would send (rendered and decorated as ApplySet
//!   members), as YAML for `kubectl diff|apply --server-side -f`;
//! - `latency`: edit one workspace file, then wait until the API server holds the change
//!   (a watch on the workspace's StatefulSet); prints the milliseconds in between;
//! - `shapes`: adversarial inputs for `scripts/bench-input`, one repository per shape, to
//!   show that validating costs linear time whatever the input's shape.

use anyhow::{Context, Result, bail};
use berth::cluster::applyset::ApplySet;
use berth::render::RenderContext;
use clap::{Parser, Subcommand};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The allocator berth itself uses, so `stages` measures what `berth render` does.
#[cfg(not(feature = "heap-profile"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "berth-bench", about = "benchmark tooling for scripts/bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a synthetic berth repository (deterministic for a seed).
    Gen {
        /// Number of workspaces.
        #[arg(long)]
        workspaces: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output folder (created; must be empty or missing).
        #[arg(long)]
        out: PathBuf,
        /// Number of projects [default: one per 50 workspaces, at least 2].
        #[arg(long)]
        projects: Option<usize>,
        /// Prefix of every namespace name (fresh copies for from-scratch applies).
        #[arg(long, default_value = "")]
        namespace_prefix: String,
        /// Value of the `bench-rev` label on every project and workspace, and of every
        /// workspace's BENCH_REV variable: a new value changes every rendered object.
        #[arg(long, default_value = "r0")]
        rev: String,
    },
    /// Print the objects `berth apply` would send, as multi-document YAML.
    Manifests {
        repo: PathBuf,
        #[arg(long)]
        applyset: String,
        #[arg(long, default_value = "berth-system")]
        applyset_namespace: String,
    },
    /// Time the offline stages of `berth render` one by one (ms), with the resident memory
    /// after each (MB), for profiling.
    Stages {
        repo: PathBuf,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Stop after this stage (read, load, resolve, render), keeping what it made: a
        /// heap profile then shows what the stages so far hold at their peak.
        #[arg(long)]
        until: Option<String>,
    },
    /// Write one repository per adversarial input shape into OUT/<shape>.
    Shapes {
        #[arg(long)]
        out: PathBuf,
        /// Size of the one-file shapes, in bytes (the loader's limit is 2 MiB).
        #[arg(long, default_value_t = 2 * 1024 * 1024 - 1024)]
        bytes: usize,
    },
    /// Edit a workspace's BENCH_TOKEN and time until its StatefulSet carries the new env.
    Latency {
        /// The workspace file to edit.
        #[arg(long)]
        file: PathBuf,
        /// The new value of BENCH_TOKEN.
        #[arg(long)]
        value: String,
        #[arg(long)]
        namespace: String,
        /// The workspace's name (and its StatefulSet's); its restart must be `immediate`.
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Gen {
            workspaces,
            seed,
            out,
            projects,
            namespace_prefix,
            rev,
        } => {
            let projects = projects.unwrap_or_else(|| workspaces.div_ceil(50).max(2));
            let spec = Spec {
                workspaces,
                projects,
                seed,
                prefix: namespace_prefix,
                rev,
            };
            let files = generate(&spec);
            write_repo(&out, &files)?;
            eprintln!(
                "berth-bench: wrote {} workspaces in {} projects ({} files) to {}",
                workspaces,
                projects,
                files.len(),
                out.display()
            );
            Ok(())
        }
        Command::Manifests {
            repo,
            applyset,
            applyset_namespace,
        } => {
            let desired =
                berth::desired(berth::source::read_dir(&repo)?, &RenderContext::default());
            if desired.has_errors() {
                bail!("{} is not a valid berth repository", repo.display());
            }
            let mut objects = desired.objects;
            ApplySet {
                name: applyset,
                namespace: applyset_namespace,
            }
            .decorate(&mut objects);
            print!("{}", berth::render::to_yaml(&objects));
            Ok(())
        }
        Command::Stages { repo, runs, until } => stages(&repo, runs, until.as_deref()),
        Command::Shapes { out, bytes } => shapes(&out, bytes),
        Command::Latency {
            file,
            value,
            namespace,
            workspace,
            kubeconfig,
            timeout,
        } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let ms = runtime.block_on(latency(
                &file,
                &value,
                &namespace,
                &workspace,
                &kubeconfig,
                Duration::from_secs(timeout),
            ))?;
            println!("{ms:.1}");
            Ok(())
        }
    }
}

// ---- shapes ------------------------------------------------------------------------------

const SHAPE_PROJECT: &str = "apiVersion: berth/v1alpha1
kind: Project
metadata: {name: p}
spec: {namespace: p, image: mageai/mageai:0.9.76}
";

/// `unit` repeated until `bytes` (or `count` times), after `head`.
fn repeat_to(head: &str, unit: impl Fn(usize) -> String, bytes: usize, count: usize) -> String {
    let mut text = head.to_string();
    for i in 0..count {
        let next = unit(i);
        if text.len() + next.len() > bytes {
            break;
        }
        text.push_str(&next);
    }
    text
}

/// Kept in one piece: a list of input shapes, one short block each.
fn shapes(out: &Path, bytes: usize) -> Result<()> {
    let workspace = |i: usize, project: &str| {
        format!(
            "---\napiVersion: berth/v1alpha1\nkind: Workspace\nmetadata: {{name: w{i}}}\nspec: {{project: {project}, environment: dev}}\n"
        )
    };
    let mut shapes: Vec<(&str, Vec<(String, String)>)> = vec![
        // Every document is a warning ("not a berth document").
        (
            "empty-documents",
            vec![(
                "a.yaml".into(),
                repeat_to("", |_| "---\n{}\n".into(), bytes, usize::MAX),
            )],
        ),
        // Every document is an error ("must be a mapping").
        (
            "scalar-documents",
            vec![(
                "a.yaml".into(),
                repeat_to("", |i| format!("--- s{i}\n"), bytes, 50_000),
            )],
        ),
        // 10,000 errors with help text, in one file.
        (
            "missing-project-one-file",
            vec![(
                "a.yaml".into(),
                repeat_to("", |i| workspace(i, "nowhere"), usize::MAX, 10_000),
            )],
        ),
        // The same over 10,000 files.
        (
            "missing-project-many-files",
            (0..10_000)
                .map(|i| (format!("w/{i}.yaml"), workspace(i, "nowhere")))
                .collect(),
        ),
        // One line of 2 MiB holding thousands of unknown fields: errors on one long line.
        (
            "long-line",
            vec![
                (
                    "a.yaml".into(),
                    format!(
                        "apiVersion: berth/v1alpha1\nkind: Workspace\nmetadata: {{name: w}}\nspec: {{project: p, environment: dev, {}}}\n",
                        repeat_to("", |i| format!("x{i}: 1, "), bytes - 200, usize::MAX)
                    ),
                ),
                ("p.yaml".into(), SHAPE_PROJECT.into()),
            ],
        ),
        // Nesting up to the limit, over and over.
        (
            "deep-nesting",
            vec![(
                "a.yaml".into(),
                repeat_to(
                    "",
                    |_| format!("--- {}{}\n", "[".repeat(60), "]".repeat(60)),
                    bytes,
                    usize::MAX,
                ),
            )],
        ),
        // A mapping with as many keys as fit.
        (
            "many-keys",
            vec![(
                "a.yaml".into(),
                repeat_to("", |i| format!("k{i}: v\n"), bytes, usize::MAX),
            )],
        ),
        // One long string value.
        (
            "long-value",
            vec![(
                "a.yaml".into(),
                format!(
                    "apiVersion: berth/v1alpha1\nkind: Project\nmetadata: {{name: p}}\nspec:\n  namespace: p\n  image: i\n  env: [{{name: A, value: \"{}\"}}]\n",
                    "v".repeat(bytes - 200)
                ),
            )],
        ),
        // 100,000 aliases of one small anchor.
        (
            "aliases",
            vec![(
                "a.yaml".into(),
                repeat_to("a: &a [1, 2]\nb: [", |_| "*a, ".into(), bytes - 2, 100_000) + "]\n",
            )],
        ),
    ];
    for (_, files) in &mut shapes {
        if !files.iter().any(|(p, _)| p == "p.yaml") {
            files.push(("p.yaml".into(), SHAPE_PROJECT.into()));
        }
    }
    for (name, files) in shapes {
        let dir = out.join(name);
        write_repo(&dir, &files)?;
        let size: usize = files.iter().map(|(_, t)| t.len()).sum();
        eprintln!("berth-bench: {name}: {} file(s), {size} bytes", files.len());
    }
    Ok(())
}

// ---- stages ------------------------------------------------------------------------------

fn stages(repo: &Path, runs: usize, until: Option<&str>) -> Result<()> {
    if let Some(stage) = until {
        let files = berth::source::read_dir(repo)?;
        if stage == "read" {
            return report_until(stage, files);
        }
        let loaded = berth::load::load(files);
        if stage == "load" {
            return report_until(stage, loaded);
        }
        let (resolved, _) = berth::resolve::resolve(&loaded.repo);
        if stage == "resolve" {
            return report_until(stage, (loaded, resolved));
        }
        let objects = berth::render::render(&resolved, &RenderContext::default());
        if stage == "render" {
            return report_until(stage, (loaded, resolved, objects));
        }
        bail!("--until takes read, load, resolve or render, not `{stage}`");
    }
    for _ in 0..runs {
        let mut line = String::new();
        let mut lap = Instant::now();
        let mut mark = |name: &str| {
            let _ = write!(
                line,
                "{name} {:.1} ms {} MB  ",
                lap.elapsed().as_secs_f64() * 1000.0,
                resident_mb()
            );
            lap = Instant::now();
        };
        let files = berth::source::read_dir(repo)?;
        mark("read");
        let loaded = berth::load::load(files);
        mark("load");
        let (resolved, _) = berth::resolve::resolve(&loaded.repo);
        mark("resolve");
        let objects = berth::render::render(&resolved, &RenderContext::default());
        mark("render");
        let yaml = berth::render::to_yaml(&objects);
        mark("to_yaml");
        drop((objects, yaml, resolved, loaded));
        mark("drop");
        println!("{line}");
    }
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| status_mb(&s, "VmHWM:"));
    if let Some(peak) = peak {
        println!("peak resident memory: {peak} MB");
    }
    Ok(())
}

/// Print the memory after a stage; `kept` is what the stages made, held until here.
fn report_until<T>(stage: &str, kept: T) -> Result<()> {
    println!("after {stage}: {} MB resident", resident_mb());
    drop(kept);
    Ok(())
}

/// The process's resident memory now, in MB (0 where /proc is not there).
fn resident_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| status_mb(&s, "VmRSS:"))
        .unwrap_or(0)
}

/// A `/proc/self/status` line such as `VmRSS:  1234 kB`, in MB.
fn status_mb(status: &str, field: &str) -> Option<u64> {
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024)
}

// ---- gen ---------------------------------------------------------------------------------

struct Spec {
    workspaces: usize,
    projects: usize,
    seed: u64,
    prefix: String,
    rev: String,
}

/// splitmix64: small, fast and the same everywhere; no dependency needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const TEAMS: &[&str] = &[
    "analytics",
    "ml",
    "finance",
    "growth",
    "risk",
    "search",
    "ads",
    "payments",
    "platform",
    "ops",
];
const PURPOSES: &[&str] = &[
    "etl",
    "reporting",
    "training",
    "serving",
    "ingest",
    "adhoc",
    "features",
    "backfill",
];
/// dev 50 %, staging 20 %, prod 30 %.
const ENVIRONMENTS: &[&str] = &[
    "dev", "dev", "dev", "dev", "dev", "staging", "staging", "prod", "prod", "prod",
];
const SIZES: &[(&str, &str, &str, &str)] = &[
    ("250m", "512Mi", "1", "2Gi"),
    ("500m", "1Gi", "2", "4Gi"),
    ("1", "2Gi", "2", "4Gi"),
    ("1", "4Gi", "4", "8Gi"),
    ("2", "8Gi", "4", "16Gi"),
];
const STORAGE: &[&str] = &["10Gi", "20Gi", "50Gi", "100Gi"];
const LOG_LEVELS: &[&str] = &["debug", "info", "warning"];

struct Project {
    name: String,
    team: &'static str,
    managed: bool,
}

/// The repository's files: (relative path, text), in a fixed order.
fn generate(spec: &Spec) -> Vec<(String, String)> {
    let mut rng = Rng(spec.seed);
    let mut files = Vec::new();
    let projects: Vec<Project> = (0..spec.projects)
        .map(|i| {
            let team = TEAMS[i % TEAMS.len()];
            Project {
                name: format!("{team}-{i:02}"),
                team,
                // Alternate Mage Pro managed cloud and self-hosted projects.
                managed: i.is_multiple_of(2),
            }
        })
        .collect();
    for (i, project) in projects.iter().enumerate() {
        files.push((
            format!("projects/{}.yaml", project.name),
            project_yaml(project, i, spec, &mut rng),
        ));
    }
    files.push(("policies/platform.yaml".into(), POLICY.into()));
    for i in 0..spec.workspaces {
        let project = &projects[i % projects.len()];
        let environment = *rng.pick(ENVIRONMENTS);
        let name = format!("{}-{environment}-{i:05}", rng.pick(PURPOSES));
        files.push((
            format!("workspaces/{}/{name}.yaml", project.name),
            workspace_yaml(&name, project, environment, spec, &mut rng),
        ));
    }
    files
}

const POLICY: &str = "\
# yaml-language-server: $schema=../../schemas/policy.json
# Guardrails for every workspace on the platform.
apiVersion: berth/v1alpha1
kind: Policy
metadata:
  name: platform-guardrails
spec:
  guardrails:
    allowedImages: [\"mageai/mageai:*\"]
    maxResources:
      requests: {cpu: \"4\", memory: 16Gi}
      limits: {cpu: \"8\", memory: 32Gi}
    forbidHostPath: true
---
# yaml-language-server: $schema=../../schemas/policy.json
# Production workspaces must say which team owns them.
apiVersion: berth/v1alpha1
kind: Policy
metadata:
  name: prod-ownership
spec:
  selector:
    environments: [prod]
  guardrails:
    requiredLabels: [team]
";

fn project_yaml(project: &Project, index: usize, spec: &Spec, rng: &mut Rng) -> String {
    let mut y = String::new();
    let _ = write!(
        y,
        "# yaml-language-server: $schema=../../schemas/project.json\n\
         apiVersion: berth/v1alpha1\n\
         kind: Project\n\
         metadata:\n  name: {name}\n  labels:\n    team: {team}\n    bench-rev: \"{rev}\"\n\
         spec:\n  namespace: {prefix}{name}\n  image: mageai/mageai:0.9.{patch}\n",
        name = project.name,
        team = project.team,
        rev = spec.rev,
        prefix = spec.prefix,
        patch = 70 + rng.below(8),
    );
    let _ = writeln!(y, "  userCodePath: /home/src/{}", project.team);
    if project.managed {
        y.push_str("  shareSecretsAcrossWorkspaces: true\n");
    }
    y.push_str("  env:\n");
    let _ = writeln!(
        y,
        "    - {{name: DB_HOST, value: warehouse.{}.svc}}",
        project.name
    );
    y.push_str(
        "    - name: DB_PASSWORD\n      secretRef: {name: warehouse-credentials, key: password}\n",
    );
    let _ = writeln!(
        y,
        "    - {{name: DEV_ENV_BUCKET, value: \"s3://{}-dev-scratch\"}}",
        project.name
    );
    let _ = writeln!(
        y,
        "    - {{name: DEV_ENV_SAMPLE_RATE, value: \"0.{}\"}}",
        1 + rng.below(9)
    );
    let _ = writeln!(
        y,
        "    - {{name: STAGING_ENV_BUCKET, value: \"s3://{}-staging\"}}",
        project.name
    );
    let _ = writeln!(
        y,
        "    - {{name: PROD_ALERT_CHANNEL, value: \"#{}-alerts\"}}",
        project.team
    );
    let _ = writeln!(
        y,
        "    - {{name: PROD_REGION, value: {}}}",
        rng.pick(&["eu-west-1", "us-east-1", "us-west-2"])
    );
    y.push_str("    - {name: INTERNAL_ONLY, value: not-for-workspaces}\n");
    if !project.managed {
        y.push_str("    - name: HF_TOKEN\n      secretRef: {name: huggingface, key: token}\n");
    }
    y.push_str("  inheritance:\n");
    if project.managed {
        y.push_str("    mode: managed\n");
        // Every other managed project inherits all project variables (no userDefinedVars).
        if index.is_multiple_of(4) {
            y.push_str("    userDefinedVars: [DB_HOST, DB_PASSWORD]\n");
        }
    } else {
        y.push_str("    mode: self-hosted\n    userDefinedVars: [DB_HOST, HF_TOKEN]\n");
    }
    y.push_str(
        "    byEnvironment:\n      dev: [\"DEV_ENV_*\"]\n      staging: [\"STAGING_*\"]\n      \
         prod: [\"re:^PROD_.*$\"]\n",
    );
    y
}

/// Kept in one piece: the YAML of one workspace, written in the order it reads.
fn workspace_yaml(
    name: &str,
    project: &Project,
    environment: &str,
    spec: &Spec,
    rng: &mut Rng,
) -> String {
    let mut y = String::new();
    let _ = write!(
        y,
        "# yaml-language-server: $schema=../../../schemas/workspace.json\n\
         apiVersion: berth/v1alpha1\n\
         kind: Workspace\n\
         metadata:\n  name: {name}\n  labels:\n    team: {team}\n    bench-rev: \"{rev}\"\n\
         spec:\n  project: {project}\n  environment: {environment}\n",
        team = project.team,
        rev = spec.rev,
        project = project.name,
    );
    if rng.chance(10) {
        let _ = writeln!(y, "  image: mageai/mageai:0.9.{}", 70 + rng.below(8));
    }
    y.push_str("  env:\n");
    let _ = writeln!(
        y,
        "    - {{name: LOG_LEVEL, value: {}}}",
        rng.pick(LOG_LEVELS)
    );
    // `berth-bench latency` edits this line.
    y.push_str("    - {name: BENCH_TOKEN, value: \"t0\"}\n");
    let _ = writeln!(y, "    - {{name: BENCH_REV, value: \"{}\"}}", spec.rev);
    if rng.chance(20) {
        let _ = writeln!(
            y,
            "    - {{name: DB_HOST, value: replica-{}.warehouse.{}.svc}}",
            rng.below(3),
            project.name
        );
    }
    if rng.chance(15) {
        let _ = writeln!(
            y,
            "    - name: API_KEY\n      secretRef: {{name: {name}-api, key: key}}"
        );
    }
    let (rc, rm, lc, lm) = *rng.pick(SIZES);
    let _ = writeln!(
        y,
        "  resources:\n    requests: {{cpu: \"{rc}\", memory: {rm}}}\n    limits: {{cpu: \"{lc}\", memory: {lm}}}"
    );
    let _ = writeln!(y, "  storage:\n    size: {}", rng.pick(STORAGE));
    if environment == "prod" && rng.chance(30) {
        y.push_str(
            "  kubernetes:\n    nodeSelector:\n      workload: data\n    tolerations:\n      \
             - {key: dedicated, operator: Equal, value: data, effect: NoSchedule}\n",
        );
    }
    if rng.chance(5) {
        y.push_str("  suspended: true\n");
    }
    let idle = environment == "dev" && rng.chance(40);
    let post_start = rng.chance(20);
    let restart = match rng.below(10) {
        0 => Some("manual"),
        1 if idle => Some("when-idle"),
        _ => None,
    };
    if idle || post_start || restart.is_some() {
        y.push_str("  lifecycle:\n");
        if idle {
            let _ = writeln!(
                y,
                "    termination:\n      idleSeconds: {}",
                rng.pick(&[1800, 3600, 7200])
            );
        }
        if post_start {
            y.push_str(
                "    postStart:\n      command: [\"sh\", \"-c\", \"pip install -r requirements.txt\"]\n",
            );
        }
        if let Some(restart) = restart {
            let _ = writeln!(y, "    restart: {restart}");
        }
    }
    y
}

fn write_repo(out: &Path, files: &[(String, String)]) -> Result<()> {
    if out.exists()
        && std::fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .next()
            .is_some()
    {
        bail!("{} exists and is not empty", out.display());
    }
    for (path, text) in files {
        let target = out.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&target, text).with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(())
}

// ---- latency -----------------------------------------------------------------------------

/// The pod template's env hash of a StatefulSet.
fn env_hash(sts: &StatefulSet) -> Option<String> {
    sts.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(berth::render::ENV_HASH)
        .cloned()
}

/// Milliseconds from writing the edited file until the workspace's StatefulSet, the last
/// object of a workspace to be applied, carries a new env hash.
async fn latency(
    file: &Path,
    value: &str,
    namespace: &str,
    workspace: &str,
    kubeconfig: &Path,
    timeout: Duration,
) -> Result<f64> {
    let cluster = berth::cluster::Cluster::connect(&berth::cluster::ConnectOptions {
        kubeconfig: Some(kubeconfig.to_path_buf()),
        context: None,
    })
    .await?;
    let api: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), namespace);
    // Watch from the list's version (the collection's, not the object's own, which the
    // watch cache may have forgotten), so no event between the edit and the watch is lost.
    let selector = format!("metadata.name={workspace}");
    let list = api
        .list(&ListParams::default().fields(&selector))
        .await
        .with_context(|| format!("reading StatefulSet {namespace}/{workspace}"))?;
    let Some(current) = list.items.first() else {
        bail!("no StatefulSet {namespace}/{workspace}");
    };
    let before = env_hash(current);
    let version = list.metadata.resource_version.unwrap_or_default();
    let params = WatchParams::default()
        .fields(&selector)
        .timeout(timeout.as_secs().clamp(1, 290) as u32);
    let mut events = api.watch(&params, &version).await?.boxed();

    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let pattern = regex::Regex::new(r#"\{name: BENCH_TOKEN, value: "[^"]*"\}"#)?;
    if !pattern.is_match(&text) {
        bail!("{} has no BENCH_TOKEN line", file.display());
    }
    let edited = pattern.replace(&text, format!(r#"{{name: BENCH_TOKEN, value: "{value}"}}"#));
    if edited == text {
        bail!("{} already has BENCH_TOKEN={value}", file.display());
    }
    let started = Instant::now();
    std::fs::write(file, edited.as_bytes())
        .with_context(|| format!("writing {}", file.display()))?;

    let wait = async {
        while let Some(event) = events.try_next().await? {
            match event {
                WatchEvent::Added(sts) | WatchEvent::Modified(sts) if env_hash(&sts) != before => {
                    return Ok(());
                }
                WatchEvent::Error(e) => bail!("watch failed: {e}"),
                _ => {}
            }
        }
        bail!("the watch ended before the change arrived")
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| anyhow::anyhow!("the change did not arrive within {timeout:?}"))??;
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}
