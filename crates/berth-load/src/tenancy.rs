//! Where projects may go: the cluster administrators' tenancy rule, decided outside the
//! repository. A repository names the namespaces berth writes to (each Project's
//! `namespace`, each ZenML workload manager's runner `namespace`); the rule says which of
//! them berth may manage, and refuses each other one at its line, naming the rule.
//!
//! The rule is a list of namespace patterns — names or globs (`analytics`, `team-*`; `*`
//! stands for any run of characters, `?` for one) — read from the ConfigMap
//! [`CONFIG_MAP`] in berth's own namespace (the same ConfigMap parameterises the admission
//! policy `berth-tenancy` in deploy/, so the API server enforces the very same list), or,
//! for offline plans in CI, from a file holding that ConfigMap or from patterns given on
//! the command line.
//!
//! Whatever the rule says, three kinds of namespace are never a project's:
//! `kube-*` (Kubernetes' own), `default`, and berth's own namespace (where its
//! ServiceAccount, token and ApplySet parent live). Without a rule, only those are refused
//! ([`Tenancy::unrestricted`]).

use crate::load::yaml::{self, Pos};
use crate::load::{Diagnostic, Repository};
use serde_json::Value;

/// The ConfigMap, in berth's namespace, that holds the rule.
pub const CONFIG_MAP: &str = "berth-tenancy";
/// Its key listing the allowed namespace patterns, separated by commas or new lines.
pub const ALLOWED_KEY: &str = "allowedNamespaces";
/// Its key that lets berth take over a Namespace that exists without berth's label
/// (`"true"`); read by the admission policy only.
pub const ADOPT_KEY: &str = "adoptExistingNamespaces";

/// A tenancy rule: which namespaces berth may manage for projects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenancy {
    berth_namespace: String,
    /// The allowed patterns; `None` when no rule was given.
    allowed: Option<Vec<String>>,
    /// Where the rule came from, as diagnostics name it.
    source: String,
}

impl Default for Tenancy {
    /// No rule, berth in `berth-system` (`--applyset-namespace`'s default).
    fn default() -> Self {
        Tenancy::unrestricted("berth-system", "no tenancy rule given")
    }
}

impl Tenancy {
    /// No rule: every namespace but the always-refused ones (`kube-*`, `default`,
    /// `berth_namespace`). `why` says why there is no rule, for messages.
    pub fn unrestricted(berth_namespace: &str, why: &str) -> Tenancy {
        Tenancy {
            berth_namespace: berth_namespace.to_string(),
            allowed: None,
            source: why.to_string(),
        }
    }

    /// A rule of `patterns` (each a name or a glob), read from `source`.
    pub fn new(
        berth_namespace: &str,
        patterns: impl IntoIterator<Item = String>,
        source: &str,
    ) -> Result<Tenancy, String> {
        let allowed: Vec<String> = patterns.into_iter().collect();
        for pattern in &allowed {
            check_pattern(pattern).map_err(|why| format!("{source}: {why}"))?;
        }
        Ok(Tenancy {
            berth_namespace: berth_namespace.to_string(),
            allowed: Some(allowed),
            source: source.to_string(),
        })
    }

