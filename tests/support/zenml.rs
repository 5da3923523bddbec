//! The ZenML oracle: ZenML's own `ServerConfiguration` (tests/zenml/oracle.py, run with
//! the pinned zenml of `scripts/zenml-oracle`), one process per test binary, asked one JSON
//! case per line. Missing is a skip, and under CI=true a failure, like a missing control
//! plane.

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};

pub struct Oracle {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Oracle {
    /// ZenML's answer to one case (see tests/zenml/README.md for the format).
    pub fn ask(&mut self, case: &Value) -> Value {
        let line = serde_json::to_string(case).expect("case as JSON");
        writeln!(self.stdin, "{line}").expect("writing to the ZenML oracle");
        self.stdin.flush().expect("flushing the ZenML oracle");
        let mut answer = String::new();
        self.stdout
            .read_line(&mut answer)
            .expect("reading the ZenML oracle");
        assert!(!answer.is_empty(), "the ZenML oracle exited; case: {line}");
        serde_json::from_str(&answer).expect("the ZenML oracle answers JSON")
    }
}

static ORACLE: OnceLock<Result<Mutex<Oracle>, String>> = OnceLock::new();

/// The oracle of this test binary, started on first use; `None` (after saying why) when it
/// cannot be installed here, unless CI=true, where that panics.
pub fn oracle() -> Option<&'static Mutex<Oracle>> {
    let state = ORACLE.get_or_init(start);
    match state {
        Ok(oracle) => Some(oracle),
        Err(why) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("no ZenML oracle, and CI=true makes that a failure: {why}");
            }
            eprintln!("SKIPPED: no ZenML oracle: {why} (run scripts/zenml-oracle python)");
            None
        }
    }
}

fn start() -> Result<Mutex<Oracle>, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/zenml-oracle");
    // Install (or find) the pinned venv first, so its errors are readable.
    let python = Command::new(&script)
        .arg("python")
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !python.status.success() {
        return Err(format!(
            "scripts/zenml-oracle python failed: {}",
            String::from_utf8_lossy(&python.stderr)
        ));
    }
    let mut child = Command::new(&script)
        .arg("run")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting the ZenML oracle: {e}"))?;
    let stdin = child.stdin.take().ok_or("no stdin")?;
    let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    Ok(Mutex::new(Oracle {
        _child: child,
        stdin,
        stdout,
    }))
}
