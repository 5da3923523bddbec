//! A Project reaches only where it may (issue #25): where projects may go is the cluster
//! administrators' tenancy rule (the ConfigMap berth-tenancy of deploy/), berth refuses a
//! repository outside it at the line of its `namespace`, and — whatever berth does — the API
//! server refuses every write of berth's identity outside the namespaces it manages, with
//! deploy/'s admission policies.
//!
//! The probes of the issue, each against the real API server with deploy/ applied, writing
//! as `system:serviceaccount:berth-system:berth` (a token of that account):
//! (a) a Project in `kube-system` or `berth-system` does not validate, and berth cannot
//!     write a Role or RoleBinding there;
//! (b) berth cannot bind `berth-secret-reader` in `kube-system`, nor to another
//!     ServiceAccount named `berth`;
//! (c) berth cannot patch a StatefulSet in `kube-system`, although RBAC says it may.

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use berth::cluster::applyset::ApplySet;
use berth::reconcile::Config;
use berth::source::SourceSpec;
use support::repo::text;
use tokio_util::sync::CancellationToken;

const BERTH: &str = "system:serviceaccount:berth-system:berth";

/// The rule these tests run under: sample-repo's namespaces (as deploy/ ships it), and the
/// prefixes of the namespaces the tests make: `tn-*` for namespaces berth may manage, `rc-*`
/// for the reconciler test, which takes it away again.
const ALLOWED: &str = "analytics, ml-platform, zenml-runners, tn-*, rc-*";

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

/// berth's identity: a kubeconfig with a token of its ServiceAccount, once deploy/ is
/// applied (its tenancy rule set to [`ALLOWED`]) and its admission policies are in force.
fn berth_kubeconfig(cp: &support::ControlPlane) -> &'static Path {
    static SETUP: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = SETUP.get_or_init(|| {
        for file in [
            "00-namespace.yaml",
            "10-rbac.yaml",
            "15-tenancy.yaml",
            "40-admission.yaml",
        ] {
            let out = cp
                .kubectl()
                .arg("apply")
                .arg("-f")
                .arg(deploy(file))
                .output();
            let out = out.expect("running kubectl apply");
            assert!(out.status.success(), "{file}: {}", text(&out.stderr));
        }
        set_allowed(cp, ALLOWED);
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = support::identity::kubeconfig_as(cp, "berth-system", "berth", dir.path());
        // The API server loads policies, bindings and parameters within moments.
        let started = Instant::now();
        loop {
            let out = kubectl_as(
                cp,
                &path,
                &[
                    "create",
                    "configmap",
                    "probe",
                    "-n",
                    "kube-system",
                    "--dry-run=server",
                ],
            );
            if text(&out.stderr).contains("berth-tenancy") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the tenancy policy is not in force after 30 s: {}",
                text(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        (dir, path)
    });
    path
}

/// Sets the rule's `allowedNamespaces` (as an administrator would: kubectl patch).
fn set_allowed(cp: &support::ControlPlane, allowed: &str) {
    set_rule(cp, "allowedNamespaces", allowed);
}

/// Sets one key of the tenancy rule's ConfigMap, as an administrator would.
fn set_rule(cp: &support::ControlPlane, key: &str, value: &str) {
    let patch = serde_json::json!({"data": {key: value}}).to_string();
    kubectl_ok(cp.kubectl().args([
        "-n",
        "berth-system",
        "patch",
        "configmap",
        "berth-tenancy",
        "--type=merge",
        "-p",
        &patch,
    ]));
}

fn kubectl_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("running kubectl");
    assert!(out.status.success(), "{cmd:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// kubectl as the identity of `kubeconfig`.
fn kubectl_as(cp: &support::ControlPlane, kubeconfig: &Path, args: &[&str]) -> Output {
    cp.kubectl()
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("running kubectl")
}

/// `kubectl apply --server-side` of `yaml` as the identity of `kubeconfig`, as berth
/// applies (field manager berth).
fn apply_as(cp: &support::ControlPlane, kubeconfig: &Path, yaml: &str) -> Output {
    let mut child = cp
        .kubectl()
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "apply",
            "--server-side",
            "--field-manager=berth",
            "--force-conflicts",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kubectl apply");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("writing to kubectl");
    child.wait_with_output().expect("kubectl's output")
}

/// The admission policy's message of a write refused by `policy`; panics, with what
/// happened, when it was not refused so.
fn refused_by(out: &Output, policy: &str) -> String {
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "the write was not refused:\n{}{stderr}",
        text(&out.stdout)
    );
    let marker =
        format!("ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request: ");
    let Some((_, message)) = stderr.split_once(&marker) else {
        panic!("not refused by {policy}: {stderr}");
    };
    message.trim().to_string()
}

fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "refused: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A namespace made by an administrator, `labels` (`k=v`) on it.
fn namespace(cp: &support::ControlPlane, prefix: &str, labels: &[&str]) -> String {
    let name = support::unique_name(prefix);
    kubectl_ok(cp.kubectl().args(["create", "namespace", &name]));
    if !labels.is_empty() {
        kubectl_ok(
            cp.kubectl()
                .args(["label", "namespace", &name])
                .args(labels),
        );
    }
    name
}

const MANAGED: &str = "app.kubernetes.io/managed-by=berth";

/// A one-project repository in `namespace`, in a temporary folder.
fn project_repo(namespace: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary folder");
    std::fs::create_dir_all(dir.path().join("projects")).expect("mkdir");
    std::fs::write(
        dir.path().join("projects/p.yaml"),
        format!(
            "apiVersion: berth/v1alpha1\nkind: Project\nmetadata: {{name: p}}\nspec:\n  image: mageai/mageai:0.9.76\n  namespace: {namespace}\n"
        ),
    )
    .expect("writing the project");
    dir
}

fn berth_cmd() -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("berth"));
    cmd.env("NO_COLOR", "1").env_remove("RUST_LOG");
    cmd
}

