//! The house rule of docs/architecture.md, checked on the source itself: imports run down
//! the pipeline (a stage uses the stages before it, never one after), and no two files
//! name each other, except a folder's `mod.rs` and its own files. Test code is left out:
//! a test may read any stage to check another.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module: its crate and its path in it (`["render", "meta"]`).
type Module = (&'static str, Vec<String>);

/// Each top-level module's place in the pipeline: a module may use modules of its own
/// rank or lower. `commands` and `main` (the binary) are on top and are not read here.
fn rank(top: &str) -> Option<u8> {
    Some(match top {
        "model" | "quantity" | "pattern" | "k8s" => 0,
        "load" => 1,
        "tenancy" => 2,
        "source" | "mage" => 3,
        "resolve" => 4,
        "render" => 5,
        "plan" | "explain" => 6,
        "cluster" => 7,
        "activity" => 8,
        "reconcile" => 9,
        _ => return None,
    })
}

/// Every library file of both crates, by module.
fn modules() -> BTreeMap<Module, PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = BTreeMap::new();
    for (krate, base) in [
        ("berth", root.join("src")),
        ("berth_load", root.join("crates/berth-load/src")),
    ] {
        let mut stack = vec![base.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("source folder") {
                let path = entry.expect("folder entry").path();
                let relative = path.strip_prefix(&base).expect("below the base");
                let first = relative.components().next().map(|c| c.as_os_str());
                if matches!(first.and_then(|f| f.to_str()), Some("bin" | "commands")) {
                    continue;
                }
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if !name.ends_with(".rs") || name == "tests.rs" || name == "main.rs" {
                    continue;
                }
                let mut module: Vec<String> = relative
                    .with_extension("")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if module.last().is_some_and(|m| m == "mod" || m == "lib") {
                    module.pop();
                }
                found.insert((krate, module), path);
            }
        }
    }
    found
}

/// The modules a file's code names (`crate::…`, `super::…`, `berth_load::…`, and the
/// names in `use super::{…}`), each resolved to the longest module path that is a file.
fn uses(module: &Module, text: &str, all: &BTreeMap<Module, PathBuf>) -> BTreeSet<Module> {
    // Test modules and comments (doc links) are not the pipeline.
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
    let code: String = code
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let resolve = |krate: &'static str, path: Vec<String>| -> Option<Module> {
        (1..=path.len())
            .rev()
            .map(|n| (krate, path[..n].to_vec()))
            .find(|m| all.contains_key(m))
    };
    // `super` is the module's parent, whether the module is a file or a folder.
    let parent = |levels: usize| -> Vec<String> {
        module.1[..module.1.len().saturating_sub(levels + 1)].to_vec()
    };
    let mut found = BTreeSet::new();
    let path_re = regex::Regex::new(r"\b(crate|super|berth_load|berth)((?:::\w+)+)").unwrap();
    for m in path_re.captures_iter(&code) {
        let mut rest: Vec<String> = m[2]
            .trim_start_matches("::")
            .split("::")
            .map(String::from)
            .collect();
        let (krate, path) = match &m[1] {
            "crate" => (module.0, rest),
            "berth_load" => ("berth_load", rest),
            "berth" => ("berth", rest),
            _ => {
                let mut levels = 0;
                while rest.first().is_some_and(|r| r == "super") {
                    rest.remove(0);
                    levels += 1;
                }
                let mut path = parent(levels);
                path.extend(rest);
                (module.0, path)
            }
        };
        // berth re-exports berth-load's modules.
        let krate = match path.first().map(String::as_str) {
            Some("load" | "model" | "quantity" | "tenancy" | "pattern" | "k8s")
                if krate == "berth" =>
            {
                "berth_load"
            }
            _ => krate,
        };
        found.extend(resolve(krate, path));
    }
    let group_re = regex::Regex::new(r"use super::\{([^}]*)\}").unwrap();
    for m in group_re.captures_iter(&code) {
        for name in m[1]
            .split(',')
            .map(|n| n.trim().split("::").next().unwrap_or(""))
        {
            let mut path = parent(0);
            path.push(name.to_string());
            if let Some(target) = resolve(module.0, path.clone())
                && target.1.len() == path.len()
            {
                found.insert(target);
            }
        }
    }
    found.remove(module);
    found
}

