use super::*;
use crate::load::SourceFile;
use crate::render::RenderContext;

/// Render a small repository whose project variable `DEV_ENV_X` only dev workspaces inherit.
fn render(dev_value: &str, extra: &str) -> Vec<Value> {
    let project = format!(
        r#"
apiVersion: berth/v1alpha1
kind: Project
metadata: {{name: p}}
spec:
  namespace: ns
  image: mageai/mageai:1
  env:
    - {{name: SHARED, value: "1"}}
    - {{name: DEV_ENV_X, value: "{dev_value}"}}
  inheritance:
    userDefinedVars: [SHARED]
    byEnvironment: {{dev: ["DEV_ENV_*"]}}
"#
    );
    let ws = |name: &str, env: &str, more: &str| {
        format!(
            "---\napiVersion: berth/v1alpha1\nkind: Workspace\nmetadata: {{name: {name}}}\nspec:\n  project: p\n  environment: {env}\n{more}"
        )
    };
    let text = [
        project,
        ws("a-dev", "dev", ""),
        ws("b-dev", "dev", "  lifecycle: {restart: manual}\n"),
        ws("c-prod", "prod", ""),
        extra.to_string(),
    ]
    .concat();
    let desired = crate::desired(
        vec![SourceFile::new("repo.yaml", text)],
        &RenderContext::default(),
    );
    assert!(!desired.has_errors(), "{:?}", desired.diagnostics);
    desired.objects
}

#[test]
fn offline_plan_creates_everything() {
    let objects = render("1", "");
    let plan = compute(&objects, &[]);
    assert_eq!(plan.count(Action::Create), objects.len());
    assert!(plan.restarts.is_empty());
    assert!(plan.has_changes());
}

#[test]
fn same_objects_plan_nothing() {
    let objects = render("1", "");
    let plan = compute(&objects, &objects);
    assert!(!plan.has_changes());
    assert_eq!(plan.unchanged, objects.len());
}

#[test]
fn inherited_change_restarts_only_inheriting_workspaces() {
    let before = render("1", "");
    let after = render("2", "");
    let plan = compute(&after, &before);
    let restarted: Vec<_> = plan.restarts.iter().map(|r| r.workspace.as_str()).collect();
    assert_eq!(restarted, ["a-dev", "b-dev"]);
    let a = &plan.restarts[0];
    assert_eq!(a.variables.len(), 1);
    assert_eq!(a.variables[0].name, "DEV_ENV_X");
    assert_eq!(a.variables[0].change, "changed");
    assert!(a.pending.is_none());
    // b-dev restarts manually: listed as pending, and its pod template keeps the old hash.
    let b = &plan.restarts[1];
    assert!(
        b.pending
            .as_deref()
            .unwrap_or_default()
            .starts_with("manual")
    );
    let b_sts = plan
        .changes
        .iter()
        .find(|c| c.object.kind == "StatefulSet" && c.object.name == "b-dev");
    assert!(
        b_sts.is_none(),
        "only b-dev's ConfigMap changes: {:?}",
        plan.changes
    );
    // c-prod does not inherit DEV_ENV_X: nothing of it changes.
    assert!(
        plan.changes
            .iter()
            .all(|c| !c.object.name.starts_with("c-prod"))
    );
    // The prod workspace's ConfigMap is untouched, the dev ones change.
    let updated: Vec<_> = plan.changes.iter().map(|c| c.object.to_string()).collect();
    assert_eq!(
        updated,
        [
            "ConfigMap/ns/a-dev-env",
            "ConfigMap/ns/b-dev-env",
            "StatefulSet/ns/a-dev"
        ]
    );
}