/// (a), as berth checks a repository: a Project in kube-system, berth-system or default,
/// or outside the administrators' rule, is an error at its `namespace` line, naming the
/// rule — offline from `--tenancy` (deploy/'s file) or `--allow-namespace`, live from the
/// cluster's ConfigMap; and nothing is applied.
#[tokio::test]
async fn a_project_outside_the_rule_is_refused_at_its_namespace_line() {
    // Offline, no rule given: only the namespaces no rule can allow are refused.
    for (namespace, why) in [
        (
            "kube-system",
            "`kube-system` is one of Kubernetes' own namespaces (kube-*), which no rule can allow",
        ),
        ("berth-system", "`berth-system` is berth's own namespace"),
        (
            "default",
            "`default` is Kubernetes' default namespace, which no rule can allow",
        ),
    ] {
        let repo = project_repo(namespace);
        let out = berth_cmd()
            .arg("validate")
            .arg(repo.path())
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{namespace}: {stderr}");
        let expected = format!(
            "projects/p.yaml:6:14: error: spec.namespace: namespace not allowed by the tenancy rule: {why}"
        );
        assert!(stderr.contains(&expected), "{expected}\nin:\n{stderr}");
        // The offline plan says the same.
        let out = berth_cmd()
            .args(["plan", "--offline"])
            .arg(repo.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains(&expected));
    }
    // Offline with deploy/'s rule: sample-repo is inside it; a team namespace is not.
    let rule = deploy("15-tenancy.yaml");
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-repo");
    let out = berth_cmd()
        .arg("validate")
        .arg(&sample)
        .arg("--tenancy")
        .arg(&rule)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let repo = project_repo("team-a");
    let out = berth_cmd()
        .arg("validate")
        .arg(repo.path())
        .arg("--tenancy")
        .arg(&rule)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "projects/p.yaml:6:14: error: spec.namespace: namespace not allowed by the tenancy rule: `team-a` matches none of the allowed namespaces (--tenancy {})",
            rule.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("allowedNamespaces `analytics, ml-platform, zenml-runners`"),
        "{stderr}"
    );
    // In CI's annotations too.
    let out = berth_cmd()
        .arg("validate")
        .arg(repo.path())
        .args(["--allow-namespace", "ml-*", "--format", "github"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("line=6,col=14")
            && text(&out.stdout).contains("--allow-namespace"),
        "{}",
        text(&out.stdout)
    );
    let out = berth_cmd()
        .arg("validate")
        .arg(repo.path())
        .args(["--allow-namespace", "team-*"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // A malformed rule is an error of its own, not a rule that allows nothing quietly.
    let out = berth_cmd()
        .arg("validate")
        .arg(repo.path())
        .args(["--allow-namespace", "Team_*"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("`Team_*` is not a namespace pattern"),
        "{}",
        text(&out.stderr)
    );

    // Live: the cluster's rule, read from berth's namespace.
    let Some(cp) = support::control_plane().await else {
        return;
    };
    berth_kubeconfig(&cp);
    let outside = support::unique_name("outside");
    let repo = project_repo(&outside);
    let live = |command: &str, extra: &[&str]| {
        berth_cmd()
            .arg(command)
            .arg(repo.path())
            .args(extra)
            .arg("--kubeconfig")
            .arg(cp.kubeconfig_path())
            .args(["--applyset", &format!("berth-{outside}")])
            .args(["--applyset-namespace", "berth-system"])
            .output()
            .unwrap()
    };
    let expected = format!(
        "projects/p.yaml:6:14: error: spec.namespace: namespace not allowed by the tenancy rule: `{outside}` matches none of the allowed namespaces (ConfigMap berth-system/berth-tenancy)"
    );
    let out = live("plan", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&expected),
        "{}",
        text(&out.stderr)
    );
    let out = live("apply", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&expected),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("nothing was applied"));
    let out = cp
        .kubectl()
        .args(["get", "namespace", &outside])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the namespace was made");
    // A live plan takes no rule from the command line.
    let out = live("plan", &["--allow-namespace", "*"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("a live plan reads the cluster's tenancy rule"),
        "{}",
        text(&out.stderr)
    );
}

/// (a) and (c), as the API server sees berth's writes: nothing in kube-system or
/// berth-system's RBAC, no StatefulSet patch in kube-system although `auth can-i` says yes,
/// not the rule's own ConfigMap, and nothing in a namespace berth does not manage (unlabelled,
/// or labelled but outside the rule) — while a managed namespace takes its writes.
#[tokio::test]
async fn berth_cannot_write_where_it_does_not_manage() {
    let Some(cp) = support::control_plane().await else {
        return;
    };
    let berth = berth_kubeconfig(&cp);

    // (a) Roles and RoleBindings in kube-system and in berth's own namespace.
    let role = |ns: &str| {
        kubectl_as(
            &cp,
            berth,
            &[
                "create",
                "role",
                "x",
                "--verb=get",
                "--resource=pods",
                "-n",
                ns,
            ],
        )
    };
    let binding = |ns: &str| {
        kubectl_as(
            &cp,
            berth,
            &[
                "create",
                "rolebinding",
                "x",
                "--role=x",
                "--user=someone",
                "-n",
                ns,
            ],
        )
    };
    assert_eq!(
        refused_by(&role("kube-system"), "berth-tenancy"),
        "berth may not write in namespace kube-system: kube-*, default and berth-system are never berth's"
    );
    assert_eq!(
        refused_by(&binding("kube-system"), "berth-tenancy"),
        "berth may not write in namespace kube-system: kube-*, default and berth-system are never berth's"
    );
    assert_eq!(
        refused_by(&role("berth-system"), "berth-tenancy"),
        "in its own namespace berth-system berth writes only its ConfigMaps, Leases and Events (never the admission parameters), not roles x"
    );
    assert!(refused_by(&binding("berth-system"), "berth-tenancy").ends_with("not rolebindings x"));
    assert!(refused_by(&role("default"), "berth-tenancy").contains("never berth's"));
    // Nor may it rewrite the rule that fences it, or the RBAC guard's parameters.
    for config_map in ["berth-tenancy", "berth-rbac-guard"] {
        let out = kubectl_as(
            &cp,
            berth,
            &[
                "-n",
                "berth-system",
                "patch",
                "configmap",
                config_map,
                "--type=merge",
                "-p",
                r#"{"data":{"allowedNamespaces":"*","clusterRole":"cluster-admin"}}"#,
            ],
        );
        assert!(
            refused_by(&out, "berth-tenancy").ends_with(&format!("not configmaps {config_map}"))
        );
    }
    // What it does write there (its ApplySet parent, status, leader Lease) it may.
    succeeded(&kubectl_as(
        &cp,
        berth,
        &[
            "create",
            "configmap",
            "berth-probe",
            "-n",
            "berth-system",
            "--dry-run=server",
        ],
    ));

    // (c) RBAC says yes to a patch of any StatefulSet…
    let sts = r#"{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"victim","namespace":"kube-system"},"spec":{"selector":{"matchLabels":{"a":"b"}},"serviceName":"victim","template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"busybox"}]}}}}"#;
    let mut create = cp.kubectl();
    create.args(["apply", "-f", "-"]).stdin(Stdio::piped());
    let mut child = create.stdout(Stdio::null()).spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sts.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let can_i = cp
        .kubectl()
        .args([
            "auth",
            "can-i",
            "patch",
            "statefulsets",
            "-n",
            "kube-system",
            "--as",
            BERTH,
        ])
        .output()
        .unwrap();
    assert_eq!(text(&can_i.stdout).trim(), "yes", "{}", text(&can_i.stderr));
    // …and the admission policy refuses it.
    let patch = kubectl_as(
        &cp,
        berth,
        &[
            "-n",
            "kube-system",
            "patch",
            "statefulsets",
            "victim",
            "--type=merge",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"evil"}]}}}}"#,
        ],
    );
    assert_eq!(
        refused_by(&patch, "berth-tenancy"),
        "berth may not write in namespace kube-system: kube-*, default and berth-system are never berth's"
    );
    let delete = kubectl_as(
        &cp,
        berth,
        &["-n", "kube-system", "delete", "statefulset", "victim"],
    );
    assert!(refused_by(&delete, "berth-tenancy").contains("kube-system"));

    // A namespace inside the rule that berth does not manage (no label), and one berth
    // manages by label but outside the rule: no write in either.
    let unlabelled = namespace(&cp, "tn-free", &[]);
    let outside = namespace(&cp, "outside", &[MANAGED]);
    let managed = namespace(&cp, "tn-mine", &[MANAGED]);
    let config_map = |ns: &str| {
        kubectl_as(
            &cp,
            berth,
            &["create", "configmap", "x", "-n", ns, "--from-literal=a=b"],
        )
    };
    assert_eq!(
        refused_by(&config_map(&unlabelled), "berth-tenancy"),
        format!(
            "berth may not write in namespace {unlabelled}: berth does not manage it (no label app.kubernetes.io/managed-by=berth)"
        )
    );
    assert_eq!(
        refused_by(&config_map(&outside), "berth-tenancy"),
        format!(
            "berth may not write in namespace {outside}: it matches none of allowedNamespaces in ConfigMap berth-system/berth-tenancy"
        )
    );
    // A namespace it manages takes every kind of write berth makes.
    succeeded(&config_map(&managed));
    succeeded(&kubectl_as(
        &cp,
        berth,
        &[
            "-n",
            &managed,
            "patch",
            "configmap",
            "x",
            "--type=merge",
            "-p",
            r#"{"data":{"a":"c"}}"#,
        ],
    ));
    succeeded(&role(&managed));
    succeeded(&kubectl_as(
        &cp,
        berth,
        &["-n", &managed, "delete", "configmap", "x"],
    ));
}

