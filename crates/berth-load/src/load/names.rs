//! The names and maps Kubernetes accepts: DNS labels and subdomains, label and
//! annotation keys and values. One leaf module both the document checks
//! ([`super::check`]) and the Mage and ZenML readers ([`super::mage`], [`super::zenml`])
//! call, so none of them reaches into another for a rule of the API server's.

/// DNS-1123 label: what Kubernetes accepts as a namespace or object name segment.
pub fn dns_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 63 {
        return Err(format!("is {} characters; at most 63", name.len()));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("only lower-case letters, digits and `-` are allowed".into());
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// A name segment of a label key or a label value: at most 63 characters, alphanumerics,
/// `-`, `_` and `.`, starting and ending with an alphanumeric.
fn label_name(name: &str) -> Result<(), String> {
    if name.len() > 63 {
        return Err(format!("is {} characters; at most 63", name.len()));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err("only letters, digits, `-`, `_` and `.` are allowed".into());
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// A label or annotation key: an optional DNS subdomain prefix (at most 253 characters)
/// and `/`, then a name as [`label_name`] (not empty).
pub fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if name.is_empty() {
        return Err("the name part must not be empty".into());
    }
    label_name(name)?;
    if let Some(prefix) = prefix {
        if prefix.is_empty() || prefix.len() > 253 {
            return Err(
                "the prefix before `/` must be a DNS subdomain of 1 to 253 characters".into(),
            );
        }
        for part in prefix.split('.') {
            dns_label(part).map_err(|why| format!("prefix `{prefix}`: `{part}` {why}"))?;
        }
    }
    Ok(())
}

/// A label value: empty, or a name as [`label_name`].
pub fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        Ok(())
    } else {
        label_name(value)
    }
}

/// Annotations on one object may total 256 KiB.
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// What the API server would refuse in a map of labels (`labels: true`: keys and values)
/// or annotations (keys, and the total size): `(key, message)` pairs, the key empty for
/// a problem of the whole map.
pub fn map_problems<'a>(
    map: impl IntoIterator<Item = (&'a str, &'a str)>,
    labels: bool,
) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut total = 0;
    for (key, value) in map {
        total += key.len() + value.len();
        if let Err(why) = qualified_name(key) {
            problems.push((key.to_string(), format!("invalid key `{key}`: {why}")));
        } else if labels && let Err(why) = label_value(value) {
            problems.push((
                key.to_string(),
                format!("invalid label value `{value}`: {why}"),
            ));
        }
    }
    if !labels && total > MAX_ANNOTATIONS_BYTES {
        problems.push((
            String::new(),
            format!("annotations total {total} bytes; Kubernetes allows {MAX_ANNOTATIONS_BYTES}"),
        ));
    }
    problems
}

/// A DNS-1123 subdomain: dot-separated DNS labels, at most 253 characters.
pub fn dns_subdomain(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    name.split('.').try_for_each(dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_and_values() {
        assert!(qualified_name("app.kubernetes.io/name").is_ok());
        assert!(qualified_name("team").is_ok());
        assert!(qualified_name("Team_1.x").is_ok());
        assert!(qualified_name("a/b/c").is_err());
        assert!(qualified_name("/b").is_err());
        assert!(qualified_name("Example.com/b").is_err());
        assert!(qualified_name(&"a".repeat(64)).is_err());
        assert!(label_value("").is_ok());
        assert!(label_value(&"v".repeat(63)).is_ok());
        assert!(label_value(&"v".repeat(64)).is_err());
        assert!(label_value("-v").is_err());
        assert!(label_value("a b").is_err());
        let big = "x".repeat(300 * 1024);
        assert_eq!(map_problems([("a", big.as_str())], false).len(), 1);
        assert!(
            map_problems([("a", big.as_str())], true)[0]
                .1
                .contains("label value")
        );
    }

    #[test]
    fn dns_labels() {
        assert!(dns_label("analytics-dev").is_ok());
        assert!(dns_label("Analytics").is_err());
        assert!(dns_label("-a").is_err());
        assert!(dns_label(&"a".repeat(64)).is_err());
        assert!(dns_label("").is_err());
    }
}
