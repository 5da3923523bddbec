//! Environment inheritance, after Mage Pro's rules:
//! - `managed` without USER_DEFINED_VARS: every project variable is inherited;
//! - with USER_DEFINED_VARS (always, for `self-hosted`): only the variables it names or
//!   matches (its entries are names or patterns, like the seed's `DEV_ENV_*`), plus those
//!   matching the `byEnvironment` patterns of the workspace's ENV;
//! - secret-backed variables cross into workspaces only with SHARE_SECRETS_ACROSS_WORKSPACES
//!   (the field, or the project variable set to `1`);
//! - the project variables that are settings (USER_CODE_PATH,
//!   SHARE_SECRETS_ACROSS_WORKSPACES) are read as settings, not inherited as variables;
//! - berth's built-ins (ENV, USER_CODE_PATH, SHARE_SECRETS_ACROSS_WORKSPACES) come next;
//! - the workspace's own variables win over everything inherited.

use super::pattern::{Pattern, Subject};
use crate::model::{
    EnvVar, InheritanceMode, ProjectSpec, SHARE_SECRETS_VAR, SecretKeyRef, Shared,
    USER_CODE_PATH_VAR, WorkspaceSpec,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

/// Where an effective variable came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Source {
    /// Inherited because the project shares all variables (managed, no USER_DEFINED_VARS).
    Project,
    /// Inherited because USER_DEFINED_VARS names it (`pattern`: or matches it).
    UserDefinedVars {
        #[serde(skip_serializing_if = "Option::is_none")]
        pattern: Option<String>,
    },
    /// Inherited through a `byEnvironment` rule.
    EnvironmentRule {
        environment: String,
        pattern: String,
    },
    /// Set by berth from the workspace's fields.
    BuiltIn,
    /// Declared in the workspace's own `env`.
    Workspace,
}

impl Source {
    /// Whether the value comes from the project (what env-driven restarts are about).
    pub fn is_inherited(&self) -> bool {
        matches!(
            self,
            Source::Project | Source::UserDefinedVars { .. } | Source::EnvironmentRule { .. }
        )
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Project => write!(f, "project env"),
            Source::UserDefinedVars { pattern: None } => {
                write!(f, "project env via userDefinedVars")
            }
            Source::UserDefinedVars {
                pattern: Some(pattern),
            } => write!(f, "project env via userDefinedVars `{pattern}`"),
            Source::EnvironmentRule {
                environment,
                pattern,
            } => write!(f, "project env via byEnvironment.{environment} `{pattern}`"),
            Source::BuiltIn => write!(f, "built-in"),
            Source::Workspace => write!(f, "workspace env"),
        }
    }
}

/// A variable's value: literal, or a reference to a Secret key (never its content).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum VarValue {
    Literal(String),
    Secret(SecretKeyRef),
}

