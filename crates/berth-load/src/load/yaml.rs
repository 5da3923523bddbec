//! A YAML reader that keeps positions. serde_yaml forgets where a value came from, so the
//! loader parses with yaml-rust2's event API and builds JSON values plus a table from JSON
//! pointer to line and column. The reader is iterative and bounded: deep nesting, alias
//! bombs and huge files are refused with an error instead of a hang or a stack overflow.

pub use super::lines::{line_column, line_starts};
use serde_json::{Map, Number, Value};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: usize = super::files::MAX_FILE_BYTES as usize;
/// Deepest nesting of mappings and sequences accepted.
pub const MAX_DEPTH: usize = 64;
/// Most values that aliases may expand to in one file. Values written out are bounded by
/// the file's size; aliases are not, hence this limit (alias bombs).
pub const MAX_NODES: usize = 250_000;

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    /// In characters.
    pub column: usize,
    /// Offset in bytes from the start of the file.
    pub offset: usize,
}

impl Pos {
    /// The start of a file.
    pub const START: Pos = Pos {
        line: 1,
        column: 1,
        offset: 0,
    };
}

/// Turns yaml-rust2's markers (which count characters) into positions with byte offsets.
/// Markers arrive nearly in order, so a cursor that walks from the previous one keeps the
/// whole file's conversion linear.
struct Positions<'a> {
    text: &'a str,
    chars: usize,
    bytes: usize,
}

impl Positions<'_> {
    fn pos(&mut self, mark: &Marker) -> Pos {
        let target = mark.index();
        while self.chars < target {
            let Some(c) = self.text[self.bytes..].chars().next() else {
                break;
            };
            self.bytes += c.len_utf8();
            self.chars += 1;
        }
        while self.chars > target {
            let Some(c) = self.text[..self.bytes].chars().next_back() else {
                break;
            };
            self.bytes -= c.len_utf8();
            self.chars -= 1;
        }
        Pos {
            line: mark.line(),
            column: mark.col() + 1,
            offset: self.bytes,
        }
    }
}

/// Where each value (and each mapping key) of a document is, by JSON pointer.
///
/// Compact, as one is built for every document read: the pointers back to back in one
/// buffer and a table sorted by pointer, 32 bytes per value besides its pointer's text
/// (two hash maps of `String`s took about four times that). A loaded document keeps its
/// table only as a [`LazySpans`].
#[derive(Debug, Clone, Default)]
pub struct Spans {
    /// Every pointer with a position, back to back (UTF-8: only `&str`s are appended).
    text: Vec<u8>,
    /// Sorted by pointer (see [`Spans::sort`]) whenever a `Spans` is looked up.
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    start: u32,
    len: u32,
    value: Slot,
    key: Slot,
}

/// A [`Pos`] in 12 bytes, its line stored plus one so that 0 is "none". Files are at most
/// [`MAX_FILE_BYTES`], so every line, column and offset fits.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    line: u32,
    column: u32,
    offset: u32,
}

impl Slot {
    fn of(pos: Pos) -> Slot {
        let narrow = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Slot {
            line: narrow(pos.line).saturating_add(1),
            column: narrow(pos.column),
            offset: narrow(pos.offset),
        }
    }

    fn get(self) -> Option<Pos> {
        // Lazily: `line - 1` of an empty slot would underflow.
        (self.line != 0).then(|| Pos {
            line: self.line as usize - 1,
            column: self.column as usize,
            offset: self.offset as usize,
        })
    }
}

impl Spans {
    /// Position of the value at `pointer`, or of its closest ancestor that has one.
    pub fn value(&self, pointer: &str) -> Pos {
        let mut p = pointer;
        loop {
            if let Some(pos) = self.find(p).and_then(|e| e.value.get()) {
                return pos;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => {
                    return self
                        .find("")
                        .and_then(|e| e.value.get())
                        .unwrap_or_default();
                }
            }
        }
    }

