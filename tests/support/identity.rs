//! Acting as a service account of the test control plane: a kubeconfig holding a token of
//! that account (TokenRequest, as `kubectl create token` asks for one), so a test runs
//! `berth` or a client with exactly the rights RBAC gives that account.

use std::path::{Path, PathBuf};

use super::ControlPlane;

/// A kubeconfig for the control plane whose every user is `namespace/account`, written
/// into `dir`.
pub fn kubeconfig_as(cp: &ControlPlane, namespace: &str, account: &str, dir: &Path) -> PathBuf {
    let out = cp
        .kubectl()
        .args([
            "create",
            "token",
            account,
            "-n",
            namespace,
            "--duration",
            "1h",
        ])
        .output()
        .expect("running kubectl create token");
    assert!(
        out.status.success(),
        "a token for {namespace}/{account}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let text = std::fs::read_to_string(cp.kubeconfig_path()).expect("the admin kubeconfig");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text).expect("a kubeconfig");
    for user in config["users"].as_sequence_mut().expect("users") {
        user["user"] =
            serde_yaml::to_value(serde_json::json!({ "token": token })).expect("a token entry");
    }
    let path = dir.join(format!("kubeconfig-{namespace}-{account}"));
    std::fs::write(&path, serde_yaml::to_string(&config).expect("YAML")).expect("writing it");
    path
}

/// A client for the current context of `kubeconfig`.
pub async fn client_of(kubeconfig: &Path) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).expect("reading a kubeconfig"),
        &Default::default(),
    )
    .await
    .expect("a usable kubeconfig");
    kube::Client::try_from(config).expect("a client")
}
