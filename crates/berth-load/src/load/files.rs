//! The loader's input: the repository's files as text, or the reason one could not be
//! read. Both sources (a folder, a git revision) build these with the same rules, so a
//! file is read the same way wherever it comes from, and nothing unreadable is dropped
//! without a word: an unreadable file that berth would use becomes an error naming it.
//!
//! Which files are input at all is one documented rule, [`is_input_name`]: berth opens
//! files ending in `.yaml`/`.yml` (documents, Mage metadata, job templates), `.py`/`.sh`
//! (lifecycle scripts), and the root's `.berthignore`. Every other file is never read, so
//! memory is bounded by the input, not by the folder.

use super::lines::line_column;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Files larger than this are not read: YAML, scripts and templates are all far smaller,
/// and a ConfigMap (where scripts end up) holds at most 1 MiB anyway.
pub const MAX_FILE_BYTES: u64 = 2 * 1024 * 1024;

/// The file at the root listing path prefixes berth skips (one per line, `#` comments).
pub const IGNORE_FILE: &str = ".berthignore";

/// Extensions of the files berth reads; everything else is never opened.
pub const INPUT_EXTENSIONS: &[&str] = &["yaml", "yml", "py", "sh"];

/// Whether berth reads the file at `path` (repository-relative, `/`-separated) as input.
pub fn is_input_name(path: &str) -> bool {
    path == IGNORE_FILE
        || path
            .rsplit_once('.')
            .is_some_and(|(stem, ext)| !stem.ends_with('/') && INPUT_EXTENSIONS.contains(&ext))
}

/// Whether a path is skipped before anything is read: a hidden file or folder (any part
/// starting with `.`, except the root's `.berthignore`), or under a `.berthignore` prefix.
pub fn is_skipped(path: &str, ignored: &[String]) -> bool {
    if path == IGNORE_FILE {
        return false;
    }
    path.split('/').any(|part| part.starts_with('.'))
        || ignored.iter().any(|prefix| {
            path.strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
}

/// The prefixes a `.berthignore` entry lists (none when it is absent or unreadable, which
/// the loader reports).
pub fn ignored_by(entry: Option<&SourceFile>) -> Vec<String> {
    entry
        .and_then(SourceFile::text)
        .map(ignore_list)
        .unwrap_or_default()
}

/// The prefixes listed in a `.berthignore` text.
pub fn ignore_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .map(|line| line.trim_start_matches("./").trim_matches('/'))
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

/// Why a file's text is not available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// Not UTF-8: the first bad byte is at this line and column (1-based, in characters).
    NotUtf8 {
        line: usize,
        column: usize,
        byte: u8,
    },
    /// A NUL byte, which YAML and scripts never hold (YAML readers stop at it).
    NulByte { line: usize, column: usize },
    /// Over [`MAX_FILE_BYTES`]; left unread.
    TooLarge { bytes: u64 },
    /// A symbolic link: berth never follows links (a folder and a git tree would disagree
    /// about them, and a link can point outside the repository).
    Symlink { target: String },
    /// A git submodule (or, in a folder, a nested git repository): its files belong to
    /// another repository, which berth does not read.
    Submodule,
    /// A folder where a file is expected.
    Folder,
    /// The operating system or git refused to read it.
    Io(String),
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreadable::NotUtf8 { line, column, byte } => write!(
                f,
                "not UTF-8 text (byte 0x{byte:02X} at line {line}, column {column})"
            ),
            Unreadable::NulByte { line, column } => {
                write!(f, "holds a NUL byte (line {line}, column {column})")
            }
            Unreadable::TooLarge { bytes } => write!(
                f,
                "is {bytes} bytes; berth reads files of at most {MAX_FILE_BYTES} bytes"
            ),
            Unreadable::Symlink { target } => write!(
                f,
                "is a symbolic link (to `{target}`); berth does not follow links: commit the file itself"
            ),
            Unreadable::Submodule => write!(
                f,
                "is a git submodule (or nested repository); berth reads one repository only"
            ),
            Unreadable::Folder => write!(f, "is a folder, not a file"),
            Unreadable::Io(why) => write!(f, "cannot be read: {why}"),
        }
    }
}

/// One file of the repository: its path relative to the root (`/`-separated) and its text,
/// or why there is none. The text is shared, not copied, by what points into it later
/// (the loaded documents' [`super::yaml::LazySpans`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: String,
    pub content: Result<Arc<str>, Unreadable>,
}

impl SourceFile {
    /// A file whose text is known (tests, generated repositories).
    pub fn new(path: impl Into<String>, text: impl Into<String>) -> SourceFile {
        SourceFile {
            path: path.into(),
            content: Ok(text.into().into()),
        }
    }

    /// A file read as bytes: text when it is UTF-8 without NUL bytes.
    pub fn from_bytes(path: impl Into<String>, bytes: Vec<u8>) -> SourceFile {
        SourceFile {
            path: path.into(),
            content: decode(bytes).map(Arc::from),
        }
    }

    pub fn unreadable(path: impl Into<String>, why: Unreadable) -> SourceFile {
        SourceFile {
            path: path.into(),
            content: Err(why),
        }
    }