    /// Position of the key naming the value at `pointer` (falls back to the value).
    pub fn key(&self, pointer: &str) -> Pos {
        match self.find(pointer).and_then(|e| e.key.get()) {
            Some(pos) => pos,
            None => self.value(pointer),
        }
    }

    /// Whether a value is written at `pointer` (defaults are not).
    pub fn contains(&self, pointer: &str) -> bool {
        self.find(pointer).is_some_and(|e| e.value.get().is_some())
    }

    fn find_index(&self, pointer: &str) -> Option<usize> {
        self.entries
            .binary_search_by(|e| self.pointer_bytes(e).cmp(pointer.as_bytes()))
            .ok()
    }

    fn find(&self, pointer: &str) -> Option<&Entry> {
        self.find_index(pointer).map(|i| &self.entries[i])
    }

    fn pointer_bytes(&self, entry: &Entry) -> &[u8] {
        &self.text[entry.start as usize..(entry.start + entry.len) as usize]
    }

    /// A new entry (no positions yet) whose pointer is `parts` joined; its index.
    fn push(&mut self, parts: &[&str]) -> usize {
        let start = self.text.len();
        for part in parts {
            self.text.extend_from_slice(part.as_bytes());
        }
        self.push_entry(start)
    }

    /// A new entry whose pointer is the text from `start` to the end of the buffer.
    fn push_entry(&mut self, start: usize) -> usize {
        let narrow = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        self.entries.push(Entry {
            start: narrow(start),
            len: narrow(self.text.len() - start),
            value: Slot::default(),
            key: Slot::default(),
        });
        self.entries.len() - 1
    }

    /// A new entry for the child `segment` of the entry `parent`; its index.
    fn push_child(&mut self, parent: usize, segment: &str) -> usize {
        let Entry { start, len, .. } = self.entries[parent];
        let begin = self.text.len();
        self.text
            .extend_from_within(start as usize..(start + len) as usize);
        self.text.push(b'/');
        self.text.extend_from_slice(segment.as_bytes());
        self.push_entry(begin)
    }

    /// Sort the table by pointer, for lookups: done once a document is read.
    fn sort(&mut self) {
        let mut entries = std::mem::take(&mut self.entries);
        entries.sort_unstable_by(|a, b| self.pointer_bytes(a).cmp(self.pointer_bytes(b)));
        self.entries = entries;
        self.entries.shrink_to_fit();
        self.text.shrink_to_fit();
    }
}

/// A document's [`Spans`] after its file was read: built again from the file's text the
/// first time a position is asked. Reading a file builds every document's table for the
/// file's own checks; afterwards only documents with a problem need positions, and every
/// workspace's table kept at once was the loader's largest part (`berth validate` of
/// 100,000 workspaces peaked at 1.1 GB with them, 0.85 GB without).
#[derive(Clone)]
pub struct LazySpans {
    file: Arc<FileSpans>,
    /// The document's place among those [`parse_all`] reads from the file.
    document: usize,
}

/// A file's text and, once one of its documents is asked, the tables of all of them: one
/// parse however many of its documents have problems.
pub struct FileSpans {
    text: Arc<str>,
    documents: OnceLock<Vec<Spans>>,
}

impl FileSpans {
    pub fn new(text: Arc<str>) -> Arc<FileSpans> {
        Arc::new(FileSpans {
            text,
            documents: OnceLock::new(),
        })
    }
}

impl LazySpans {
    /// The spans of the `document`th document [`parse_all`] reads from `file`.
    pub fn new(file: &Arc<FileSpans>, document: usize) -> LazySpans {
        LazySpans {
            file: file.clone(),
            document,
        }
    }

