//! The oracles: another project's own code run as a real part of the test ground (Mage's
//! executor and idle rule, ZenML's server configuration), each a pinned venv made by its
//! script (`scripts/mage-oracle`, `scripts/zenml-oracle`) and one process per test binary,
//! asked one JSON case per line. Missing is a skip, and under CI=true a failure, like a
//! missing control plane.

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// A running oracle.
pub struct Oracle {
    name: &'static str,
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Oracle {
    /// The oracle's answer to one case (the formats: tests/mage/README.md,
    /// tests/zenml/README.md).
    pub fn ask(&mut self, case: &Value) -> Value {
        let name = self.name;
        let line = serde_json::to_string(case).expect("case as JSON");
        writeln!(self.stdin, "{line}")
            .unwrap_or_else(|e| panic!("writing to the {name} oracle: {e}"));
        self.stdin
            .flush()
            .unwrap_or_else(|e| panic!("flushing the {name} oracle: {e}"));
        let mut answer = String::new();
        self.stdout
            .read_line(&mut answer)
            .unwrap_or_else(|e| panic!("reading the {name} oracle: {e}"));
        assert!(!answer.is_empty(), "the {name} oracle exited; case: {line}");
        serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("the {name} oracle answers JSON: {e}"))
    }
}

pub type Shared = OnceLock<Result<Mutex<Oracle>, String>>;

/// The oracle `scripts/<script>` of this test binary (`name` in messages), started on
/// first use; `None` (after saying why) when it cannot be installed here, unless CI=true,
/// where that panics.
pub fn shared(
    cell: &'static Shared,
    name: &'static str,
    script: &'static str,
) -> Option<&'static Mutex<Oracle>> {
    match cell.get_or_init(|| start(name, script)) {
        Ok(oracle) => Some(oracle),
        Err(why) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("no {name} oracle, and CI=true makes that a failure: {why}");
            }
            eprintln!("SKIPPED: no {name} oracle: {why} (run scripts/{script} python)");
            None
        }
    }
}

fn start(name: &'static str, script: &'static str) -> Result<Mutex<Oracle>, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(script);
    // Install (or find) the pinned venv first, so its errors are readable.
    let python = Command::new(&path)
        .arg("python")
        .output()
        .map_err(|e| format!("running {}: {e}", path.display()))?;
    if !python.status.success() {
        return Err(format!(
            "scripts/{script} python failed: {}",
            String::from_utf8_lossy(&python.stderr)
        ));
    }
    let mut child = Command::new(&path)
        .arg("run")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting the {name} oracle: {e}"))?;
    let stdin = child.stdin.take().ok_or("no stdin")?;
    let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    Ok(Mutex::new(Oracle {
        name,
        _child: child,
        stdin,
        stdout,
    }))
}