impl VarValue {
    fn from_env(var: &EnvVar) -> Option<VarValue> {
        match (&var.value, &var.secret_ref) {
            (Some(v), _) => Some(VarValue::Literal(v.clone())),
            (None, Some(s)) => Some(VarValue::Secret(s.clone())),
            (None, None) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EffectiveVar {
    pub name: String,
    pub value: VarValue,
    pub source: Source,
}

/// The effective environment of a workspace, sorted by name: [`inherited_env`] with the
/// workspace's own variables over it.
pub fn effective_env(
    project: &ProjectSpec,
    workspace: &WorkspaceSpec,
    user_code_path: &str,
) -> Vec<Shared<EffectiveVar>> {
    let environment = workspace.environment.as_ref();
    with_own_env(
        &inherited_env(project, environment, user_code_path),
        workspace,
    )
}

/// What a workspace of `project` in `environment` with that code path has before its own
/// variables: the project's variables it inherits and berth's built-ins, sorted by name.
/// It is the same for every such workspace, so resolve builds it once per group and the
/// workspaces share its variables (a copy each was 100 MB at 100,000 workspaces).
pub fn inherited_env(
    project: &ProjectSpec,
    environment: Option<&String>,
    user_code_path: &str,
) -> Vec<Shared<EffectiveVar>> {
    let inherited = Inherited::of(project, environment);
    let shares_secrets = project.shares_secrets();

    let mut env: BTreeMap<String, Shared<EffectiveVar>> = BTreeMap::new();
    let mut set = |name: &str, value: VarValue, source: Source| {
        let var = EffectiveVar {
            name: name.to_string(),
            value,
            source,
        };
        env.insert(var.name.clone(), var.into());
    };

    for var in &project.env {
        let Some(value) = VarValue::from_env(var) else {
            continue;
        };
        if is_project_setting(&var.name)
            || (matches!(value, VarValue::Secret(_)) && !shares_secrets)
        {
            continue;
        }
        let Some(source) = inherited.source_of(&var.name) else {
            continue;
        };
        set(&var.name, value, source);
    }

    if let Some(environment) = environment {
        set(
            "ENV",
            VarValue::Literal(environment.clone()),
            Source::BuiltIn,
        );
    }
    set(
        "USER_CODE_PATH",
        VarValue::Literal(user_code_path.to_string()),
        Source::BuiltIn,
    );
    // Mage's own workspace manager gives every workspace its namespace
    // (`workload_manager.py::__populate_env_vars`): Mage's executor creates its Jobs there
    // unless told otherwise, and reads the server pod from it.
    set(
        KUBE_NAMESPACE_VAR,
        VarValue::Literal(project.namespace.clone()),
        Source::BuiltIn,
    );
    if shares_secrets {
        set(
            "SHARE_SECRETS_ACROSS_WORKSPACES",
            VarValue::Literal("1".into()),
            Source::BuiltIn,
        );
    }
    env.into_values().collect()
}

/// `inherited` (sorted by name) with the workspace's own variables over it, sorted by name;
/// of a name the workspace sets twice, the last one.
pub fn with_own_env(
    inherited: &[Shared<EffectiveVar>],
    workspace: &WorkspaceSpec,
) -> Vec<Shared<EffectiveVar>> {
    let mut own: BTreeMap<&str, Shared<EffectiveVar>> = BTreeMap::new();
    for var in &workspace.env {
        if let Some(value) = VarValue::from_env(var) {
            let effective = EffectiveVar {
                name: var.name.clone(),
                value,
                source: Source::Workspace,
            };
            own.insert(&var.name, effective.into());
        }
    }
    let mut env = Vec::with_capacity(inherited.len() + own.len());
    let mut own = own.into_values().peekable();
    for var in inherited {
        while let Some(mine) = own.next_if(|mine| mine.name < var.name) {
            env.push(mine);
        }
        match own.next_if(|mine| mine.name == var.name) {
            Some(mine) => env.push(mine),
            None => env.push(var.clone()),
        }
    }
    env.extend(own);
    env
}

/// What a workspace inherits of its project's variables: all of them (managed, with no
/// USER_DEFINED_VARS), or those a USER_DEFINED_VARS pattern or its environment's rule names.
struct Inherited<'a> {
    inherit_all: bool,
    user_defined: Vec<Pattern>,
    rules: Vec<Pattern>,
    environment: Option<&'a String>,
}

impl<'a> Inherited<'a> {
    fn of(project: &ProjectSpec, environment: Option<&'a String>) -> Self {
        let inheritance = &project.inheritance;
        // Validation refused every pattern that does not parse.
        let parse = |p: &String| Pattern::parse(p, Subject::VariableName).ok();
        Inherited {
            inherit_all: inheritance.mode == InheritanceMode::Managed
                && inheritance.user_defined_vars.is_none(),
            user_defined: inheritance
                .user_defined_vars
                .iter()
                .flatten()
                .filter_map(parse)
                .collect(),
            rules: environment
                .and_then(|e| inheritance.by_environment.get(e))
                .into_iter()
                .flatten()
                .filter_map(parse)
                .collect(),
            environment,
        }
    }

    /// Why the workspace inherits the project's variable `name`, or None if it does not.
    fn source_of(&self, name: &str) -> Option<Source> {
        if self.inherit_all {
            return Some(Source::Project);
        }
        // A plain name says less than a pattern: prefer it when both match.
        let named = self
            .user_defined
            .iter()
            .filter(|p| p.matches(name))
            .min_by_key(|p| !p.is_literal());
        if let Some(pattern) = named {
            return Some(Source::UserDefinedVars {
                pattern: (!pattern.is_literal()).then(|| pattern.as_str().to_string()),
            });
        }
        let rule = self.rules.iter().find(|r| r.matches(name))?;
        Some(Source::EnvironmentRule {
            environment: self.environment.cloned().unwrap_or_default(),
            pattern: rule.as_str().to_string(),
        })
    }
}

/// Where Mage's executor creates Jobs and finds its own pod.
pub const KUBE_NAMESPACE_VAR: &str = "KUBE_NAMESPACE";

/// Project variables that Mage Pro reads as settings of the project (USER_CODE_PATH,
/// SHARE_SECRETS_ACROSS_WORKSPACES): berth reads them as such and sets the workspace's
/// own value as a built-in, instead of inheriting them as variables.
pub fn is_project_setting(name: &str) -> bool {
    name == USER_CODE_PATH_VAR || name == SHARE_SECRETS_VAR
}

/// Hash of an effective environment: names and values (for secrets, the reference and, when
/// known, the version of the Secret's data). Where a variable came from is left out, so
/// moving a variable between rules without changing its value restarts nothing.
pub fn env_hash(
    env: &[Shared<EffectiveVar>],
    secret_versions: &BTreeMap<String, String>,
) -> String {
    let mut hasher = Sha256::new();
    for var in env {
        hasher.update(var.name.as_bytes());
        match &var.value {
            VarValue::Literal(v) => {
                hasher.update(b"\0=\0");
                hasher.update(v.as_bytes());
            }
            VarValue::Secret(s) => {
                hasher.update(b"\0secret\0");
                hasher.update(s.name.as_bytes());
                hasher.update(b"\0");
                hasher.update(s.key.as_bytes());
                if let Some(version) = secret_versions.get(&s.name) {
                    hasher.update(b"\0");
                    hasher.update(version.as_bytes());
                }
            }
        }
        hasher.update(b"\n");
    }
    let digest = hasher.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