    fn spans(&self) -> &Spans {
        static NONE: Spans = Spans {
            text: Vec::new(),
            entries: Vec::new(),
        };
        let file = &self.file;
        // The same text parses to the same documents, so the place still names this one.
        file.documents
            .get_or_init(|| {
                parse_all(&file.text)
                    .docs
                    .into_iter()
                    .map(|d| d.spans)
                    .collect()
            })
            .get(self.document)
            .unwrap_or(&NONE)
    }

    /// See [`Spans::value`].
    pub fn value(&self, pointer: &str) -> Pos {
        self.spans().value(pointer)
    }

    /// See [`Spans::key`].
    pub fn key(&self, pointer: &str) -> Pos {
        self.spans().key(pointer)
    }

    /// See [`Spans::contains`].
    pub fn contains(&self, pointer: &str) -> bool {
        self.spans().contains(pointer)
    }
}

impl std::fmt::Debug for LazySpans {
    // Not the file's text, which is the repository's to show.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazySpans")
            .field("document", &self.document)
            .field("read_again", &self.file.documents.get().is_some())
            .finish()
    }
}

/// One YAML document of a file.
#[derive(Debug, Clone)]
pub struct YamlDoc {
    pub value: Value,
    pub spans: Spans,
}

/// Why a file could not be read as YAML.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

/// The error for a file over [`MAX_FILE_BYTES`].
pub fn too_large(bytes: u64) -> YamlError {
    YamlError {
        pos: Pos::START,
        message: format!(
            "file is {bytes} bytes; berth reads YAML files of at most {MAX_FILE_BYTES} bytes"
        ),
    }
}

/// Escape one JSON pointer segment (RFC 6901).
pub fn escape_segment(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// An open collection; `at` is its entry in the document's [`Spans`].
enum Frame {
    Seq {
        at: usize,
        items: Vec<Value>,
        anchor: usize,
    },
    Map {
        at: usize,
        map: Map<String, Value>,
        pending_key: Option<(String, Pos)>,
        anchor: usize,
    },
}

/// What a file holds: every document read before a syntax error stopped the reader, and
/// the errors (at most one that stopped it, plus values that could not be represented).
#[derive(Debug, Default)]
pub struct Parsed {
    pub docs: Vec<YamlDoc>,
    pub errors: Vec<YamlError>,
}

/// How plain scalars are typed: berth's own files are YAML 1.2 (as kubectl reads them);
/// Mage reads its files with PyYAML, which types plain scalars by YAML 1.1's rules
/// (`yes` is a boolean, `010` is 8, `1_000` is 1000, `1:30` is 90), so berth reads Mage's
/// files the way Mage will.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schema {
    #[default]
    Yaml12,
    /// PyYAML's resolver (`yaml.full_load`, `yaml.safe_load`).
    PyYaml,
}

/// Parse every document of `text`; the first error fails the whole text.
pub fn parse(text: &str) -> Result<Vec<YamlDoc>, YamlError> {
    parse_with(text, Schema::Yaml12)
}

/// [`parse`] with the scalar typing of `schema`.
pub fn parse_with(text: &str, schema: Schema) -> Result<Vec<YamlDoc>, YamlError> {
    let mut parsed = Parsed::default();
    if let Err(err) = parse_into(text, schema, &mut parsed) {
        parsed.errors.push(err);
    }
    parsed.errors.sort_by_key(|e| e.pos);
    match parsed.errors.into_iter().next() {
        Some(err) => Err(err),
        None => Ok(parsed.docs),
    }
}

/// Parse every document of `text`, keeping the documents before a syntax error so that
/// their own problems can be reported too.
pub fn parse_all(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    if let Err(err) = parse_into(text, Schema::Yaml12, &mut parsed) {
        parsed.errors.push(err);
    }
    parsed.errors.sort_by_key(|e| e.pos);
    parsed
}