#[test]
fn removed_workspace_is_deleted_and_unmanaged_objects_are_left_alone() {
    let extra = "---\napiVersion: berth/v1alpha1\nkind: Workspace\nmetadata: {name: d-old}\nspec: {project: p}\n";
    let before = render("1", extra);
    let after = render("1", "");
    let mut live = before.clone();
    live.push(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "theirs", "namespace": "ns"}}));
    let plan = compute(&after, &live);
    let deleted: Vec<_> = plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Delete)
        .map(|c| c.object.to_string())
        .collect();
    assert_eq!(
        deleted,
        [
            "StatefulSet/ns/d-old",
            "Service/ns/d-old",
            "ConfigMap/ns/d-old-env"
        ]
    );
    assert!(plan.changes.iter().all(|c| c.reason == "no longer in git"));
}

#[test]
fn updates_name_fields_and_diff() {
    let before = render("1", "");
    let mut live = before.clone();
    for o in &mut live {
        if o["kind"] == "StatefulSet" && o["metadata"]["name"] == "c-prod" {
            o["spec"]["replicas"] = 0.into();
            o["spec"]["podManagementPolicy"] = "OrderedReady".into();
        }
    }
    let plan = compute(&before, &live);
    assert_eq!(plan.changes.len(), 1);
    assert_eq!(plan.changes[0].fields, ["spec.replicas"]);
    assert!(plan.changes[0].diff.contains("+  replicas: 1"));
}

#[test]
fn when_idle_restart_waits_for_idleness_then_applies() {
    let text = |value: &str| {
        format!(
            "apiVersion: berth/v1alpha1\nkind: Project\nmetadata: {{name: p}}\nspec:\n  namespace: ns\n  image: i:1\n  env: [{{name: X, value: \"{value}\"}}]\n---\napiVersion: berth/v1alpha1\nkind: Workspace\nmetadata: {{name: w}}\nspec:\n  project: p\n  lifecycle: {{restart: when-idle, termination: {{idleSeconds: 60}}}}\n"
        )
    };
    let render = |value: &str, ctx: &RenderContext| {
        let desired = crate::desired(vec![SourceFile::new("r.yaml", text(value))], ctx);
        assert!(!desired.has_errors(), "{:?}", desired.diagnostics);
        desired.objects
    };
    let busy = RenderContext::default();
    let idle = RenderContext {
        idle: BTreeMap::from([("ns/w".to_string(), "2025-01-01T00:00:00Z".to_string())]),
        ..Default::default()
    };
    let before = render("1", &busy);
    // Busy: the restart is pending and the pod template keeps the old hash.
    let plan = compute(&render("2", &busy), &before);
    assert_eq!(plan.restarts.len(), 1);
    assert!(
        plan.restarts[0]
            .pending
            .as_deref()
            .unwrap()
            .contains("idle")
    );
    assert!(plan.changes.iter().all(|c| c.object.kind != "StatefulSet"));
    // Idle: suspended (replicas 0, idle-since) and the restart goes through.
    let plan = compute(&render("2", &idle), &before);
    assert_eq!(plan.restarts.len(), 1);
    assert!(plan.restarts[0].pending.is_none(), "{:?}", plan.restarts);
    let sts = plan
        .changes
        .iter()
        .find(|c| c.object.kind == "StatefulSet")
        .expect("the StatefulSet changes");
    let desired = sts.desired.as_ref().unwrap();
    assert_eq!(desired["spec"]["replicas"], 0);
    assert_eq!(
        desired["metadata"]["annotations"][crate::render::IDLE_SINCE],
        "2025-01-01T00:00:00Z"
    );
    assert_ne!(
        desired["spec"]["template"]["metadata"]["annotations"][crate::render::ENV_HASH],
        before.iter().find(|o| o["kind"] == "StatefulSet").unwrap()["spec"]["template"]["metadata"]
            ["annotations"][crate::render::ENV_HASH]
    );
}

