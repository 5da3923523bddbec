//! Name patterns of `userDefinedVars` and `byEnvironment` rules and of image guardrails:
//! a wildcard (`DEV_ENV_*`, `?` for one character, every other character literal) or,
//! prefixed with `re:`, a regular expression matched against the whole name.
//!
//! Mage Pro calls them "wildcard/regex" patterns. A pattern that looks like a regular
//! expression but lacks `re:` would, read as a wildcard, silently match nothing, so it is
//! refused with the spelling that works: a wildcard may only hold `*`, `?` and characters
//! that can occur in what it matches, and a variable-name wildcard may not hold `.*`
//! (variable names practically never have a dot; `PROD_.*` means a regex).

use regex::Regex;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// What a pattern is matched against, which decides the characters a wildcard may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    /// Environment variable names, as Kubernetes accepts them: letters, digits, `_`, `-`
    /// and `.`.
    VariableName,
    /// Container image references: letters, digits and `._-/:@`.
    Image,
}

impl Subject {
    fn allows(self, c: char) -> bool {
        c.is_ascii_alphanumeric()
            || match self {
                Subject::VariableName => "_-.".contains(c),
                Subject::Image => "_-./:@".contains(c),
            }
    }

    fn what(self) -> &'static str {
        match self {
            Subject::VariableName => "variable names",
            Subject::Image => "image references",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    regex: Regex,
}

type Cache = Mutex<HashMap<(Subject, String), Result<Pattern, String>>>;

/// Patterns already compiled, by subject and source. A repository has a handful of distinct
/// patterns but applies them once per workspace (and per policy): compiling each only once
/// keeps a render of 1,000 workspaces from spending most of its time in the regex compiler.
fn compiled() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Characters that mean something in a regular expression and never occur in a variable
/// name or an image reference.
const REGEX_ONLY: &str = "^$()[]{}+|\\";

impl Pattern {
    pub fn parse(source: &str, subject: Subject) -> Result<Pattern, String> {
        let key = (subject, source.to_string());
        if let Some(known) = compiled().lock().ok().and_then(|c| c.get(&key).cloned()) {
            return known;
        }
        let parsed = Pattern::compile(source, subject);
        if let Ok(mut cache) = compiled().lock() {
            cache.insert(key, parsed.clone());
        }
        parsed
    }