/// Kept in one piece: one loop over the parser's events with the stack of open
/// nodes; each arm needs that stack and the positions, and split apart they would pass
/// all of it around.
fn parse_into(text: &str, schema: Schema, out: &mut Parsed) -> Result<(), YamlError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(too_large(text.len() as u64));
    }
    // YAML readers stop at a NUL byte as if the file ended there: refuse it instead.
    if let Some(at) = text.find('\0') {
        let (line, column) = line_column(&text[..at]);
        return Err(YamlError {
            pos: Pos {
                line,
                column,
                offset: at,
            },
            message: "a NUL byte; YAML text cannot hold one".into(),
        });
    }
    let mut parser = Parser::new_from_str(text);
    let mut positions = Positions {
        text,
        chars: 0,
        bytes: 0,
    };
    let docs = &mut out.docs;
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Value> = HashMap::new();
    let mut spans = Spans::default();
    let mut expanded = 0usize;
    let mut root: Option<Value> = None;

    loop {
        let (event, mark) = parser.next_token().map_err(|e| YamlError {
            pos: positions.pos(e.marker()),
            message: match e.info() {
                // yaml-rust2's scanner has its own, lower, limit for flow collections.
                "recursion limit exceeded" => {
                    format!("YAML nested deeper than {MAX_DEPTH} levels")
                }
                info => info.to_string(),
            },
        })?;
        let pos = positions.pos(&mark);
        let fail = |message: String| Err(YamlError { pos, message });
        match event {
            Event::StreamEnd => break,
            Event::StreamStart | Event::Nothing => {}
            Event::DocumentStart => {
                anchors.clear();
                spans = Spans::default();
                root = None;
            }
            Event::DocumentEnd => {
                // An empty document (`---` followed by nothing) yields null: skipped.
                if let Some(value) = root.take()
                    && !value.is_null()
                {
                    spans.sort();
                    docs.push(YamlDoc {
                        value,
                        spans: std::mem::take(&mut spans),
                    });
                }
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return fail(format!("YAML nested deeper than {MAX_DEPTH} levels"));
                }
                let at = child_pointer(&stack, &mut spans, pos)?;
                spans.entries[at].value = Slot::of(pos);
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq {
                        at,
                        items: Vec::new(),
                        anchor,
                    }
                } else {
                    Frame::Map {
                        at,
                        map: Map::new(),
                        pending_key: None,
                        anchor,
                    }
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (value, anchor) = match stack.pop() {
                    Some(Frame::Seq { items, anchor, .. }) => (Value::Array(items), anchor),
                    Some(Frame::Map { map, anchor, .. }) => (Value::Object(map), anchor),
                    None => return fail("unbalanced YAML collection".to_string()),
                };
                if anchor != 0 {
                    anchors.insert(anchor, value.clone());
                }
                attach(&mut stack, &mut root, value, pos)?;
            }
            Event::Scalar(text_value, style, anchor, tag) => {
                // A scalar in key position names the next value instead of being one.
                if let Some(Frame::Map {
                    pending_key: key @ None,
                    at,
                    map,
                    ..
                }) = stack.last_mut()
                {
                    // yaml-rust2 marks a block mapping after its first key; point at the key.
                    if map.is_empty()
                        && let Some(entry) = spans.entries.get_mut(*at)
                        && entry.value.get().is_some_and(|start| pos < start)
                    {
                        entry.value = Slot::of(pos);
                    }
                    *key = Some((text_value, pos));
                    continue;
                }
                let at = child_pointer(&stack, &mut spans, pos)?;
                spans.entries[at].value = Slot::of(pos);
                let resolved = match schema {
                    Schema::Yaml12 => resolve_scalar(&text_value, style, tag.as_ref()),
                    Schema::PyYaml => resolve_scalar_pyyaml(&text_value, style, tag.as_ref()),
                };
                let value = match resolved {
                    Ok(value) => value,
                    Err(message) => {
                        out.errors.push(YamlError { pos, message });
                        Value::String(text_value)
                    }
                };
                if anchor != 0 {
                    anchors.insert(anchor, value.clone());
                }
                attach(&mut stack, &mut root, value, pos)?;
            }
            Event::Alias(id) => {
                if let Some(Frame::Map {
                    pending_key: None, ..
                }) = stack.last()
                {
                    return fail("an alias cannot be used as a mapping key".to_string());
                }
                let Some(value) = anchors.get(&id).cloned() else {
                    return fail("alias refers to an unknown anchor".to_string());
                };
                expanded += count_nodes(&value);
                if expanded > MAX_NODES {
                    return fail(format!(
                        "YAML aliases expand to more than {MAX_NODES} values; refusing to expand further"
                    ));
                }
                let at = child_pointer(&stack, &mut spans, pos)?;
                spans.entries[at].value = Slot::of(pos);
                attach(&mut stack, &mut root, value, pos)?;
            }
        }
    }
    Ok(())
}