fn is_parent(a: &Module, b: &Module) -> bool {
    a.0 == b.0 && b.1.len() == a.1.len() + 1 && b.1.starts_with(&a.1)
}

#[test]
fn imports_run_down_the_pipeline_and_no_two_files_use_each_other() {
    let all = modules();
    assert!(
        all.len() > 50,
        "read {} files: the walk is broken",
        all.len()
    );
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, path) in &all {
        let text = std::fs::read_to_string(path).expect("source file");
        edges.insert(module.clone(), uses(module, &text, &all));
    }
    let name = |m: &Module| all[m].display().to_string();
    let mut wrong = Vec::new();
    for (from, targets) in &edges {
        for to in targets {
            if from < to && edges[to].contains(from) && !is_parent(from, to) && !is_parent(to, from)
            {
                wrong.push(format!("{} and {} use each other", name(from), name(to)));
            }
            let (Some(a), Some(b)) = (
                from.1.first().and_then(|t| rank(t)),
                to.1.first().and_then(|t| rank(t)),
            ) else {
                continue;
            };
            if b > a {
                wrong.push(format!(
                    "{} uses {}, later in the pipeline",
                    name(from),
                    name(to)
                ));
            }
        }
    }
    // The check sees real edges: the render uses the resolve, the plan the render.
    let edge = |a: &[&str], b: &[&str]| {
        let key = |p: &[&str]| ("berth", p.iter().map(|s| s.to_string()).collect());
        edges[&key(a)].contains(&key(b))
    };
    assert!(edge(&["render", "workspace"], &["resolve"]));
    assert!(edge(&["reconcile", "cycle"], &["reconcile", "state"]));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The other house rule: a function of more than 80 lines says, in its comment, why it is
/// kept in one piece (`Kept in one piece: …`). Unit tests in `src` count; the scenario
/// tests under `tests/` do not (each is one story against one control plane, read top
/// to bottom).
#[test]
fn long_functions_say_why_they_are_kept_in_one_piece() {
    const LONGEST: usize = 80;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fn_re = regex::Regex::new(r"^(\s*)(pub(\([^)]*\))? )?(async )?(const )?(unsafe )?fn (\w+)")
        .unwrap();
    let (mut functions, mut kept, mut wrong) = (0, 0, Vec::new());
    let mut stack = vec![root.join("src"), root.join("crates/berth-load/src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("source folder") {
            let path = entry.expect("folder entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source file");
            let lines: Vec<&str> = text.lines().collect();
            for (start, line) in lines.iter().enumerate() {
                let Some(m) = fn_re.captures(line) else {
                    continue;
                };
                if line.trim_end().ends_with(';') {
                    continue; // a declaration in a trait
                }
                functions += 1;
                // rustfmt closes a function at its own indentation.
                let close = format!("{}}}", &m[1]);
                let end = (start..lines.len())
                    .find(|&i| lines[i] == close)
                    .unwrap_or(start);
                if end + 1 - start <= LONGEST {
                    continue;
                }
                let comment: String = lines[..start]
                    .iter()
                    .rev()
                    .take_while(|l| {
                        let l = l.trim_start();
                        l.starts_with("//") || l.starts_with("#[")
                    })
                    .copied()
                    .collect();
                if comment.contains("Kept in one piece") {
                    kept += 1;
                } else {
                    wrong.push(format!(
                        "{}:{}: fn {} is {} lines",
                        path.strip_prefix(root).unwrap_or(&path).display(),
                        start + 1,
                        &m[7],
                        end + 1 - start
                    ));
                }
            }
        }
    }
    // The scan sees the functions, and the ones kept whole on purpose (Mage's Job builder).
    assert!(
        functions > 1000,
        "read {functions} functions: the scan is broken"
    );
    assert!(
        kept > 5,
        "found {kept} functions kept in one piece: the scan is broken"
    );
    wrong.sort();
    assert!(
        wrong.is_empty(),
        "split these, or say why each is kept in one piece:\n{}",
        wrong.join("\n")
    );
}
