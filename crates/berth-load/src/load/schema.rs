//! Structural validation against the JSON Schemas generated from `crate::model`. A schema
//! validator reports every problem of a document at once, each at a JSON pointer that the
//! span table turns into a line and column.

use super::diagnostic::Diagnostic;
use super::yaml::{Spans, escape_segment};
use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;
use std::sync::OnceLock;

/// The schemas, in the order `crate::model::schemas` returns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Project,
    Workspace,
    Policy,
    ExecutorConfig,
}

impl Kind {
    pub fn from_name(name: &str) -> Option<Kind> {
        match name {
            "Project" => Some(Kind::Project),
            "Workspace" => Some(Kind::Workspace),
            "Policy" => Some(Kind::Policy),
            _ => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

struct Compiled {
    schema: Value,
    validator: Option<Validator>,
}

fn compiled() -> &'static [Compiled] {
    static COMPILED: OnceLock<Vec<Compiled>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        crate::model::schemas()
            .into_iter()
            .map(|(_, schema)| Compiled {
                validator: jsonschema::validator_for(&schema).ok(),
                schema,
            })
            .collect()
    })
}

/// A schema violation. `unknown_field` holds the pointer of a field the schema does not
/// know, which the loader can drop to keep checking the rest of the document.
pub struct SchemaError {
    pub diagnostic: Diagnostic,
    pub unknown_field: Option<String>,
}

impl From<Diagnostic> for SchemaError {
    fn from(diagnostic: Diagnostic) -> Self {
        SchemaError {
            diagnostic,
            unknown_field: None,
        }
    }
}

/// Every schema violation of `value`, a whole document.
pub fn validate(kind: Kind, value: &Value, spans: &Spans, file: &str) -> Vec<SchemaError> {
    validate_at(kind, value, spans, file, "")
}

/// Every schema violation of `value`, found at `base` inside its document.
pub fn validate_at(
    kind: Kind,
    value: &Value,
    spans: &Spans,
    file: &str,
    base: &str,
) -> Vec<SchemaError> {
    let compiled = compiled().get(kind.index());
    let Some((compiled, validator)) = compiled.and_then(|c| Some((c, c.validator.as_ref()?)))
    else {
        return vec![
            Diagnostic::error(
                file,
                spans.value(""),
                "",
                "internal error: berth's own schema did not compile",
            )
            .into(),
        ];
    };
    let ctx = Context {
        schema: &compiled.schema,
        value,
        spans,
        file,
        base,
    };
    validator
        .iter_errors(value)
        .flat_map(|error| convert(&error, &ctx))
        .collect()
}

/// What converting a validation error needs to know.
struct Context<'a> {
    schema: &'a Value,
    value: &'a Value,
    spans: &'a Spans,
    file: &'a str,
    base: &'a str,
}

fn convert(error: &ValidationError<'_>, ctx: &Context<'_>) -> Vec<SchemaError> {
    let local = error.instance_path().as_str().to_string();
    let pointer = format!("{}{local}", ctx.base);
    let at_value =
        |message: String| Diagnostic::error(ctx.file, ctx.spans.value(&pointer), &pointer, message);
    let found = || ctx.value.pointer(&local);
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            unknown_fields(error, ctx, &pointer, unexpected)
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            vec![
                Diagnostic::error(
                    ctx.file,
                    ctx.spans.value(&pointer),
                    &format!("{pointer}/{}", escape_segment(name)),
                    format!("missing required field `{name}`"),
                )
                .into(),
            ]
        }
        ValidationErrorKind::Type { kind } => {
            let expected = type_names(kind).join(" or ");
            let found = found().map(type_name).unwrap_or("nothing");
            let mut d = at_value(format!("expected {expected}, found {found}"));
            if expected == "string" && matches!(found, "number" | "boolean") {
                d = d.with_help("quote the value, e.g. \"5432\"");
            }
            vec![d.into()]
        }
        ValidationErrorKind::Enum { options } => {
            let found = found().cloned().unwrap_or(Value::Null);
            vec![at_value(format!("{found} is not one of {options}")).into()]
        }
        ValidationErrorKind::Constant { expected_value } => {
            vec![at_value(format!("must be {expected_value}")).into()]
        }
        // Optional fields and untagged values are `anyOf` schemas: report the branch that
        // got furthest (not just "wrong type"), or the types all branches wanted.
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            closest_branch(error, ctx, context).unwrap_or_else(|| {
                let mut expected: Vec<String> = context
                    .iter()
                    .flatten()
                    .filter_map(|e| match e.kind() {
                        ValidationErrorKind::Type { kind } => Some(type_names(kind)),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                expected.dedup();
                let found = found().map(type_name).unwrap_or("nothing");
                vec![at_value(format!("expected {}, found {found}", expected.join(" or "))).into()]
            })
        }
        _ => vec![at_value(error.to_string()).into()],
    }
}

