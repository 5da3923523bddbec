//! berth-load: the first stages of berth, kept apart from everything that talks to a
//! cluster or a git remote so that they build fast, fuzz cheaply and stay pure.
//!
//! - [`model`]: the documents a berth repository holds (Project, Workspace, Policy) and
//!   Mage's executor configuration, as Rust types; the JSON Schemas are generated from them.
//! - [`load`]: files → typed, validated documents, or diagnostics naming the file, line,
//!   column and field of every problem at once. [`load::files`] is the one rule for which
//!   files are input and how bytes become text.
//! - [`quantity`] and [`pattern`]: Kubernetes quantities and the name patterns of
//!   inheritance rules and guardrails, shared by validation and resolution.
//! - [`k8s`]: whether a value reads as its Kubernetes type, nothing dropped (shared by
//!   validation and rendering).
//! - [`tenancy`]: the administrators' rule of which namespaces projects may use.

pub mod k8s;
pub mod load;
pub mod model;
pub mod pattern;
pub mod quantity;
pub mod tenancy;
