//! Structural validation against the JSON Schemas generated from `crate::model`. A schema
//! validator reports every problem of a document at once, each at a JSON pointer that the
//! span table turns into a line and column.

use super::diagnostic::Diagnostic;
use super::yaml::{Spans, escape_segment};
use jsonschema::Validator;
use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Project,
    Workspace,
    Policy,
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

/// Every schema violation of `value`.
pub fn validate(kind: Kind, value: &Value, spans: &Spans, file: &str) -> Vec<SchemaError> {
    let compiled = &compiled()[kind.index()];
    let Some(validator) = &compiled.validator else {
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
    validator
        .iter_errors(value)
        .flat_map(|error| {
            let pointer = error.instance_path().as_str().to_string();
            let schema_path = error.schema_path().as_str().to_string();
            match error.kind() {
                ValidationErrorKind::AdditionalProperties { unexpected } => unexpected
                    .iter()
                    .map(|key| {
                        let child = format!("{pointer}/{}", escape_segment(key));
                        let mut d = Diagnostic::error(
                            file,
                            spans.key(&child),
                            &child,
                            format!("unknown field `{key}`"),
                        );
                        let known = known_fields(&compiled.schema, &schema_path);
                        if !known.is_empty() {
                            d = d.with_help(suggest(key, &known));
                        }
                        SchemaError {
                            diagnostic: d,
                            unknown_field: Some(child),
                        }
                    })
                    .collect::<Vec<_>>(),
                ValidationErrorKind::Required { property } => {
                    let name = property.as_str().unwrap_or_default();
                    vec![
                        Diagnostic::error(
                            file,
                            spans.value(&pointer),
                            &format!("{pointer}/{}", escape_segment(name)),
                            format!("missing required field `{name}`"),
                        )
                        .into(),
                    ]
                }
                ValidationErrorKind::Type { kind } => {
                    let expected = match kind {
                        TypeKind::Single(t) => t.to_string(),
                        // `null` is how optional fields are spelt; not worth suggesting.
                        TypeKind::Multiple(ts) => ts
                            .iter()
                            .map(|t| t.to_string())
                            .filter(|t| t != "null")
                            .collect::<Vec<_>>()
                            .join(" or "),
                    };
                    let found = value.pointer(&pointer).map(type_name).unwrap_or("nothing");
                    let mut d = Diagnostic::error(
                        file,
                        spans.value(&pointer),
                        &pointer,
                        format!("expected {expected}, found {found}"),
                    );
                    if expected == "string" && matches!(found, "number" | "boolean") {
                        d = d.with_help("quote the value, e.g. \"5432\"");
                    }
                    vec![d.into()]
                }
                ValidationErrorKind::Enum { options } => {
                    let found = value.pointer(&pointer).cloned().unwrap_or(Value::Null);
                    vec![
                        Diagnostic::error(
                            file,
                            spans.value(&pointer),
                            &pointer,
                            format!("{found} is not one of {options}"),
                        )
                        .into(),
                    ]
                }
                ValidationErrorKind::Constant { expected_value } => vec![
                    Diagnostic::error(
                        file,
                        spans.value(&pointer),
                        &pointer,
                        format!("must be {expected_value}"),
                    )
                    .into(),
                ],
                _ => vec![
                    Diagnostic::error(file, spans.value(&pointer), &pointer, error.to_string())
                        .into(),
                ],
            }
        })
        .collect()
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
