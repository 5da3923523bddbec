use super::*;
use crate::model::{Inheritance, InheritanceMode, ProjectSpec, WorkspaceSpec};
use proptest::prelude::*;

fn lit(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        secret_ref: None,
    }
}

fn secret(name: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        secret_ref: Some(SecretKeyRef {
            name: "creds".into(),
            key: name.to_lowercase(),
        }),
    }
}

fn project(env: Vec<EnvVar>, inheritance: Inheritance) -> ProjectSpec {
    serde_json::from_value::<ProjectSpec>(serde_json::json!({"namespace": "ns"}))
        .map(|mut p| {
            p.env = env;
            p.inheritance = inheritance;
            p
        })
        .unwrap()
}

fn workspace(environment: Option<&str>, env: Vec<EnvVar>) -> WorkspaceSpec {
    let mut w: WorkspaceSpec = serde_json::from_value(serde_json::json!({"project": "p"})).unwrap();
    w.environment = environment.map(str::to_string);
    w.env = env;
    w
}

fn names(env: &[Shared<EffectiveVar>]) -> Vec<&str> {
    env.iter().map(|v| v.name.as_str()).collect()
}

fn get<'a>(env: &'a [Shared<EffectiveVar>], name: &str) -> Option<&'a EffectiveVar> {
    env.iter().find(|v| v.name == name).map(|v| &**v)
}

#[test]
fn managed_without_user_defined_vars_inherits_everything() {
    let p = project(
        vec![lit("A", "1"), lit("DEV_ENV_X", "2")],
        Inheritance::default(),
    );
    let env = effective_env(&p, &workspace(Some("prod"), vec![]), "/code");
    assert_eq!(
        names(&env),
        ["A", "DEV_ENV_X", "ENV", "KUBE_NAMESPACE", "USER_CODE_PATH"]
    );
    assert_eq!(get(&env, "A").unwrap().source, Source::Project);
}

#[test]
fn user_defined_vars_restrict_inheritance() {
    let inheritance = Inheritance {
        user_defined_vars: Some(vec!["A".into()]),
        ..Default::default()
    };
    let p = project(vec![lit("A", "1"), lit("B", "2")], inheritance);
    let env = effective_env(&p, &workspace(None, vec![]), "/code");
    assert_eq!(names(&env), ["A", "KUBE_NAMESPACE", "USER_CODE_PATH"]);
    assert_eq!(
        get(&env, "A").unwrap().source,
        Source::UserDefinedVars { pattern: None }
    );
}

#[test]
fn self_hosted_inherits_only_listed_and_environment_matches() {
    let inheritance = Inheritance {
        mode: InheritanceMode::SelfHosted,
        user_defined_vars: Some(vec!["A".into()]),
        by_environment: [
            ("dev".to_string(), vec!["DEV_ENV_*".to_string()]),
            ("prod".to_string(), vec!["re:^PROD_.*$".to_string()]),
        ]
        .into(),
    };
    let p = project(
        vec![
            lit("A", "1"),
            lit("B", "2"),
            lit("DEV_ENV_X", "3"),
            lit("PROD_Y", "4"),
        ],
        inheritance,
    );
    let dev = effective_env(&p, &workspace(Some("dev"), vec![]), "/c");
    assert_eq!(
        names(&dev),
        ["A", "DEV_ENV_X", "ENV", "KUBE_NAMESPACE", "USER_CODE_PATH"]
    );
    assert_eq!(
        get(&dev, "DEV_ENV_X").unwrap().source,
        Source::EnvironmentRule {
            environment: "dev".into(),
            pattern: "DEV_ENV_*".into()
        }
    );
    let prod = effective_env(&p, &workspace(Some("prod"), vec![]), "/c");
    assert_eq!(
        names(&prod),
        ["A", "ENV", "KUBE_NAMESPACE", "PROD_Y", "USER_CODE_PATH"]
    );
    let none = effective_env(&p, &workspace(None, vec![]), "/c");
    assert_eq!(names(&none), ["A", "KUBE_NAMESPACE", "USER_CODE_PATH"]);
}

#[test]
fn workspace_values_win_over_inherited() {
    let p = project(vec![lit("A", "project")], Inheritance::default());
    let env = effective_env(&p, &workspace(None, vec![lit("A", "mine")]), "/c");
    let a = get(&env, "A").unwrap();
    assert_eq!(a.value, VarValue::Literal("mine".into()));
    assert_eq!(a.source, Source::Workspace);
}

#[test]
fn secrets_cross_only_when_shared() {
    let mut p = project(vec![secret("TOKEN"), lit("A", "1")], Inheritance::default());
    let env = effective_env(&p, &workspace(None, vec![]), "/c");
    assert_eq!(names(&env), ["A", "KUBE_NAMESPACE", "USER_CODE_PATH"]);
    p.share_secrets_across_workspaces = true;
    let env = effective_env(&p, &workspace(None, vec![]), "/c");
    assert_eq!(
        names(&env),
        [
            "A",
            "KUBE_NAMESPACE",
            "SHARE_SECRETS_ACROSS_WORKSPACES",
            "TOKEN",
            "USER_CODE_PATH"
        ]
    );
    assert!(matches!(
        get(&env, "TOKEN").unwrap().value,
        VarValue::Secret(_)
    ));
}

