//! Kubernetes resource quantities (`500m`, `1.5`, `2Gi`, `1e3`), parsed to numbers so that
//! `1000m` and `1`, or `1024Mi` and `1Gi`, compare equal.

/// The value of a quantity in base units (cores, bytes, …), or `None` if it is not one.
pub fn parse(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() || number == "+" || number == "-" {
        return None;
    }
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp => {
            let exp = exp.strip_prefix(['e', 'E'])?;
            10f64.powi(exp.parse().ok()?)
        }
    };
    let value = number * factor;
    value.is_finite().then_some(value)
}

/// Whether two quantity strings mean the same amount.
pub fn same(a: &str, b: &str) -> bool {
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * 16.0 * x.abs().max(y.abs()),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn canonical_forms_are_equal() {
        assert!(same("1000m", "1"));
        assert!(same("1024Mi", "1Gi"));
        assert!(same("0.5", "500m"));
        assert!(same("1e3", "1k"));
        assert!(!same("1Gi", "1G"));
        assert_eq!(parse("abc"), None);
        assert_eq!(parse("1Qi"), None);
        assert_eq!(parse(""), None);
    }

    proptest! {
        #[test]
        fn millis_match_whole_units(n in 0u32..100_000) {
            let millis = format!("{}m", n * 1000);
            prop_assert!(same(&millis, &n.to_string()), "{} != {}", millis, n);
        }

        #[test]
        fn binary_suffixes_scale_by_1024(n in 1u32..10_000) {
            let (mebi, gibi) = (format!("{}Mi", n * 1024), format!("{}Gi", n));
            prop_assert!(same(&mebi, &gibi), "{} != {}", mebi, gibi);
        }
    }
}