    pub fn text(&self) -> Option<&str> {
        self.content.as_deref().ok()
    }
}

/// Bytes → text, refusing what YAML readers and script interpreters would misread.
pub fn decode(bytes: Vec<u8>) -> Result<String, Unreadable> {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Unreadable::TooLarge {
            bytes: bytes.len() as u64,
        });
    }
    match String::from_utf8(bytes) {
        Ok(text) => match text.find('\0') {
            Some(at) => {
                let (line, column) = line_column(&text[..at]);
                Err(Unreadable::NulByte { line, column })
            }
            None => Ok(text),
        },
        Err(err) => {
            let bytes = err.as_bytes();
            let valid = err.utf8_error().valid_up_to();
            // The prefix is valid UTF-8 by definition of `valid_up_to`.
            let prefix = std::str::from_utf8(&bytes[..valid]).unwrap_or_default();
            let (line, column) = line_column(prefix);
            Err(Unreadable::NotUtf8 {
                line,
                column,
                byte: bytes[valid],
            })
        }
    }
}

/// Every input file of a repository by path, as the loader and render use them.
#[derive(Debug, Clone, Default)]
pub struct Files(BTreeMap<String, Result<Arc<str>, Unreadable>>);

impl Files {
    pub fn new(files: impl IntoIterator<Item = SourceFile>) -> Files {
        Files(files.into_iter().map(|f| (f.path, f.content)).collect())
    }

    /// The files again, as they were read: loading them again gives the same repository.
    pub fn into_sources(self) -> Vec<SourceFile> {
        self.0
            .into_iter()
            .map(|(path, content)| SourceFile { path, content })
            .collect()
    }

    /// The file at a repository-relative path (a leading `./` is ignored): `None` when the
    /// repository has no such input file.
    pub fn get(&self, path: &str) -> Option<Result<&str, &Unreadable>> {
        self.0
            .get(path.trim_start_matches("./"))
            .map(|content| content.as_deref())
    }

    /// The text of a file, for showing a diagnostic's source line.
    pub fn text(&self, path: &str) -> Option<&str> {
        self.get(path).and_then(Result::ok)
    }

    pub fn contains(&self, path: &str) -> bool {
        self.0.contains_key(path.trim_start_matches("./"))
    }

    /// Files whose path starts with `prefix`, in path order.
    pub fn under<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, Result<&'a str, &'a Unreadable>)> + 'a {
        self.0
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(path, _)| path.starts_with(prefix))
            .map(|(path, content)| (path.as_str(), content.as_deref()))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, Result<&str, &Unreadable>)> {
        self.0
            .iter()
            .map(|(path, content)| (path.as_str(), content.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_names_follow_the_extension_rule() {
        for yes in ["a.yaml", "x/b.yml", "s/pre.py", "run.sh", ".berthignore"] {
            assert!(is_input_name(yes), "{yes}");
        }
        for no in [
            "README.md",
            "data.txt",
            "yaml",
            "x/.yaml",
            "a.yaml.bak",
            "Makefile",
        ] {
            assert!(!is_input_name(no), "{no}");
        }
    }

    #[test]
    fn hidden_and_ignored_paths_are_skipped() {
        let ignored = ignore_list("# comment\nvendor/\n./drafts # old\n\n");
        assert_eq!(ignored, ["vendor", "drafts"]);
        assert!(is_skipped(".git/config", &ignored));
        assert!(is_skipped("a/.hidden/x.yaml", &ignored));
        assert!(is_skipped("vendor/x.yaml", &ignored));
        assert!(is_skipped("drafts", &ignored));
        assert!(!is_skipped("vendors/x.yaml", &ignored));
        assert!(!is_skipped(".berthignore", &ignored));
        assert!(!is_skipped("projects/a.yaml", &ignored));
    }

    #[test]
    fn decoding_names_the_first_bad_byte() {
        assert_eq!(decode(b"a: 1\n".to_vec()), Ok("a: 1\n".to_string()));
        assert_eq!(
            decode(b"a: 1\nb: \xc3\xa9\xff\n".to_vec()),
            Err(Unreadable::NotUtf8 {
                line: 2,
                column: 5,
                byte: 0xFF
            })
        );
        assert_eq!(
            decode(b"a: 1\nbb: x\0y\n".to_vec()),
            Err(Unreadable::NulByte { line: 2, column: 6 })
        );
        let big = vec![b'a'; MAX_FILE_BYTES as usize + 1];
        assert!(matches!(decode(big), Err(Unreadable::TooLarge { .. })));
    }

    #[test]
    fn files_under_a_prefix() {
        let files = Files::new([
            SourceFile::new("m/pipelines/a/metadata.yaml", "a"),
            SourceFile::new("m/pipelines/b/metadata.yaml", "b"),
            SourceFile::new("m/pipelinesx.yaml", "c"),
            SourceFile::new("n.yaml", "d"),
        ]);
        let under: Vec<&str> = files.under("m/pipelines/").map(|(p, _)| p).collect();
        assert_eq!(
            under,
            ["m/pipelines/a/metadata.yaml", "m/pipelines/b/metadata.yaml"]
        );
        assert_eq!(files.text("./n.yaml"), Some("d"));
    }
}
