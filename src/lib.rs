//! berth: a GitOps reconciler for data-platform workspaces on Kubernetes.
//!
//! The flow, one module per stage:
//!
//! ```text
//! source ──> load ──> resolve ──> render ──> plan
//! (files)   (typed    (effective   (desired    (desired vs live:
//!            docs)     env, rules)  objects)    changes, reasons)
//! ```
//!
//! `load`, `resolve`, `render` and `plan` are pure: no network, no clock, deterministic
//! output. `source` is the I/O edge that produces files.

pub mod cluster;
pub mod explain;
pub mod load;
pub mod model;
pub mod plan;
pub mod quantity;
pub mod reconcile;
pub mod render;
pub mod resolve;
pub mod source;

use load::{Diagnostic, Loaded, SourceFile};
use render::RenderContext;
use resolve::Resolved;
use serde_json::Value;

/// The desired state of a repository, or why there is none.
#[derive(Debug)]
pub struct Desired {
    pub loaded: Loaded,
    pub resolved: Resolved,
    /// Rendered objects in apply order; empty when `diagnostics` has errors.
    pub objects: Vec<Value>,
    /// Every finding of load and resolve (errors and warnings).
    pub diagnostics: Vec<Diagnostic>,
}

impl Desired {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Load → resolve → render. An invalid repository renders nothing, so nothing invalid can
/// reach a cluster.
pub fn desired(files: Vec<SourceFile>, ctx: &RenderContext) -> Desired {
    let mut desired = validated(files);
    if !desired.has_errors() {
        desired.objects = render::render(&desired.resolved, ctx);
    }
    desired
}

/// Load → resolve, rendering nothing (`objects` is empty): for callers that render later
/// with facts of their own, such as a live plan with the cluster's Secret versions.
pub fn validated(files: Vec<SourceFile>) -> Desired {
    let loaded = load::load(files);
    let mut diagnostics = loaded.diagnostics.clone();
    // Resolve even a repository with errors: guardrails still check the documents that did
    // load, so one run reports every problem.
    let (resolved, findings) = resolve::resolve(&loaded.repo);
    diagnostics.extend(findings);
    load::sort_diagnostics(&mut diagnostics);
    Desired {
        loaded,
        resolved,
        objects: Vec::new(),
        diagnostics,
    }
}
