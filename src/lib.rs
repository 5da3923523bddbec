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
//! `model` and `load` (with `quantity` and the name patterns) live in the `berth-load`
//! crate, which knows nothing of clusters or git remotes; they are re-exported here.
//!
//! `load`, `resolve`, `render` and `plan` are pure: no network, no clock, deterministic
//! output. `source` is the I/O edge that produces files.

pub mod activity;
pub mod cluster;
pub mod explain;
pub mod mage;
pub mod plan;
pub mod reconcile;
// Commit statuses and chat are what the reconciler tells the git host; the old path stays.
pub use reconcile::notify;
pub mod render;
pub mod resolve;
pub mod source;

pub use berth_load::{load, model, quantity, tenancy};

use load::{Diagnostic, Loaded, SourceFile};
use render::RenderContext;
use resolve::Resolved;
use serde_json::Value;
use tenancy::Tenancy;

/// The desired state of a repository, or why there is none.
#[derive(Debug)]
pub struct Desired {
    pub loaded: Loaded,
    pub resolved: Resolved,
    /// Rendered objects in apply order; empty when `diagnostics` has errors.
    pub objects: Vec<Value>,
    /// Every finding of load, resolve and the tenancy rule (errors and warnings).
    pub diagnostics: Vec<Diagnostic>,
    /// The tenancy rule the repository was checked against (`None`: not checked, as for
    /// a diff's base revision).
    pub tenancy: Option<Tenancy>,
}

impl Desired {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Load → resolve → render. An invalid repository renders nothing, so nothing invalid can
/// reach a cluster. Without a tenancy rule: only the namespaces no rule can allow are
/// refused (`kube-*`, `default` and `ctx.reconciler_namespace`, berth's own).
pub fn desired(files: Vec<SourceFile>, ctx: &RenderContext) -> Desired {
    let tenancy = Tenancy::unrestricted(&ctx.reconciler_namespace, "no tenancy rule given");
    desired_with(files, ctx, Some(&tenancy))
}

/// [`desired`], checked against the tenancy rule `tenancy` (`None`: not checked).
pub fn desired_with(
    files: Vec<SourceFile>,
    ctx: &RenderContext,
    tenancy: Option<&Tenancy>,
) -> Desired {
    let mut desired = validated_with(files, tenancy);
    if !desired.has_errors() {
        desired.objects = render::render(&desired.resolved, ctx);
    }
    desired
}

/// Load → resolve, rendering nothing (`objects` is empty): for callers that render later
/// with facts of their own, such as a live plan with the cluster's Secret versions.
/// Without a tenancy rule, berth in `berth-system` ([`Tenancy::default`]).
pub fn validated(files: Vec<SourceFile>) -> Desired {
    validated_with(files, Some(&Tenancy::default()))
}

/// [`validated`], checked against the tenancy rule `tenancy`: every namespace berth
/// would write to outside it is an error at its line (`None`: not checked).
pub fn validated_with(files: Vec<SourceFile>, tenancy: Option<&Tenancy>) -> Desired {
    let loaded = load::load(files);
    let mut diagnostics = loaded.diagnostics.clone();
    if let Some(tenancy) = tenancy {
        diagnostics.extend(tenancy.check(&loaded.repo));
    }
    // Resolve even a repository with errors: guardrails still check the documents that did
    // load, so one run reports every problem.
    let (resolved, findings) = resolve::resolve(&loaded.repo);
    diagnostics.extend(findings);
    // Mage's executor Jobs are built from the workspaces' pods, which render makes.
    diagnostics.extend(render::executor::findings(&resolved));
    load::cap_warnings(&mut diagnostics);
    Desired {
        loaded,
        resolved,
        objects: Vec::new(),
        diagnostics,
        tenancy: tenancy.cloned(),
    }
}

#[cfg(test)]
mod tests {
    use crate::load::{Loaded, SourceFile, load};
    use proptest::prelude::*;

    const SAMPLE: &str = include_str!("../sample-repo/workspaces/analytics/etl-prod.yaml");
    const PROJECT: &str = include_str!("../sample-repo/projects/analytics.yaml");

    fn run(text: String) -> Loaded {
        let loaded = load(vec![
            SourceFile::new("projects/analytics.yaml", PROJECT),
            SourceFile::new("ws.yaml", text),
        ]);
        // Whatever the input, resolving and rendering what loaded must not panic either.
        let (resolved, _) = crate::resolve::resolve(&loaded.repo);
        let _ = crate::render::render(&resolved, &Default::default());
        loaded
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary text: diagnostics or documents, never a panic.
        #[test]
        fn arbitrary_text_never_panics(text in "\\\\PC{0,400}") {
            run(text);
        }

        /// A real document with one line removed or replaced by noise still gives a clean
        /// answer: either it loads, or every error names a line inside the file.
        #[test]
        fn damaged_documents_get_positioned_errors(line in 0usize..60, noise in "[ -~]{0,20}", drop in any::<bool>()) {
            let mut lines: Vec<String> = SAMPLE.lines().map(str::to_string).collect();
            let at = line % lines.len();
            if drop { lines.remove(at); } else { lines[at] = noise; }
            let text = lines.join("\n");
            let total = text.lines().count().max(1);
            let loaded = run(text);
            for d in loaded.diagnostics.iter().filter(|d| d.file == "ws.yaml") {
                prop_assert!(d.line >= 1 && d.line <= total + 1, "{} outside 1..={}", d, total);
                prop_assert!(d.column >= 1);
            }
        }
    }
}