/// The entry (in `spans`) of the value about to be added to the innermost open
/// collection. Records the key's position for mappings.
fn child_pointer(stack: &[Frame], spans: &mut Spans, pos: Pos) -> Result<usize, YamlError> {
    Ok(match stack.last() {
        None => spans.push(&[""]),
        Some(Frame::Seq { at, items, .. }) => spans.push_child(*at, &items.len().to_string()),
        Some(Frame::Map {
            at, pending_key, ..
        }) => match pending_key {
            Some((key, key_pos)) => {
                let child = if key.contains(['~', '/']) {
                    spans.push_child(*at, &escape_segment(key))
                } else {
                    spans.push_child(*at, key)
                };
                spans.entries[child].key = Slot::of(*key_pos);
                child
            }
            None => {
                return Err(YamlError {
                    pos,
                    message: "mapping keys must be plain strings, not collections".to_string(),
                });
            }
        },
    })
}

fn attach(
    stack: &mut [Frame],
    root: &mut Option<Value>,
    value: Value,
    pos: Pos,
) -> Result<(), YamlError> {
    match stack.last_mut() {
        None => *root = Some(value),
        Some(Frame::Seq { items, .. }) => items.push(value),
        Some(Frame::Map {
            map, pending_key, ..
        }) => {
            let Some((key, key_pos)) = pending_key.take() else {
                return Err(YamlError {
                    pos,
                    message: "mapping value without a key".to_string(),
                });
            };
            if map.contains_key(&key) {
                return Err(YamlError {
                    pos: key_pos,
                    message: format!("duplicate key `{key}` in the same mapping"),
                });
            }
            map.insert(key, value);
        }
    }
    Ok(())
}

fn count_nodes(value: &Value) -> usize {
    // Iterative, so a deep value cannot overflow the stack.
    let mut count = 0;
    let mut todo = vec![value];
    while let Some(v) = todo.pop() {
        count += 1;
        match v {
            Value::Array(items) => todo.extend(items),
            Value::Object(map) => todo.extend(map.values()),
            _ => {}
        }
    }
    count
}

/// YAML 1.2 core schema resolution of a scalar. An integer that does not fit 64 bits is
/// an error, never a wrapped or rounded number.
fn resolve_scalar(text: &str, style: TScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    if let Some(tag) = tag
        && tag.handle == "tag:yaml.org,2002:"
        && tag.suffix == "str"
    {
        return Ok(Value::String(text.to_string()));
    }
    if style != TScalarStyle::Plain {
        return Ok(Value::String(text.to_string()));
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "true" | "True" | "TRUE" => return Ok(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Ok(Value::Bool(false)),
        _ => {}
    }
    match parse_int(text) {
        Int::Fits(n) => return Ok(Value::Number(n.into())),
        Int::OutOfRange => {
            return Err(format!(
                "integer `{text}` is out of range ({} to {}); quote it if it is text",
                i64::MIN,
                i64::MAX
            ));
        }
        Int::NotAnInteger => {}
    }
    if looks_like_float(text)
        && let Ok(f) = text.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Ok(Value::Number(n));
    }
    Ok(Value::String(text.to_string()))
}

