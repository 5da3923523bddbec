//! The ZenML oracle: ZenML's own `ServerConfiguration` (tests/zenml/oracle.py, run with the
//! pinned zenml of `scripts/zenml-oracle`).

use super::oracle::{Oracle, Shared, shared};
use std::sync::Mutex;

static ORACLE: Shared = Shared::new();

/// The ZenML oracle of this test binary (see [`super::oracle::shared`]).
pub fn oracle() -> Option<&'static Mutex<Oracle>> {
    shared(&ORACLE, "ZenML", "zenml-oracle")
}