/// (b) berth binds the Secret reader only to its own ServiceAccount (namespace and name),
/// only in namespaces it manages; so it reads no Secret elsewhere.
#[tokio::test]
async fn berth_binds_the_secret_reader_only_to_itself_where_it_manages() {
    let Some(cp) = support::control_plane().await else {
        return;
    };
    let berth = berth_kubeconfig(&cp);
    let bind = |ns: &str, subject: &str| {
        kubectl_as(
            &cp,
            berth,
            &[
                "-n",
                ns,
                "create",
                "rolebinding",
                &support::unique_name("x"),
                "--clusterrole=berth-secret-reader",
                subject,
            ],
        )
    };
    // The issue's probe, word for word.
    let out = bind("kube-system", "--serviceaccount=berth-system:berth");
    assert_eq!(
        refused_by(&out, "berth-tenancy"),
        "berth may not write in namespace kube-system: kube-*, default and berth-system are never berth's"
    );
    let secrets = kubectl_as(&cp, berth, &["-n", "kube-system", "get", "secrets"]);
    assert!(
        !secrets.status.success() && text(&secrets.stderr).contains("Forbidden"),
        "{}",
        text(&secrets.stderr)
    );
    // In a namespace berth manages: not to another account named berth, nor a user.
    let managed = namespace(&cp, "tn-bind", &[MANAGED]);
    let other = bind(&managed, "--serviceaccount=elsewhere:berth");
    assert_eq!(
        refused_by(&other, "berth-rbac-guard"),
        "berth may bind the ClusterRole berth-secret-reader only to its own ServiceAccount (system:serviceaccount:berth-system:berth), not to ServiceAccount elsewhere/berth"
    );
    let user = bind(&managed, "--user=berth");
    assert!(
        refused_by(&user, "berth-rbac-guard").ends_with("not to User berth"),
        "{}",
        text(&user.stderr)
    );
    // To itself, as berth renders it, it may: then it reads Secrets there, and only there.
    succeeded(&bind(&managed, "--serviceaccount=berth-system:berth"));
    succeeded(&kubectl_as(&cp, berth, &["-n", &managed, "get", "secrets"]));
    let unlabelled = namespace(&cp, "tn-other", &[]);
    let out = bind(&unlabelled, "--serviceaccount=berth-system:berth");
    assert!(refused_by(&out, "berth-tenancy").contains("berth does not manage it"));
}

