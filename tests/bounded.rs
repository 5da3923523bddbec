//! Bounded in time, errors in words: no command waits on a sick control plane without a
//! deadline, and no user sees a transport library's error type.

use std::path::PathBuf;
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A kubeconfig whose API server is a loopback port where nothing listens.
fn unreachable_kubeconfig(dir: &std::path::Path) -> (PathBuf, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("https://127.0.0.1:{port}");
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: '{server}', insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
"
        ),
    )
    .unwrap();
    (path, server)
}

/// Seen: `berth status` with the API server down printed a raw `ERROR kube_client…` log
/// line and `ServiceError: client error (Connect): …`. Every cluster command now says one
/// readable line naming the server and the cause, and exits 1, quickly.
#[test]
fn every_cluster_command_names_an_unreachable_server_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (kubeconfig, server) = unreachable_kubeconfig(dir.path());
    for args in [
        vec!["plan", "sample-repo"],
        vec!["apply", "sample-repo"],
        vec!["restart", "etl-dev", "sample-repo"],
        vec!["wake", "etl-dev", "sample-repo"],
        vec!["status", "sample-repo"],
    ] {
        let out = assert_cmd::Command::cargo_bin("berth")
            .unwrap()
            .args(&args)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .current_dir(root())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            // A few bounded retries, not the library's minutes of backoff: a hang is a
            // failure (killed, no exit code).
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line, not:\n{stderr}");
        assert!(
            lines[0].starts_with("error: ")
                && lines[0].contains(&format!("cannot reach the API server at {server}"))
                && lines[0].contains("connection refused"),
            "{args:?}: {stderr}"
        );
        for noise in [
            "ServiceError",
            "client error",
            "kube_client",
            "Status {",
            "os error",
        ] {
            assert!(!stderr.contains(noise), "{args:?}: `{noise}` in {stderr}");
        }
    }
}
