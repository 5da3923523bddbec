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
