//! The pre-start contract, checked at validate time: Mage Pro's pre-start script "must
//! include a `get_custom_configs` method that returns a dictionary of configurations", and
//! berth's init container calls `get_custom_configs()` with no arguments. The script is
//! parsed with tree-sitter's Python grammar (a maintained, complete grammar; a regex
//! cannot tell a definition from a comment, a string or a nested function).
//!
//! What is refused, each at its line: a script that is not Python; no module-level
//! `get_custom_configs` (a `def`, an import or an assignment); an `async def` or a
//! generator (they return a coroutine or an iterator, not a dict); parameters without
//! defaults (the call passes none); a function that never returns a value, or returns a
//! literal that is not a dict (`None`, a string, a number, a list, …). Returning any other
//! expression (a dict, a call, a variable) is accepted: only running it can tell more.

use super::yaml::Pos;
use tree_sitter::{Node, Parser};

/// The function a pre-start script must define.
pub const FUNCTION: &str = "get_custom_configs";

/// A problem of a pre-start script: where (`None`: the script as a whole, reported at the
/// field that names it) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub pos: Option<Pos>,
    pub message: String,
}

/// Every problem of a pre-start script's text.
pub fn check_pre_start(text: &str) -> Vec<Problem> {
    let mut parser = Parser::new();
    if parser
        .set_language(&tree_sitter_python::LANGUAGE.into())
        .is_err()
    {
        return vec![Problem {
            pos: None,
            message: "internal error: berth's Python grammar did not load".into(),
        }];
    }
    let Some(tree) = parser.parse(text, None) else {
        return vec![Problem {
            pos: None,
            message: "could not be parsed as Python".into(),
        }];
    };
    let root = tree.root_node();
    let at = |node: Node<'_>| Some(pos(text, node));
    if root.has_error() {
        let bad = first_error(root).unwrap_or(root);
        return vec![Problem {
            pos: at(bad),
            message:
                "is not valid Python here (a syntax error); the pre-start init container would fail"
                    .into(),
        }];
    }
    let mut definition = None;
    let mut cursor = root.walk();
    for statement in root.named_children(&mut cursor) {
        let node = match statement.kind() {
            "decorated_definition" => statement.child_by_field_name("definition"),
            _ => Some(statement),
        };
        let Some(node) = node else { continue };
        match node.kind() {
            "function_definition" if name_of(node, text) == Some(FUNCTION) => {
                definition = Some(Definition::Function(node));
            }
            "import_from_statement" | "import_statement" if imports(node, text) => {
                definition = Some(Definition::Other);
            }
            "expression_statement" if assigns(node, text) => definition = Some(Definition::Other),
            _ => {}
        }
    }
    match definition {
        None => vec![Problem {
            pos: None,
            message: format!(
                "does not define `{FUNCTION}()` at module level; Mage Pro's pre-start scripts must, and berth calls it"
            ),
        }],
        Some(Definition::Other) => Vec::new(),
        Some(Definition::Function(function)) => check_function(function, text),
    }
}

enum Definition<'t> {
    Function(Node<'t>),
    /// Imported or assigned: nothing more can be read from here.
    Other,
}

fn check_function(function: Node<'_>, text: &str) -> Vec<Problem> {
    let mut out = Vec::new();
    let here = |node: Node<'_>, message: String| Problem {
        pos: Some(pos(text, node)),
        message,
    };
    let name = function.child_by_field_name("name").unwrap_or(function);
    if function.child(0).is_some_and(|c| c.kind() == "async") {
        out.push(here(
            name,
            format!("`{FUNCTION}` is `async def`: it would return a coroutine, not a dict"),
        ));
    }
    if let Some(parameters) = function.child_by_field_name("parameters") {
        let mut cursor = parameters.walk();
        for parameter in parameters.named_children(&mut cursor) {
            if matches!(parameter.kind(), "identifier" | "typed_parameter") {
                out.push(here(
                    parameter,
                    format!(
                        "`{FUNCTION}` takes `{}` without a default, but it is called with no arguments",
                        parameter.utf8_text(text.as_bytes()).unwrap_or_default()
                    ),
                ));
            }
        }
    }
    let Some(body) = function.child_by_field_name("body") else {
        return out;
    };
    let mut returns = Vec::new();
    let mut yields = Vec::new();
    collect(body, &mut returns, &mut yields);
    if let Some(first) = yields.first() {
        out.push(here(
            *first,
            format!(
                "`{FUNCTION}` is a generator (`yield`): it would return an iterator, not a dict"
            ),
        ));
    }
    if returns.is_empty() {
        out.push(here(
            name,
            format!(
                "`{FUNCTION}` never returns a value, so it returns None; it must return a dict"
            ),
        ));
    }
    for ret in returns {
        let value = ret.named_child(0);
        let literal = match value.map(|v| v.kind()) {
            None | Some("none") => Some("None"),
            Some("string" | "concatenated_string") => Some("a string"),
            Some("integer" | "float") => Some("a number"),
            Some("true" | "false") => Some("a boolean"),
            Some("list" | "list_comprehension") => Some("a list"),
            Some("tuple" | "expression_list") => Some("a tuple"),
            Some("set" | "set_comprehension") => Some("a set"),
            _ => None,
        };
        if let Some(what) = literal {
            out.push(here(
                ret,
                format!("`{FUNCTION}` returns {what} here; it must return a dict"),
            ));
        }
    }
    out
}