/// PyYAML's resolution of a scalar (YAML 1.1, `yaml/resolver.py`): booleans
/// `yes|no|on|off|true|false` in three casings, integers with `_` separators, `0b`, a
/// leading-`0` octal and base-60 `1:30`, floats that need a `.` (`1e3` stays text), and
/// timestamps, which berth keeps as text (Mage hands them on as ISO strings).
///
/// Kept in one piece: it transcribes resolver.py's table of implicit resolvers in
/// its order, to be read beside it.
fn resolve_scalar_pyyaml(
    text: &str,
    style: TScalarStyle,
    tag: Option<&Tag>,
) -> Result<Value, String> {
    if tag.is_some() || style != TScalarStyle::Plain {
        return resolve_scalar(text, style, tag);
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Ok(Value::Bool(true));
        }
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Ok(Value::Bool(false));
        }
        _ => {}
    }
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let digits_ok =
        |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c == '_' || c.is_digit(radix));
    let int = |digits: &str, radix: u32| -> Result<Value, String> {
        let clean: String = digits.chars().filter(|c| *c != '_').collect();
        let magnitude = i128::from_str_radix(&clean, radix)
            .map_err(|_| format!("integer `{text}` is out of range; quote it if it is text"))?;
        let value = if negative { -magnitude } else { magnitude };
        i64::try_from(value)
            .map(|n| Value::Number(n.into()))
            .map_err(|_| format!("integer `{text}` is out of range; quote it if it is text"))
    };
    if let Some(bin) = body.strip_prefix("0b")
        && digits_ok(bin, 2)
    {
        return int(bin, 2);
    }
    if let Some(hex) = body.strip_prefix("0x")
        && digits_ok(hex, 16)
    {
        return int(hex, 16);
    }
    if body == "0" {
        return Ok(Value::Number(0.into()));
    }
    if let Some(oct) = body.strip_prefix('0')
        && digits_ok(oct, 8)
    {
        return int(oct, 8);
    }
    if body.starts_with(|c: char| c.is_ascii_digit() && c != '0') && digits_ok(body, 10) {
        return int(body, 10);
    }
    // Base 60: `[1-9][0-9_]*(:[0-5]?[0-9])+`.
    if let Some((head, rest)) = body.split_once(':')
        && body.starts_with(|c: char| c.is_ascii_digit() && c != '0')
        && digits_ok(head, 10)
        && rest.split(':').all(|part| {
            !part.is_empty()
                && part.len() <= 2
                && part.chars().all(|c| c.is_ascii_digit())
                && part
                    .chars()
                    .next()
                    .is_some_and(|c| part.len() == 1 || c <= '5')
        })
    {
        let mut total: i128 = 0;
        for part in std::iter::once(head).chain(rest.split(':')) {
            let clean: String = part.chars().filter(|c| *c != '_').collect();
            total = total * 60 + clean.parse::<i128>().unwrap_or(0);
        }
        let value = if negative { -total } else { total };
        if let Ok(n) = i64::try_from(value) {
            return Ok(Value::Number(n.into()));
        }
    }
    match body {
        ".inf" | ".Inf" | ".INF" => {
            return Ok(Value::String(text.to_string()));
        }
        ".nan" | ".NaN" | ".NAN" if !text.starts_with(['-', '+']) => {
            return Ok(Value::String(text.to_string()));
        }
        _ => {}
    }
    // `[0-9][0-9_]*\.[0-9_]*([eE][-+][0-9]+)?` or `\.[0-9_]+([eE][-+][0-9]+)?`.
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        e.len() > 1 && e.starts_with(['-', '+']) && e[1..].chars().all(|c| c.is_ascii_digit())
    });
    if let Some((whole, fraction)) = mantissa.split_once('.')
        && exponent_ok
        && (whole.is_empty() && !fraction.is_empty() && !fraction.starts_with('_')
            || whole.starts_with(|c: char| c.is_ascii_digit()))
        && whole.chars().all(|c| c.is_ascii_digit() || c == '_')
        && fraction.chars().all(|c| c.is_ascii_digit() || c == '_')
    {
        let clean: String = text.chars().filter(|c| *c != '_').collect();
        let clean = if clean.ends_with('.') {
            format!("{clean}0")
        } else {
            clean
        };
        if let Ok(f) = clean.parse::<f64>()
            && let Some(n) = Number::from_f64(f)
        {
            return Ok(Value::Number(n));
        }
    }
    Ok(Value::String(text.to_string()))
}

