//! The loader on arbitrary bytes: reading them as a file (UTF-8 and NUL checks), parsing,
//! schema and semantic checks, the Mage loader, and the diagnostics report. Whatever the
//! bytes: no panic, no hang, and every diagnostic of the file points inside it.
#![no_main]

use berth_load::load::diagnostic::render_report;
use berth_load::load::{SourceFile, load};
use libfuzzer_sys::fuzz_target;

const PROJECT: &str = "apiVersion: berth/v1alpha1
kind: Project
metadata: {name: analytics}
spec:
  namespace: analytics
  image: mageai/mageai:0.9.76
  mageProject: mage
  env: [{name: K8S_CONFIG_FILE, value: /home/src/default_repo/template.yaml}]
";

fuzz_target!(|data: &[u8]| {
    // The same bytes as a berth document, a Mage pipeline and a job template, so every
    // reader of YAML sees them.
    let loaded = load(vec![
        SourceFile::new("projects/analytics.yaml", PROJECT),
        SourceFile::new("mage/metadata.yaml", "k8s_executor_config: {}\n"),
        SourceFile::from_bytes("mage/pipelines/p/metadata.yaml", data.to_vec()),
        SourceFile::from_bytes("mage/template.yaml", data.to_vec()),
        SourceFile::from_bytes("ws.yaml", data.to_vec()),
    ]);
    // YAML's lines: `\n`, `\r\n` and a lone `\r` each end one.
    let lines = berth_load::load::yaml::line_starts(&String::from_utf8_lossy(data)).len();
    for d in &loaded.diagnostics {
        assert!(d.line >= 1 && d.column >= 1, "{d}");
        if d.file == "ws.yaml" {
            assert!(d.line <= lines + 1, "{d} is past the end ({lines} lines)");
        }
    }
    let _ = render_report(&loaded.diagnostics, &loaded.repo.files, false);
});