/// Namespaces themselves: berth creates them only inside the rule and labelled as its own,
/// and takes over an existing one only when an administrator allows it — by labelling it,
/// or for all with `adoptExistingNamespaces: "true"`.
#[tokio::test]
async fn berth_creates_namespaces_only_inside_the_rule_and_takes_over_none_unasked() {
    let Some(cp) = support::control_plane().await else {
        return;
    };
    let berth = berth_kubeconfig(&cp);
    let ns = |name: &str, labelled: bool| {
        let labels = if labelled {
            "\n  labels: {app.kubernetes.io/managed-by: berth}"
        } else {
            ""
        };
        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}{labels}\n")
    };
    // Inside the rule and labelled: created.
    let fresh = support::unique_name("tn-new");
    succeeded(&apply_as(&cp, berth, &ns(&fresh, true)));
    // Unlabelled, it would be a namespace berth cannot manage afterwards.
    let bare = support::unique_name("tn-bare");
    assert_eq!(
        refused_by(&apply_as(&cp, berth, &ns(&bare, false)), "berth-tenancy"),
        format!(
            "berth must label a Namespace it creates app.kubernetes.io/managed-by=berth: {bare}"
        )
    );
    // Outside the rule, or one no rule can allow.
    for name in [
        support::unique_name("outside"),
        "kube-berth".into(),
        "default".into(),
        "berth-system".into(),
    ] {
        let out = apply_as(&cp, berth, &ns(&name, true));
        let message = refused_by(&out, "berth-tenancy");
        assert!(
            message.starts_with(&format!(
                "berth may not create, change or delete Namespace {name}: "
            )),
            "{message}"
        );
    }
    // Nor delete one outside the rule, even one labelled as berth's.
    let labelled = namespace(&cp, "outside", &[MANAGED]);
    let out = kubectl_as(&cp, berth, &["delete", "namespace", &labelled]);
    assert_eq!(
        refused_by(&out, "berth-tenancy"),
        format!(
            "berth may not create, change or delete Namespace {labelled}: it matches none of allowedNamespaces in ConfigMap berth-system/berth-tenancy"
        )
    );

    // An existing namespace inside the rule, made by someone else: not taken over…
    let theirs = namespace(&cp, "tn-theirs", &[]);
    let takeover = format!(
        "Namespace {theirs} is not managed by berth (no label app.kubernetes.io/managed-by=berth): berth takes over an existing namespace only once an administrator labels it so, or sets adoptExistingNamespaces: \"true\" in ConfigMap berth-system/berth-tenancy"
    );
    assert_eq!(
        refused_by(&apply_as(&cp, berth, &ns(&theirs, true)), "berth-tenancy"),
        takeover
    );
    let out = kubectl_as(&cp, berth, &["delete", "namespace", &theirs]);
    assert_eq!(refused_by(&out, "berth-tenancy"), takeover);
    // …unless an administrator hands it over by labelling it…
    let handed = namespace(&cp, "tn-handed", &[MANAGED]);
    succeeded(&apply_as(&cp, berth, &ns(&handed, true)));
    // …or lets berth adopt existing namespaces. (Only this test changes that switch.)
    let adopt = |value: &str| set_rule(&cp, "adoptExistingNamespaces", value);
    adopt("true");
    support::wait_for(
        Duration::from_secs(30),
        "adoption to be allowed",
        || async {
            let out = apply_as(&cp, berth, &ns(&theirs, true));
            if out.status.success() {
                Ok(())
            } else {
                Err(text(&out.stderr))
            }
        },
    )
    .await;
    adopt("false");
    // Adopted, it is berth's: labelled, so berth may write in it.
    let labels = kubectl_ok(cp.kubectl().args([
        "get",
        "namespace",
        &theirs,
        "-o",
        "jsonpath={.metadata.labels.app\\.kubernetes\\.io/managed-by}",
    ]));
    assert_eq!(labels, "berth");
}