/// Seen: after applying a change to a literal variable inherited by a `restart: manual`
/// workspace, the next plan blamed a secret ("the Secret's data changed"). The reason must
/// stay the variable that changed, however many applies happen before the restart.
#[test]
fn a_pending_restart_keeps_its_true_reason_across_applies() {
    let before = render("1", "");
    let after = render("2", "");
    let first = compute(&after, &before);
    // Apply the first plan: its objects (the pending StatefulSet keeps hash and record).
    let mut live: Vec<Value> = after
        .iter()
        .map(|o| {
            let key = key_of(o).unwrap();
            first
                .changes
                .iter()
                .find(|c| c.object == key)
                .and_then(|c| c.desired.clone())
                .unwrap_or_else(|| {
                    before
                        .iter()
                        .find(|b| key_of(b).as_ref() == Some(&key))
                        .cloned()
                        .unwrap()
                })
        })
        .collect();
    for _ in 0..3 {
        let plan = compute(&after, &live);
        let b = plan
            .restarts
            .iter()
            .find(|r| r.workspace == "b-dev")
            .expect("b-dev's restart is still pending");
        assert!(b.pending.is_some());
        assert_eq!(
            b.variables,
            [VarChange {
                name: "DEV_ENV_X".into(),
                change: "changed",
                source: "project env via byEnvironment.dev `DEV_ENV_*`".into(),
            }],
            "{:?}",
            b.variables
        );
        // Nothing else is left to apply: only the pending restart remains.
        assert!(!plan.has_changes(), "{:?}", plan.changes);
    }
    // Once restarted (the StatefulSet applied as rendered), nothing is pending.
    for object in &mut live {
        if key_of(object).is_some_and(|k| k.kind == "StatefulSet" && k.name == "b-dev") {
            *object = after
                .iter()
                .find(|a| key_of(a) == key_of(object))
                .cloned()
                .unwrap();
        }
    }
    assert!(compute(&after, &live).restarts.is_empty());
}

/// A Secret version berth could not read when the pods started (its RoleBinding came with
/// that apply) is no reason to restart them; once known it is recorded, so a later change
/// of the Secret's data does restart them, with that reason.
#[test]
fn unknown_secret_versions_never_restart_and_are_learnt() {
    let text = "apiVersion: berth/v1alpha1
kind: Project
metadata: {name: p}
spec:
  namespace: ns
  image: mageai/mageai:1
  shareSecretsAcrossWorkspaces: true
  env:
    - {name: TOKEN, secretRef: {name: s, key: k}}
---
apiVersion: berth/v1alpha1
kind: Workspace
metadata: {name: w}
spec: {project: p}
";
    let with = |version: Option<&str>| {
        let ctx = RenderContext {
            secret_versions: version
                .map(|v| [("ns/s".to_string(), v.to_string())].into())
                .unwrap_or_default(),
            // No version: berth may not read the namespace's Secrets yet.
            read_secrets: version.map(|_| "ns".to_string()).into_iter().collect(),
            ..Default::default()
        };
        let desired = crate::desired(vec![SourceFile::new("r.yaml", text)], &ctx);
        assert!(!desired.has_errors(), "{:?}", desired.diagnostics);
        desired.objects
    };
    let applied = |plan: &Plan, live: &[Value]| -> Vec<Value> {
        live.iter()
            .map(|o| {
                plan.changes
                    .iter()
                    .find(|c| Some(&c.object) == key_of(o).as_ref())
                    .and_then(|c| c.desired.clone())
                    .unwrap_or_else(|| o.clone())
            })
            .collect()
    };
    let started = with(None);
    let learnt = compute(&with(Some("5")), &started);
    assert!(learnt.restarts.is_empty(), "{:?}", learnt.restarts);
    let live = applied(&learnt, &started);
    let sts = live.iter().find(|o| o["kind"] == "StatefulSet").unwrap();
    assert_eq!(
        template_hash(sts),
        template_hash(started.iter().find(|o| o["kind"] == "StatefulSet").unwrap())
    );
    assert!(
        sts["metadata"]["annotations"][ENV_RECORD]
            .as_str()
            .unwrap()
            .contains(":5\""),
        "the version is learnt: {sts}"
    );
    assert!(compute(&with(Some("5")), &live).restarts.is_empty());
    let changed = compute(&with(Some("6")), &live);
    assert_eq!(changed.restarts.len(), 1);
    assert!(
        changed.restarts[0].variables[0]
            .source
            .ends_with("the Secret's data changed"),
        "{:?}",
        changed.restarts
    );
}
