//! The Mage oracle: Mage's own executor and idle code (tests/mage/oracle.py, run with the
//! pinned mage-ai of `scripts/mage-oracle`).

use super::oracle::{Oracle, Shared, shared};
use std::sync::Mutex;

static ORACLE: Shared = Shared::new();

/// The Mage oracle of this test binary (see [`super::oracle::shared`]).
pub fn oracle() -> Option<&'static Mutex<Oracle>> {
    shared(&ORACLE, "Mage", "mage-oracle")
}