    fn compile(source: &str, subject: Subject) -> Result<Pattern, String> {
        let regex = match source.strip_prefix("re:") {
            // A regex must match the whole name, anchored or not.
            Some(re) => Regex::new(&format!("^(?:{re})$")).map_err(|e| {
                // regex explains over several lines; its last line says what is wrong.
                let text = e.to_string();
                let last = text.lines().last().unwrap_or_default().trim();
                last.trim_start_matches("error: ").to_string()
            })?,
            None => {
                wildcard_problem(source, subject).map_or(Ok(()), Err)?;
                let mut re = String::from("^");
                for c in source.chars() {
                    match c {
                        '*' => re.push_str(".*"),
                        '?' => re.push('.'),
                        c => re.push_str(&regex::escape(&c.to_string())),
                    }
                }
                re.push('$');
                Regex::new(&re).map_err(|e| e.to_string())?
            }
        };
        Ok(Pattern {
            source: source.to_string(),
            regex,
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches exactly one name, itself (a plain name).
    pub fn is_literal(&self) -> bool {
        !self.source.starts_with("re:") && !self.source.contains(['*', '?'])
    }
}

/// Why a wildcard (a pattern without `re:`) would match nothing it is meant to, if so.
fn wildcard_problem(source: &str, subject: Subject) -> Option<String> {
    if source.is_empty() {
        return Some("empty pattern".into());
    }
    let regex_like = source.contains(|c| REGEX_ONLY.contains(c))
        || (subject == Subject::VariableName && source.contains(".*"));
    if regex_like {
        return Some(format!(
            "reads as a regular expression, but without `re:` it is a wildcard that matches no {}: write `re:{source}`{}",
            subject.what(),
            match subject {
                Subject::VariableName if !source.contains(|c| REGEX_ONLY.contains(c)) =>
                    format!(" (or the wildcard `{}`)", source.replace(".*", "*")),
                _ => String::new(),
            }
        ));
    }
    let odd: String = source
        .chars()
        .filter(|&c| c != '*' && c != '?' && !subject.allows(c))
        .collect();
    if let Some(c) = odd.chars().next() {
        let hint = if c == ',' && subject == Subject::VariableName {
            "; list one name or pattern per item"
        } else {
            ""
        };
        return Some(format!(
            "matches nothing: {} never contain `{c}`{hint}",
            subject.what()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const V: Subject = Subject::VariableName;

    #[test]
    fn wildcards_and_regexes() {
        let p = Pattern::parse("DEV_ENV_*", V).unwrap();
        assert!(p.matches("DEV_ENV_BUCKET"));
        assert!(p.matches("DEV_ENV_"));
        assert!(!p.matches("XDEV_ENV_A"));
        assert!(!p.matches("PROD_ENV_A"));
        let q = Pattern::parse("A?C", V).unwrap();
        assert!(q.matches("ABC") && !q.matches("ABBC"));
        let r = Pattern::parse("re:PROD_.*", V).unwrap();
        assert!(r.matches("PROD_DB") && !r.matches("X_PROD_DB"));
        let anchored = Pattern::parse("re:^PROD_(DB|CACHE)$", V).unwrap();
        assert!(anchored.matches("PROD_DB") && !anchored.matches("PROD_QUEUE"));
        assert!(Pattern::parse("re:(", V).is_err());
        assert!(Pattern::parse("", V).is_err());
    }

    /// Seed 000: "{pattern}: wildcard/regex pattern for matching variables." A regex
    /// written without berth's `re:` prefix is refused with the spelling that works, never
    /// read as a wildcard that silently matches nothing.
    #[test]
    fn regex_looking_wildcards_are_refused_with_a_fix() {
        let why = Pattern::parse("^PROD_.*$", V).unwrap_err();
        assert!(why.contains("write `re:^PROD_.*$`"), "{why}");
        let why = Pattern::parse("PROD_.*", V).unwrap_err();
        assert!(
            why.contains("`re:PROD_.*`") && why.contains("`PROD_*`"),
            "{why}"
        );
        let why = Pattern::parse("PROD_(DB|CACHE)", V).unwrap_err();
        assert!(why.contains("re:PROD_(DB|CACHE)"), "{why}");
        let why = Pattern::parse("A,B", V).unwrap_err();
        assert!(
            why.contains("never contain `,`") && why.contains("one name"),
            "{why}"
        );
        // Image wildcards keep `.*` (a version wildcard) and their own characters.
        let image = Pattern::parse("mageai/mageai:0.9.*", Subject::Image).unwrap();
        assert!(image.matches("mageai/mageai:0.9.76"));
        assert!(Pattern::parse("registry.example.com/team/*@sha256:*", Subject::Image).is_ok());
        assert!(Pattern::parse("^mageai/.*$", Subject::Image).is_err());
        // The same text is fine with `re:`.
        assert!(
            Pattern::parse("re:^PROD_.*$", V)
                .unwrap()
                .matches("PROD_DB")
        );
    }

    proptest! {
        /// A wildcard never treats a character a name may hold as special (`.` included).
        #[test]
        fn literal_patterns_match_only_themselves(name in "[A-Z_.-]{1,12}", other in "[A-Z_.-]{1,12}") {
            let p = Pattern::parse(&name, V).unwrap();
            prop_assert!(p.matches(&name));
            prop_assert_eq!(p.matches(&other), name == other);
        }

        /// A pattern is either refused or can match something of its subject: no pattern
        /// passes validation only to match nothing for a reason of spelling.
        #[test]
        fn accepted_wildcards_match_a_name(source in "[A-Z_.*?^$()+|,]{1,10}") {
            if let Ok(p) = Pattern::parse(&source, V) {
                let example: String = source.chars().map(|c| match c { '*' => 'X', '?' => 'Y', c => c }).collect();
                prop_assert!(p.matches(&example), "{source} does not match {example}");
            }
        }

        #[test]
        fn prefix_wildcard_is_starts_with(prefix in "[A-Z_]{1,8}", name in "[A-Z_]{0,12}") {
            let p = Pattern::parse(&format!("{prefix}*"), V).unwrap();
            prop_assert_eq!(p.matches(&name), name.starts_with(&prefix));
        }
    }
}
