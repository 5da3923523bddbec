//! Roles of Mage Pro (owner, admin, editor, viewer) as Kubernetes RBAC, least privilege:
//!
//! | role | may |
//! |---|---|
//! | viewer | read the workspace's pods, logs, StatefulSet, Service and ConfigMaps |
//! | editor | + exec into and port-forward to its pods |
//! | admin  | + restart and scale its StatefulSet |
//! | owner  | + manage the workspace's role bindings |
//!
//! Workspace roles name the workspace's objects in `resourceNames`; a project's global roles
//! cover the project's namespace.

use super::{MANAGED_BY, PROJECT_LABEL, WORKSPACE_LABEL};
use crate::model::{Role, RoleBinding};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const ROLES: [Role; 4] = [Role::Viewer, Role::Editor, Role::Admin, Role::Owner];

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Owner => "owner",
        Role::Admin => "admin",
        Role::Editor => "editor",
        Role::Viewer => "viewer",
    }
}

/// Names the rules may be limited to; `None` for a whole namespace.
pub struct Scope<'a> {
    pub workspace: Option<&'a str>,
    /// Prefix of the Role and RoleBinding names (`<workspace>` or `berth-<project>`).
    pub prefix: String,
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str], names: Option<Vec<String>>) -> Value {
    let mut rule = json!({"apiGroups": groups, "resources": resources, "verbs": verbs});
    if let Some(names) = names {
        rule["resourceNames"] = json!(names);
    }
    rule
}

/// The rules of one role.
pub fn rules(role: Role, scope: &Scope<'_>) -> Vec<Value> {
    let ws = scope.workspace;
    let names = |list: &[String]| ws.map(|_| list.to_vec());
    let read: &[&str] = if ws.is_some() {
        &["get"]
    } else {
        &["get", "list", "watch"]
    };
    let pod = ws.map(|w| format!("{w}-0")).into_iter().collect::<Vec<_>>();
    let sts: Vec<String> = ws.map(str::to_string).into_iter().collect();
    let cms: Vec<String> = ws
        .map(|w| vec![format!("{w}-env"), format!("{w}-scripts")])
        .unwrap_or_default();
    let bindings: Vec<String> = ROLES
        .iter()
        .map(|r| format!("{}-{}", scope.prefix, role_name(*r)))
        .collect();
    let rank = |r: Role| ROLES.iter().position(|x| *x == r).unwrap_or(0);
    let mut out = vec![
        rule(&[""], &["pods", "pods/log"], read, names(&pod)),
        rule(&["apps"], &["statefulsets"], read, names(&sts)),
        rule(&[""], &["services"], read, names(&sts)),
        rule(&[""], &["configmaps"], read, names(&cms)),
    ];
    if rank(role) >= rank(Role::Editor) {
        out.push(rule(
            &[""],
            &["pods/exec", "pods/portforward"],
            &["get", "create"],
            names(&pod),
        ));
    }
    if rank(role) >= rank(Role::Admin) {
        out.push(rule(
            &["apps"],
            &["statefulsets", "statefulsets/scale"],
            &["get", "patch", "update"],
            names(&sts),
        ));
    }
    if rank(role) >= rank(Role::Owner) {
        out.push(rule(
            &["rbac.authorization.k8s.io"],
            &["rolebindings"],
            &["get", "update", "patch"],
            Some(bindings.clone()),
        ));
        out.push(rule(
            &["rbac.authorization.k8s.io"],
            &["roles"],
            &["bind"],
            Some(bindings),
        ));
    }
    out
}

/// Roles and RoleBindings for the role grants of a project or workspace.
pub fn render(
    grants: &[RoleBinding],
    scope: &Scope<'_>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<Value> {
    let mut subjects: BTreeMap<Role, Vec<Value>> = BTreeMap::new();
    for grant in grants {
        let list = subjects.entry(grant.role).or_default();
        list.extend(
            grant.users.iter().map(
                |u| json!({"kind": "User", "name": u, "apiGroup": "rbac.authorization.k8s.io"}),
            ),
        );
        list.extend(
            grant.groups.iter().map(
                |g| json!({"kind": "Group", "name": g, "apiGroup": "rbac.authorization.k8s.io"}),
            ),
        );
    }
    let mut out = Vec::new();
    for (role, subjects) in subjects {
        let name = format!("{}-{}", scope.prefix, role_name(role));
        let metadata = json!({"name": name, "namespace": namespace, "labels": labels});
        out.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": metadata,
            "rules": rules(role, scope),
        }));
        out.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": subjects,
        }));
    }
    out
}

/// Labels of RBAC objects: berth's, and the project (and workspace) they serve.
pub fn labels(project: &str, workspace: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (MANAGED_BY.to_string(), "berth".to_string()),
        (PROJECT_LABEL.to_string(), project.to_string()),
    ]);
    if let Some(ws) = workspace {
        labels.insert(WORKSPACE_LABEL.to_string(), ws.to_string());
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verbs_on(rules: &[Value], resource: &str) -> Vec<String> {
        rules
            .iter()
            .filter(|r| {
                r["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x == resource)
            })
            .flat_map(|r| {
                r["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
            })
            .collect()
    }

    #[test]
    fn roles_grow_from_viewer_to_owner() {
        let scope = Scope {
            workspace: Some("etl"),
            prefix: "etl".into(),
        };
        let viewer = rules(Role::Viewer, &scope);
        assert_eq!(verbs_on(&viewer, "pods/log"), ["get"]);
        assert!(verbs_on(&viewer, "pods/exec").is_empty());
        assert_eq!(
            verbs_on(&rules(Role::Editor, &scope), "pods/exec"),
            ["get", "create"]
        );
        assert!(verbs_on(&rules(Role::Editor, &scope), "statefulsets/scale").is_empty());
        assert_eq!(
            verbs_on(&rules(Role::Admin, &scope), "statefulsets/scale"),
            ["get", "patch", "update"]
        );
        assert!(verbs_on(&rules(Role::Admin, &scope), "rolebindings").is_empty());
        assert_eq!(
            verbs_on(&rules(Role::Owner, &scope), "rolebindings"),
            ["get", "update", "patch"]
        );
    }

    #[test]
    fn workspace_roles_name_their_objects() {
        let scope = Scope {
            workspace: Some("etl"),
            prefix: "etl".into(),
        };
        for rule in rules(Role::Owner, &scope) {
            assert!(rule["resourceNames"].is_array(), "{rule}");
        }
        let pods = &rules(Role::Viewer, &scope)[0];
        assert_eq!(pods["resourceNames"], json!(["etl-0"]));
        let project = Scope {
            workspace: None,
            prefix: "berth-p".into(),
        };
        assert!(
            rules(Role::Viewer, &project)[0]
                .get("resourceNames")
                .is_none()
        );
        assert_eq!(
            verbs_on(&rules(Role::Viewer, &project), "pods"),
            ["get", "list", "watch"]
        );
    }
}