/// `return` and `yield` nodes of a function body, not of functions, lambdas or classes
/// defined inside it.
fn collect<'t>(node: Node<'t>, returns: &mut Vec<Node<'t>>, yields: &mut Vec<Node<'t>>) {
    let mut todo = vec![node];
    while let Some(node) = todo.pop() {
        match node.kind() {
            "return_statement" => returns.push(node),
            "yield" => yields.push(node),
            "function_definition" | "lambda" | "class_definition" => continue,
            _ => {}
        }
        let mut cursor = node.walk();
        todo.extend(node.named_children(&mut cursor));
    }
    returns.sort_by_key(|n| n.start_byte());
    yields.sort_by_key(|n| n.start_byte());
}

fn name_of<'t>(node: Node<'_>, text: &'t str) -> Option<&'t str> {
    node.child_by_field_name("name")?
        .utf8_text(text.as_bytes())
        .ok()
}

/// `from x import get_custom_configs` or `import x as get_custom_configs`.
fn imports(node: Node<'_>, text: &str) -> bool {
    let mut cursor = node.walk();
    node.children_by_field_name("name", &mut cursor)
        .any(|name| {
            let bound = name.child_by_field_name("alias").unwrap_or(name);
            bound.utf8_text(text.as_bytes()).ok() == Some(FUNCTION)
        })
}

/// `get_custom_configs = ...` at module level.
fn assigns(node: Node<'_>, text: &str) -> bool {
    let Some(assignment) = node.named_child(0).filter(|n| n.kind() == "assignment") else {
        return false;
    };
    assignment
        .child_by_field_name("left")
        .and_then(|left| left.utf8_text(text.as_bytes()).ok())
        == Some(FUNCTION)
}

/// The first node tree-sitter could not parse (an ERROR node or a missing token).
fn first_error(root: Node<'_>) -> Option<Node<'_>> {
    let mut todo = vec![root];
    let mut found: Option<Node<'_>> = None;
    while let Some(node) = todo.pop() {
        if node.is_error() || node.is_missing() {
            if found.is_none_or(|f| node.start_byte() < f.start_byte()) {
                found = Some(node);
            }
            continue;
        }
        if node.has_error() {
            let mut cursor = node.walk();
            todo.extend(node.children(&mut cursor));
        }
    }
    found
}

/// A node's start as berth's positions: 1-based line, column in characters, byte offset.
fn pos(text: &str, node: Node<'_>) -> Pos {
    let offset = node.start_byte().min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let column = text
        .get(line_start..offset)
        .map_or(0, |prefix| prefix.chars().count());
    Pos {
        line: node.start_position().row + 1,
        column: column + 1,
        offset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<(Option<usize>, String)> {
        check_pre_start(text)
            .into_iter()
            .map(|p| (p.pos.map(|p| p.line), p.message))
            .collect()
    }

    fn ok(text: &str) {
        assert_eq!(problems(text), [], "{text}");
    }

    fn refused(text: &str, line: Option<usize>, needle: &str) {
        let found = problems(text);
        assert!(
            found.iter().any(|(l, m)| *l == line && m.contains(needle)),
            "expected `{needle}` at {line:?} for:\n{text}\ngot {found:?}"
        );
    }

    /// Seed 000: "These scripts must include a get_custom_configs method that returns a
    /// dictionary of configurations."
    #[test]
    fn get_custom_configs_must_be_defined_and_return_a_dict() {
        ok(include_str!(
            "../../../../sample-repo/scripts/training_pre_start.py"
        ));
        ok("def get_custom_configs(env=None, *args, **kw):\n    return {'A': 1}\n");
        ok("import os\n\n@cache\ndef get_custom_configs():\n    x = dict(a=1)\n    return x\n");
        ok("from shared.configs import get_custom_configs\n");
        ok("from shared import build as get_custom_configs\n");
        ok("get_custom_configs = lambda: {}\n");
        ok(
            "def get_custom_configs():\n    def inner():\n        return None\n    return {'k': inner()}\n",
        );
        refused(
            "print('hi')\n",
            None,
            "does not define `get_custom_configs()`",
        );
        refused(
            "# def get_custom_configs():\nX = 'def get_custom_configs(): pass'\n",
            None,
            "does not define",
        );
        refused(
            "class C:\n    def get_custom_configs(self):\n        return {}\n",
            None,
            "at module level",
        );
        refused(
            "def get_custom_configs():\n    pass\n",
            Some(1),
            "never returns a value",
        );
        refused(
            "def get_custom_configs():\n    if x:\n        return\n    return {}\n",
            Some(3),
            "returns None here",
        );
        refused(
            "def get_custom_configs():\n    return ['A']\n",
            Some(2),
            "returns a list here",
        );
        refused(
            "async def get_custom_configs():\n    return {}\n",
            Some(1),
            "async def",
        );
        refused(
            "def get_custom_configs():\n    yield {}\n    return {}\n",
            Some(2),
            "generator",
        );
        refused(
            "def get_custom_configs(env):\n    return {}\n",
            Some(1),
            "takes `env` without a default",
        );
        refused(
            "def get_custom_configs(:\n    return {}\n",
            Some(1),
            "not valid Python",
        );
    }
}