    /// The rule a ConfigMap states (`data.allowedNamespaces`; none allows nothing), berth
    /// being in the ConfigMap's namespace. `source` names it in messages.
    pub fn from_config_map(config_map: &Value, source: &str) -> Result<Tenancy, String> {
        let namespace = config_map
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|ns| !ns.is_empty())
            .ok_or_else(|| {
                format!(
                    "{source}: the ConfigMap has no metadata.namespace (berth's namespace, \
                     where the rule lives)"
                )
            })?;
        let list = match config_map.pointer(&format!("/data/{ALLOWED_KEY}")) {
            None | Some(Value::Null) => "",
            Some(Value::String(text)) => text.as_str(),
            Some(_) => return Err(format!("{source}: data.{ALLOWED_KEY} must be a string")),
        };
        Tenancy::new(namespace, split_list(list), source)
    }

    /// The rule of the ConfigMap [`CONFIG_MAP`] in a YAML file (which may hold other
    /// documents, as deploy/'s files do). `path` names the file in messages.
    pub fn from_file(text: &str, path: &str) -> Result<Tenancy, String> {
        let docs = yaml::parse(text).map_err(|e| {
            format!(
                "{path}:{}:{}: invalid YAML: {}",
                e.pos.line, e.pos.column, e.message
            )
        })?;
        let found = docs.iter().find(|doc| {
            doc.value.get("kind").and_then(Value::as_str) == Some("ConfigMap")
                && doc.value.pointer("/metadata/name").and_then(Value::as_str) == Some(CONFIG_MAP)
        });
        let Some(doc) = found else {
            return Err(format!(
                "{path}: no ConfigMap named {CONFIG_MAP} in it (the tenancy rule, as in \
                 deploy/15-tenancy.yaml)"
            ));
        };
        Tenancy::from_config_map(&doc.value, &format!("--tenancy {path}"))
    }

    /// berth's own namespace, which no project may use.
    pub fn berth_namespace(&self) -> &str {
        &self.berth_namespace
    }

    /// The allowed patterns, or `None` without a rule.
    pub fn allowed(&self) -> Option<&[String]> {
        self.allowed.as_deref()
    }

    /// The rule in words: where it comes from and what it allows.
    pub fn describe(&self) -> String {
        let always = format!(
            "kube-*, default and {} are never allowed",
            self.berth_namespace
        );
        match &self.allowed {
            None => format!(
                "{}; without one, every namespace is allowed but kube-*, default and {}",
                self.source, self.berth_namespace
            ),
            Some(list) if list.is_empty() => {
                format!(
                    "{}: {ALLOWED_KEY} is empty, so no namespace is allowed",
                    self.source
                )
            }
            Some(list) => format!(
                "{}: {ALLOWED_KEY} `{}`; {always}",
                self.source,
                list.join(", ")
            ),
        }
    }

    /// Why berth may not manage `namespace` for a project, or `None` when it may.
    pub fn refusal(&self, namespace: &str) -> Option<String> {
        if namespace.starts_with("kube-") {
            return Some(format!(
                "`{namespace}` is one of Kubernetes' own namespaces (kube-*), which no rule can allow"
            ));
        }
        if namespace == "default" {
            return Some(
                "`default` is Kubernetes' default namespace, which no rule can allow".to_string(),
            );
        }
        if namespace == self.berth_namespace {
            return Some(format!(
                "`{namespace}` is berth's own namespace (its ServiceAccount, token and ApplySet \
                 live there), which no rule can allow"
            ));
        }
        match &self.allowed {
            Some(list) if !list.iter().any(|p| glob_matches(p, namespace)) => Some(format!(
                "`{namespace}` matches none of the allowed namespaces ({})",
                self.source
            )),
            _ => None,
        }
    }

    /// An error at the `namespace` field of every Project and workload manager outside
    /// the rule.
    pub fn check(&self, repo: &Repository) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for p in &repo.projects {
            let spec = &p.doc.spec;
            let mut fields = vec![("/spec/namespace", spec.namespace.as_str())];
            if let Some(wm) = &spec.workload_manager {
                fields.push(("/spec/workloadManager/namespace", wm.namespace.as_str()));
            }
            for (pointer, namespace) in fields {
                // A namespace that is not a name at all has its own error.
                if crate::load::check_dns_label(namespace).is_err() {
                    continue;
                }
                if let Some(why) = self.refusal(namespace) {
                    out.push(self.diagnostic(&p.file, p.pos(pointer), pointer, &why));
                }
            }
        }
        out
    }

    fn diagnostic(&self, file: &str, pos: Pos, pointer: &str, why: &str) -> Diagnostic {
        Diagnostic::error(
            file,
            pos,
            pointer,
            format!("namespace not allowed by the tenancy rule: {why}"),
        )
        .with_help(format!(
            "the cluster's administrators decide where projects may go ({})",
            self.describe()
        ))
    }
}

/// The patterns of a list: separated by commas or new lines, blanks ignored.
pub fn split_list(text: &str) -> Vec<String> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// A namespace pattern: lower-case letters, digits, `-` and the wildcards `*` and `?`, at
/// most 63 characters. The admission policy reads the same patterns (and ignores any
/// other, so it allows nothing berth would refuse here).
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() || pattern.len() > 63 {
        return Err(format!(
            "`{pattern}` is not a namespace pattern: 1 to 63 characters"
        ));
    }
    if let Some(c) = pattern
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "-*?".contains(*c)))
    {
        return Err(format!(
            "`{pattern}` is not a namespace pattern: `{c}` is neither a lower-case letter, a \
             digit, `-`, nor a wildcard (`*` any characters, `?` one)"
        ));
    }
    Ok(())
}