/// An unknown field each, at its key, with the closest known name as help.
fn unknown_fields(
    error: &ValidationError<'_>,
    ctx: &Context<'_>,
    pointer: &str,
    unexpected: &[String],
) -> Vec<SchemaError> {
    let known = known_fields(ctx.schema, error.schema_path().as_str());
    unexpected
        .iter()
        .map(|key| {
            let child = format!("{pointer}/{}", escape_segment(key));
            let mut d = Diagnostic::error(
                ctx.file,
                ctx.spans.key(&child),
                &child,
                format!("unknown field `{key}`"),
            );
            if !known.is_empty() {
                d = d.with_help(suggest(key, &known));
            }
            SchemaError {
                diagnostic: d,
                unknown_field: Some(child),
            }
        })
        .collect()
}

/// The errors of the `anyOf`/`oneOf` branch that got furthest: the shortest list that is
/// not only a wrong type at the value itself. None when every branch wanted another type.
fn closest_branch(
    error: &ValidationError<'_>,
    ctx: &Context<'_>,
    context: &[Vec<ValidationError<'static>>],
) -> Option<Vec<SchemaError>> {
    let wrong_type = |e: &ValidationError<'_>| {
        matches!(e.kind(), ValidationErrorKind::Type { .. })
            && e.instance_path() == error.instance_path()
    };
    let branch = context
        .iter()
        .filter(|branch| !branch.is_empty() && !branch.iter().all(&wrong_type))
        .min_by_key(|branch| branch.len())?;
    Some(branch.iter().flat_map(|e| convert(e, ctx)).collect())
}

/// JSON Schema type names, leaving out `null` (how optional fields are spelt).
fn type_names(kind: &TypeKind) -> Vec<String> {
    match kind {
        TypeKind::Single(t) => vec![t.to_string()],
        TypeKind::Multiple(ts) => ts
            .iter()
            .map(|t| t.to_string())
            .filter(|t| t != "null")
            .collect(),
    }
}

/// The properties the schema allows next to an `additionalProperties` keyword.
fn known_fields(schema: &Value, schema_path: &str) -> Vec<String> {
    let parent = schema_path
        .strip_suffix("/additionalProperties")
        .unwrap_or(schema_path);
    schema
        .pointer(&format!("{parent}/properties"))
        .and_then(Value::as_object)
        .map(|props| props.keys().cloned().collect())
        .unwrap_or_default()
}

/// "did you mean `image`?" when a known field is close, else the list of known fields.
fn suggest(unknown: &str, known: &[String]) -> String {
    let closest = known
        .iter()
        .map(|k| {
            (
                strsim::levenshtein(&k.to_lowercase(), &unknown.to_lowercase()),
                k,
            )
        })
        .min();
    match closest {
        Some((distance, k)) if distance <= 2 || k.eq_ignore_ascii_case(unknown) => {
            format!("did you mean `{k}`?")
        }
        _ => format!("expected one of: {}", known.join(", ")),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}