#[test]
fn hash_ignores_provenance_but_not_values() {
    let var = |value: &str, source: Source| {
        vec![Shared::from(EffectiveVar {
            name: "A".into(),
            value: VarValue::Literal(value.into()),
            source,
        })]
    };
    let a = var("1", Source::Project);
    let none = BTreeMap::new();
    let moved = var("1", Source::UserDefinedVars { pattern: None });
    assert_eq!(env_hash(&a, &none), env_hash(&moved, &none));
    let changed = var("2", Source::UserDefinedVars { pattern: None });
    assert_ne!(env_hash(&a, &none), env_hash(&changed, &none));
}

#[test]
fn hash_follows_secret_data_version() {
    let p = {
        let mut p = project(vec![secret("TOKEN")], Inheritance::default());
        p.share_secrets_across_workspaces = true;
        p
    };
    let env = effective_env(&p, &workspace(None, vec![]), "/c");
    let v1 = BTreeMap::from([("creds".to_string(), "1".to_string())]);
    let v2 = BTreeMap::from([("creds".to_string(), "2".to_string())]);
    assert_ne!(env_hash(&env, &v1), env_hash(&env, &v2));
}

fn var_name() -> impl Strategy<Value = String> {
    prop_oneof!["[A-C]_[A-Z]{1,3}", "DEV_ENV_[A-Z]{1,3}", "PROD_[A-Z]{1,3}"]
}

proptest! {
    /// Every inherited variable exists in the project with the same value, is allowed by the
    /// rules, and USER_DEFINED_VARS never widens what managed mode would inherit.
    #[test]
    fn inheritance_is_sound(
        project_vars in proptest::collection::btree_map(var_name(), "[a-z0-9]{0,4}", 0..12),
        listed in proptest::collection::vec(var_name(), 0..4),
        self_hosted in any::<bool>(),
        environment in prop_oneof![Just(None), Just(Some("dev")), Just(Some("prod"))],
    ) {
        let env: Vec<EnvVar> = project_vars.iter().map(|(k, v)| lit(k, v)).collect();
        let inheritance = Inheritance {
            mode: if self_hosted { InheritanceMode::SelfHosted } else { InheritanceMode::Managed },
            user_defined_vars: if self_hosted || !listed.is_empty() { Some(listed.clone()) } else { None },
            by_environment: [("dev".to_string(), vec!["DEV_ENV_*".to_string()])].into(),
        };
        let p = project(env, inheritance);
        let w = workspace(environment, vec![]);
        let effective = effective_env(&p, &w, "/c");
        for var in effective.iter().filter(|v| v.source.is_inherited()) {
            prop_assert_eq!(&var.value, &VarValue::Literal(project_vars[&var.name].clone()));
            let allowed = listed.contains(&var.name)
                || (environment == Some("dev") && var.name.starts_with("DEV_ENV_"))
                || (!self_hosted && listed.is_empty());
            prop_assert!(allowed, "{} should not be inherited", var.name);
        }
        // Names are unique and sorted.
        let mut sorted = names(&effective);
        sorted.dedup();
        prop_assert_eq!(sorted, names(&effective));
        prop_assert!(get(&effective, "USER_CODE_PATH").is_some());
    }

    /// A workspace's own variables over what it inherits, as one map written in that order
    /// would hold them: each name once, sorted, the workspace's last value of a name winning
    /// and every other inherited variable kept as it is (shared, not copied).
    #[test]
    fn own_variables_go_over_the_inherited_ones(
        project_vars in proptest::collection::btree_map(var_name(), "[a-z0-9]{0,4}", 0..10),
        own in proptest::collection::vec((var_name(), "[a-z0-9]{0,4}"), 0..8),
        environment in prop_oneof![Just(None), Just(Some("dev"))],
    ) {
        let env: Vec<EnvVar> = project_vars.iter().map(|(k, v)| lit(k, v)).collect();
        let p = project(env, Inheritance::default());
        let w = workspace(environment, own.iter().map(|(k, v)| lit(k, v)).collect());
        let inherited = inherited_env(&p, w.environment.as_ref(), "/c");
        let merged = with_own_env(&inherited, &w);
        let mut model: BTreeMap<&str, (&str, bool)> = BTreeMap::new();
        for var in &inherited {
            let VarValue::Literal(value) = &var.value else { unreachable!("literals only") };
            model.insert(&var.name, (value, false));
        }
        for (name, value) in &own {
            model.insert(name, (value, true));
        }
        let got: Vec<(&str, (&str, bool))> = merged
            .iter()
            .map(|v| match &v.value {
                VarValue::Literal(value) => (v.name.as_str(), (value.as_str(), v.source == Source::Workspace)),
                VarValue::Secret(_) => (v.name.as_str(), ("", false)),
            })
            .collect();
        prop_assert_eq!(got, model.into_iter().collect::<Vec<_>>());
        for var in merged.iter().filter(|v| v.source != Source::Workspace) {
            prop_assert!(inherited.iter().any(|i| std::sync::Arc::ptr_eq(&i.0, &var.0)));
        }
        prop_assert_eq!(&effective_env(&p, &w, "/c"), &merged);
    }
}