/// Whether `name` matches the glob `pattern` whole: `*` any run of characters (none
/// included), `?` exactly one, every other character itself.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut i, mut j) = (0, 0);
    // The last `*` seen, and where in `name` its match ends for now.
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && (p[i] == b'?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((at, end)) = star {
            // Let the last `*` take one more character.
            i = at + 1;
            j = end + 1;
            star = Some((at, end + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{SourceFile, load};
    use proptest::prelude::*;
    use serde_json::json;

    fn rule(patterns: &[&str]) -> Tenancy {
        Tenancy::new(
            "berth-system",
            patterns.iter().map(|p| p.to_string()),
            "ConfigMap berth-system/berth-tenancy",
        )
        .expect("a valid rule")
    }

    #[test]
    fn globs() {
        assert!(glob_matches("team-*", "team-a"));
        assert!(glob_matches("team-*", "team-"));
        assert!(!glob_matches("team-*", "team"));
        assert!(!glob_matches("team-*", "xteam-a"));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("a?c", "abc"));
        assert!(!glob_matches("a?c", "ac"));
        assert!(glob_matches("*-dev-*", "x-dev-y"));
        assert!(glob_matches("*-dev", "a-dev-dev"));
        assert!(!glob_matches("*-dev", "a-dev-x"));
        assert!(glob_matches("analytics", "analytics"));
        assert!(!glob_matches("analytics", "analytics2"));
    }

    /// The glob matcher agrees with the regular expression the admission policy builds
    /// from the same pattern (`*` → `[a-z0-9-]*`, `?` → `[a-z0-9-]`, anchored): berth
    /// refuses at validate exactly what the API server would refuse.
    #[test]
    fn globs_agree_with_the_admission_policys_regex() {
        proptest!(ProptestConfig::with_cases(2000), |(pattern in "[ab*?-]{1,6}", name in "[ab-]{1,8}")| {
            let regex = format!("^{}$", pattern.replace('*', "[a-z0-9-]*").replace('?', "[a-z0-9-]"));
            let expected = regex::Regex::new(&regex).expect("a regex").is_match(&name);
            prop_assert_eq!(glob_matches(&pattern, &name), expected, "{} vs {}", pattern, name);
        });
    }

    #[test]
    fn some_namespaces_are_never_allowed() {
        for tenancy in [rule(&["*"]), Tenancy::default()] {
            for ns in [
                "kube-system",
                "kube-public",
                "kube-node-lease",
                "default",
                "berth-system",
            ] {
                assert!(tenancy.refusal(ns).is_some(), "{ns}");
            }
            assert_eq!(tenancy.refusal("analytics"), None);
            // Only the prefix `kube-` is Kubernetes'.
            assert_eq!(tenancy.refusal("kubeflow"), None);
        }
        let other = Tenancy::unrestricted("platform-berth", "no rule");
        assert!(other.refusal("platform-berth").is_some());
        assert_eq!(other.refusal("berth-system"), None);
    }

    #[test]
    fn a_rule_allows_only_its_patterns() {
        let tenancy = rule(&["analytics", "team-*"]);
        assert_eq!(tenancy.refusal("analytics"), None);
        assert_eq!(tenancy.refusal("team-ml"), None);
        let why = tenancy.refusal("ml-platform").expect("refused");
        assert!(
            why.contains("ConfigMap berth-system/berth-tenancy"),
            "{why}"
        );
        let none = rule(&[]);
        assert!(none.refusal("analytics").is_some());
        assert!(none.describe().contains("no namespace is allowed"));
    }

    #[test]
    fn invalid_patterns_are_refused() {
        for bad in ["Team-*", "a.b", "re:^a$", "a b", &"a".repeat(64)] {
            let err = Tenancy::new("berth-system", [bad.to_string()], "--allow-namespace")
                .expect_err(bad);
            assert!(err.starts_with("--allow-namespace: "), "{err}");
        }
    }

    #[test]
    fn lists_split_on_commas_and_lines() {
        assert_eq!(
            split_list(" analytics, team-*\n\nml-*,\n"),
            ["analytics", "team-*", "ml-*"]
        );
        assert!(split_list(" , \n").is_empty());
    }

    #[test]
    fn read_from_a_config_map_in_a_file() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: berth-tenancy\n  namespace: platform\ndata:\n  allowedNamespaces: |\n    analytics\n    team-*\n";
        let tenancy = Tenancy::from_file(text, "deploy/t.yaml").expect("a rule");
        assert_eq!(tenancy.berth_namespace(), "platform");
        assert_eq!(
            tenancy.allowed(),
            Some(&["analytics".to_string(), "team-*".to_string()][..])
        );
        assert!(tenancy.describe().starts_with("--tenancy deploy/t.yaml"));
        let missing = Tenancy::from_file("kind: ConfigMap\nmetadata: {name: other}\n", "f.yaml");
        assert!(
            missing
                .expect_err("no rule")
                .contains("no ConfigMap named berth-tenancy")
        );
        let bad = Tenancy::from_file("a: [", "f.yaml").expect_err("invalid");
        assert!(bad.starts_with("f.yaml:"), "{bad}");
        let no_ns = Tenancy::from_config_map(&json!({"metadata": {"name": "berth-tenancy"}}), "x")
            .expect_err("no namespace");
        assert!(no_ns.contains("metadata.namespace"), "{no_ns}");
        let no_data = Tenancy::from_config_map(
            &json!({"metadata": {"name": "berth-tenancy", "namespace": "b"}}),
            "x",
        )
        .expect("a rule");
        assert_eq!(no_data.allowed(), Some(&[][..]));
    }

    fn project(namespace: &str, runners: Option<&str>) -> String {
        let mut text = format!(
            "apiVersion: berth/v1alpha1\nkind: Project\nmetadata: {{name: p}}\nspec:\n  image: i\n  namespace: {namespace}\n"
        );
        if let Some(runners) = runners {
            text.push_str(&format!(
                "  workloadManager:\n    namespace: {runners}\n    serviceAccount: s\n    runnerImage: z\n"
            ));
        }
        text
    }

    fn errors(tenancy: &Tenancy, text: String) -> Vec<String> {
        let loaded = load(vec![SourceFile::new("p.yaml", text)]);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        tenancy
            .check(&loaded.repo)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn refusals_are_at_the_namespace_lines_and_name_the_rule() {
        let tenancy = rule(&["team-*"]);
        let found = errors(&tenancy, project("kube-system", Some("runners")));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with(
                "p.yaml:6:14: error: spec.namespace: namespace not allowed by the tenancy rule: `kube-system` is one of Kubernetes' own namespaces"
            ),
            "{found:?}"
        );
        assert!(
            found[1].starts_with(
                "p.yaml:8:16: error: spec.workloadManager.namespace: namespace not allowed by the tenancy rule: `runners` matches none of the allowed namespaces (ConfigMap berth-system/berth-tenancy)"
            ),
            "{found:?}"
        );
        assert!(
            found[1].contains(
                "allowedNamespaces `team-*`; kube-*, default and berth-system are never allowed"
            ),
            "{found:?}"
        );
        assert!(errors(&tenancy, project("team-a", Some("team-a-runners"))).is_empty());
        // Without a rule, only the always-refused namespaces are refused.
        let none = Tenancy::default();
        assert!(errors(&none, project("anything", Some("runners"))).is_empty());
        let found = errors(&none, project("berth-system", Some("default")));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("berth's own namespace"), "{found:?}");
        assert!(
            found[1].contains("`default` is Kubernetes' default namespace"),
            "{found:?}"
        );
    }

    proptest! {
        /// Whatever the rule allows, the always-refused namespaces stay refused, and a
        /// namespace a pattern names literally is allowed.
        #[test]
        fn no_rule_allows_the_reserved_namespaces(
            patterns in proptest::collection::vec("[a-z*?-]{1,10}", 0..5),
            suffix in "[a-z0-9-]{0,10}",
        ) {
            let tenancy = Tenancy::new("berth-system", patterns.clone(), "r").expect("valid");
            for ns in [format!("kube-{suffix}"), "default".into(), "berth-system".into()] {
                prop_assert!(tenancy.refusal(&ns).is_some(), "{} allowed by {:?}", ns, patterns);
            }
            for literal in patterns.iter().filter(|p| !p.contains(['*', '?'])) {
                let reserved = literal.starts_with("kube-") || literal == "default" || literal == "berth-system";
                prop_assert_eq!(tenancy.refusal(literal).is_none(), !reserved);
            }
        }
    }
}