enum Int {
    Fits(i64),
    OutOfRange,
    NotAnInteger,
}

/// The YAML 1.2 core schema's integers: `[-+]?[0-9]+`, `0o[0-7]+`, `0x[0-9a-fA-F]+` (no
/// sign on the last two).
fn parse_int(text: &str) -> Int {
    let (radix, digits, negative) = if let Some(hex) = text.strip_prefix("0x") {
        (16, hex, false)
    } else if let Some(oct) = text.strip_prefix("0o") {
        (8, oct, false)
    } else if let Some(rest) = text.strip_prefix('-') {
        (10, rest, true)
    } else {
        (10, text.strip_prefix('+').unwrap_or(text), false)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Int::NotAnInteger;
    }
    // Digits only, so the one failure left is overflow.
    let Ok(magnitude) = u128::from_str_radix(digits, radix) else {
        return Int::OutOfRange;
    };
    let value = if negative {
        0i128.checked_sub_unsigned(magnitude)
    } else {
        i128::try_from(magnitude).ok()
    };
    match value.and_then(|v| i64::try_from(v).ok()) {
        Some(n) => Int::Fits(n),
        None => Int::OutOfRange,
    }
}

fn looks_like_float(text: &str) -> bool {
    let t = text.trim_start_matches(['-', '+']);
    !t.is_empty()
        && t.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && t.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_positions_of_values_and_keys() {
        let docs = parse("a: 1\nb:\n  - x\n  - {c: true}\n").unwrap();
        let doc = &docs[0];
        assert_eq!(
            doc.value,
            serde_json::json!({"a": 1, "b": ["x", {"c": true}]})
        );
        assert_eq!(
            (doc.spans.value("/a").line, doc.spans.value("/a").column),
            (1, 4)
        );
        assert_eq!(doc.spans.key("/b").line, 2);
        assert_eq!(doc.spans.value("/b/1/c").line, 4);
        assert_eq!(doc.spans.key("/b/1/c").column, 6);
        // An unknown pointer falls back to its closest known ancestor.
        assert_eq!(doc.spans.value("/b/1/zzz").line, 4);
    }

    #[test]
    fn block_mappings_start_at_their_first_key() {
        let docs = parse("a:\n  b:\n    c: 1\n    d: 2\n").unwrap();
        let at = |p: &str| (docs[0].spans.value(p).line, docs[0].spans.value(p).column);
        assert_eq!(at("/a/b"), (3, 5));
        assert_eq!(at("/a"), (2, 3));
    }

    #[test]
    fn splits_documents_and_skips_empty_ones() {
        let docs = parse("---\na: 1\n---\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].spans.value("/b").line, 5);
    }

    #[test]
    fn resolves_scalars_like_yaml_1_2() {
        let docs = parse("a: '1'\nb: 1.5\nc: yes\nd: ~\ne: 0x10\nf: 1Gi\n").unwrap();
        assert_eq!(
            docs[0].value,
            serde_json::json!({"a": "1", "b": 1.5, "c": "yes", "d": null, "e": 16, "f": "1Gi"})
        );
    }

    #[test]
    fn resolves_scalars_like_pyyaml() {
        let text = "a: yes\nb: off\nc: 010\nd: 1_000\ne: 1:30\nf: 1e3\ng: 0.5\nh: y\ni: '1'\nj: 0\nk: 1.\nl: 0x1F\nm: 500m\nn: ~\n";
        let docs = parse_with(text, Schema::PyYaml).unwrap();
        assert_eq!(
            docs[0].value,
            serde_json::json!({"a": true, "b": false, "c": 8, "d": 1000, "e": 90, "f": "1e3",
                "g": 0.5, "h": "y", "i": "1", "j": 0, "k": 1.0, "l": 31, "m": "500m", "n": null})
        );
    }

    #[test]
    fn integers_never_wrap() {
        let docs = parse(&format!(
            "a: {}\nb: -0x10\nc: 0o17\nd: {}\n",
            i64::MAX,
            i64::MIN
        ))
        .unwrap();
        assert_eq!(
            docs[0].value,
            serde_json::json!({"a": i64::MAX, "b": "-0x10", "c": 15, "d": i64::MIN})
        );
        for text in [
            "9223372036854775808",
            "-9223372036854775809",
            "0x8000000000000000",
            "99999999999999999999999999999999999999999",
        ] {
            let err = parse(&format!("a: 1\nb: {text}\n")).unwrap_err();
            assert_eq!(err.pos.line, 2, "{text}");
            assert!(
                err.message.contains("out of range"),
                "{text}: {}",
                err.message
            );
        }
        // Signs inside hex or octal are not numbers at all (they used to wrap).
        let docs = parse("a: -0x-8000000000000000\nb: -0x-1\nc: 0x-1\n").unwrap();
        assert_eq!(
            docs[0].value,
            serde_json::json!({"a": "-0x-8000000000000000", "b": "-0x-1", "c": "0x-1"})
        );
    }

    /// Found by the fuzzer: a lone `\r` is a line break for the YAML reader, so it must be
    /// one for every other count of lines too.
    #[test]
    fn lone_carriage_returns_break_lines_everywhere() {
        let text = "a: 1\rb: 2\r\nc: [\n";
        assert_eq!(line_starts(text), [0, 5, 11, 16]);
        let err = parse(text).unwrap_err();
        assert!(err.pos.line <= line_starts(text).len(), "{err:?}");
        assert_eq!(line_column("a\rbc"), (2, 3));
    }

    #[test]
    fn nul_bytes_are_refused_where_they_are() {
        let err = parse("a: 1\nbb: x\0y\nc: 3\n").unwrap_err();
        assert_eq!((err.pos.line, err.pos.column, err.pos.offset), (2, 6, 10));
    }

    #[test]
    fn documents_before_a_syntax_error_are_kept() {
        let parsed = parse_all("a: 1\n---\nb: 2\n---\nc: [1, 2\n");
        assert_eq!(parsed.docs.len(), 2);
        assert_eq!(parsed.errors.len(), 1);
        assert!(parsed.errors[0].pos.line >= 5);
    }

    #[test]
    fn byte_offsets_follow_multibyte_text() {
        let text = "é: ü\nkey: válue\n";
        let docs = parse(text).unwrap();
        let pos = docs[0].spans.value("/key");
        assert_eq!(&text[pos.offset..pos.offset + 6], "válue");
    }

    #[test]
    fn refuses_alias_bombs() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("aliases expand"), "{}", err.message);
    }

    #[test]
    fn refuses_deep_nesting_without_overflowing() {
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("nested deeper"), "{}", err.message);
    }

    #[test]
    fn refuses_huge_files() {
        let text = "a: b\n".repeat(MAX_FILE_BYTES / 4);
        assert!(parse(&text).unwrap_err().message.contains("at most"));
    }

    #[test]
    fn refuses_duplicate_keys() {
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.pos.line, 3);
        assert!(err.message.contains("duplicate key `a`"));
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1);
    }
}
