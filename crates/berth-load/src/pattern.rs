//! Name patterns of `byEnvironment` rules and image guardrails: a wildcard (`DEV_ENV_*`,
//! `?` for one character) or, prefixed with `re:`, a regular expression.

use regex::Regex;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    regex: Regex,
}

/// Patterns already compiled, by source. A repository has a handful of distinct patterns but
/// applies them once per workspace (and per policy): compiling each only once keeps a
/// render of 1,000 workspaces from spending most of its time in the regex compiler.
fn compiled() -> &'static Mutex<HashMap<String, Result<Pattern, String>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Result<Pattern, String>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

impl Pattern {
    pub fn parse(source: &str) -> Result<Pattern, String> {
        if let Some(known) = compiled().lock().ok().and_then(|c| c.get(source).cloned()) {
            return known;
        }
        let parsed = Pattern::compile(source);
        if let Ok(mut cache) = compiled().lock() {
            cache.insert(source.to_string(), parsed.clone());
        }
        parsed
    }

    fn compile(source: &str) -> Result<Pattern, String> {
        let regex = match source.strip_prefix("re:") {
            // A regex must match the whole name, anchored or not.
            Some(re) => Regex::new(&format!("^(?:{re})$")).map_err(|e| {
                // regex explains over several lines; its last line says what is wrong.
                let text = e.to_string();
                let last = text.lines().last().unwrap_or_default().trim();
                last.trim_start_matches("error: ").to_string()
            })?,
            None => {
                if source.is_empty() {
                    return Err("empty pattern".into());
                }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wildcards_and_regexes() {
        let p = Pattern::parse("DEV_ENV_*").unwrap();
        assert!(p.matches("DEV_ENV_BUCKET"));
        assert!(p.matches("DEV_ENV_"));
        assert!(!p.matches("XDEV_ENV_A"));
        assert!(!p.matches("PROD_ENV_A"));
        let q = Pattern::parse("A?C").unwrap();
        assert!(q.matches("ABC") && !q.matches("ABBC"));
        let r = Pattern::parse("re:PROD_.*").unwrap();
        assert!(r.matches("PROD_DB") && !r.matches("X_PROD_DB"));
        let anchored = Pattern::parse("re:^PROD_(DB|CACHE)$").unwrap();
        assert!(anchored.matches("PROD_DB") && !anchored.matches("PROD_QUEUE"));
        assert!(Pattern::parse("re:(").is_err());
        assert!(Pattern::parse("").is_err());
    }

    proptest! {
        /// A wildcard never treats regex metacharacters in names as special.
        #[test]
        fn literal_patterns_match_only_themselves(name in "[A-Z_.+()]{1,12}", other in "[A-Z_.+()]{1,12}") {
            let p = Pattern::parse(&name).unwrap();
            prop_assert!(p.matches(&name));
            prop_assert_eq!(p.matches(&other), name == other);
        }

        #[test]
        fn prefix_wildcard_is_starts_with(prefix in "[A-Z_]{1,8}", name in "[A-Z_]{0,12}") {
            let p = Pattern::parse(&format!("{prefix}*")).unwrap();
            prop_assert_eq!(p.matches(&name), name.starts_with(&prefix));
        }
    }
}
