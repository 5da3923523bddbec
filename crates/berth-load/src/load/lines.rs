//! Lines and columns in a text, counted with YAML's line breaks. A leaf both the file
//! reader ([`super::files`], which places invalid UTF-8) and the YAML reader
//! ([`super::yaml`]) use, so neither imports the other for it.

/// Byte offsets where each line starts, with YAML's line breaks: `\n`, `\r\n` and a lone
/// `\r` (which is how yaml-rust2 counts the lines it reports).
pub fn line_starts(text: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut starts = vec![0];
    for (i, &b) in bytes.iter().enumerate() {
        let is_break = b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n'));
        if is_break {
            starts.push(i + 1);
        }
    }
    starts
}

/// 1-based line and column (in characters) of the position just after `prefix`, with
/// YAML's line breaks.
pub fn line_column(prefix: &str) -> (usize, usize) {
    let starts = line_starts(prefix);
    let last = starts.last().copied().unwrap_or(0);
    (starts.len(), prefix[last..].chars().count() + 1)
}
