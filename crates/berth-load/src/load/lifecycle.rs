//! The lifecycle scripts a workspace names (`lifecycle.preStart.script`,
//! `lifecycle.postStart.script`), read from the repository's files here, in the load
//! stage, where every other file is read. Resolve keeps the texts on the resolved
//! workspace; render only places them in the workspace's scripts ConfigMap, by the key
//! given here.

use super::files::Files;
use crate::model::WorkspaceSpec;
use std::collections::BTreeMap;

fn post_start_key(script: &str) -> &'static str {
    if script.ends_with(".py") {
        "post_start.py"
    } else {
        "post_start.sh"
    }
}

/// The scripts of a workspace, by the key they have in its scripts ConfigMap.
///
/// Validation has made sure each script exists and is readable; render only runs on a
/// valid repository, so a missing text cannot occur here.
pub fn scripts(ws: &WorkspaceSpec, files: &Files) -> BTreeMap<String, String> {
    let lifecycle = &ws.lifecycle;
    let mut data = BTreeMap::new();
    let read = |path: &str| files.text(path).unwrap_or_default().to_string();
    if let Some(pre) = &lifecycle.pre_start {
        data.insert("pre_start.py".to_string(), read(&pre.script));
    }
    if let Some(script) = lifecycle
        .post_start
        .as_ref()
        .and_then(|p| p.script.as_deref())
    {
        data.insert(post_start_key(script).to_string(), read(script));
    }
    data
}