/// The reconciler reads the same rule: a revision outside it is invalid (at its line, in
/// the status), the last good one stays; and when the administrators narrow the rule under
/// an applied revision, the next cycle applies nothing and says why.
#[tokio::test]
async fn the_reconciler_applies_nothing_outside_the_cluster_rule() {
    let Some(cp) = support::control_plane().await else {
        return;
    };
    berth_kubeconfig(&cp);
    let folder = tempfile::tempdir().unwrap();
    let inside = support::unique_name("rc-in");
    let outside = support::unique_name("outside");
    let write = |namespace: &str, image: &str| {
        std::fs::write(
            folder.path().join("p.yaml"),
            format!(
                "apiVersion: berth/v1alpha1\nkind: Project\nmetadata: {{name: p}}\nspec:\n  image: {image}\n  namespace: {namespace}\n"
            ),
        )
        .unwrap();
    };
    write(&inside, "i");
    let set = ApplySet {
        name: format!("berth-{inside}"),
        namespace: "berth-system".into(),
    };
    let mut config = Config::new(
        SourceSpec::Folder(folder.path().to_path_buf()),
        set,
        "tenancy".into(),
    );
    config.poll_interval = Duration::from_millis(200);
    config.drift_interval = Duration::from_millis(500);
    config.backoff_base = Duration::from_millis(100);
    config.backoff_max = Duration::from_millis(500);
    let kube_config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(cp.kubeconfig_path()).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    let running = berth::reconcile::start(config, kube_config, stop.clone())
        .await
        .unwrap();
    let status = || running.shared.status();
    support::eventually(
        Duration::from_secs(20),
        "the first revision applied",
        || async { status().last_applied.is_some() },
    )
    .await;
    let applied = status().last_applied.map(|r| r.revision);

    write(&outside, "i");
    let message = support::wait_for(Duration::from_secs(20), "the revision refused", || async {
        match status().error {
            Some(e) if e.kind == "invalid" => Ok(e.message),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        message.contains(&format!(
            "p.yaml:6:14: error: spec.namespace: namespace not allowed by the tenancy rule: `{outside}` matches none of the allowed namespaces (ConfigMap berth-system/berth-tenancy)"
        )),
        "{message}"
    );
    assert_eq!(status().last_applied.map(|r| r.revision), applied);
    let out = cp
        .kubectl()
        .args(["get", "namespace", &outside])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the namespace was made");

    // A new revision inside; then the rule no longer allows it.
    write(&inside, "i2");
    support::eventually(Duration::from_secs(20), "the error to clear", || async {
        status().error.is_none() && status().last_applied.map(|r| r.revision) != applied
    })
    .await;
    set_allowed(&cp, &ALLOWED.replace(", rc-*", ""));
    let message = support::wait_for(Duration::from_secs(20), "the narrowed rule", || async {
        match status().error {
            Some(e) if e.kind == "tenancy" => Ok(e.message),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    set_allowed(&cp, ALLOWED);
    assert!(
        message.contains("is outside the tenancy rule; nothing was applied: project `p`: ")
            && message.contains(&format!(
                "`{inside}` matches none of the allowed namespaces"
            )),
        "{message}"
    );
    stop.cancel();
    running.wait().await.unwrap();
}
