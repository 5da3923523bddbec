//! The status page of `berth watch`, in a real browser: the berth binary reconciles a copy of
//! sample-repo on the full test control plane (pods become Ready, claims bind), the test
//! makes a workspace idle, a restart pending, a live edit to heal and leaves one Secret
//! missing; then headless Chromium (Debian's package) loads `/`, and its DOM must show every
//! workspace in the state `/api/status` gives, with why. Screenshots (a desktop and a phone
//! width) are saved under `target/status-page/` for review.
//!
//! Chromium is found as `$BERTH_CHROMIUM`, or `chromium` / `chromium-browser` on PATH
//! (.ci/run installs Debian's `chromium`; `tests/support/browser.rs`). Without it the test
//! is skipped loudly, except under `CI=true`, where that is a failure. `tests/page_scale.rs`
//! opens the page of 10,000 workspaces and watches it update in place.

mod support;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use support::browser::{browse, chromium};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `berth watch`, stopped with SIGTERM (then SIGKILL) when dropped.
struct Watch {
    child: Child,
    log: PathBuf,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("berth watch, the end of its log:\n{}", self.log_tail());
        }
        // SAFETY: signals the child this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Watch {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }
}

/// Start `berth watch` on the repository's folder, serving on `addr`, logging to `log`.
fn start_watch(
    repo: &support::repo::Repo,
    cp: &support::ControlPlane,
    identity: &str,
    addr: SocketAddr,
    dir: &Path,
) -> Watch {
    let log = dir.join(format!("{identity}.log"));
    let child = repo
        .berth_as(cp.kubeconfig_path(), "watch", &[])
        .args(["--listen", &addr.to_string()])
        .args(["--interval", "1s", "--drift-interval", "2s"])
        // Long enough that the leader keeps its Lease on a busy machine; the first
        // instance takes a Lease nobody holds at once.
        .args(["--lease-duration", "10s", "--identity", identity])
        .arg("--cache-dir")
        .arg(dir.join(format!("cache-{identity}")))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting berth watch");
    Watch { child, log }
}

/// A free port on the loopback address (bound, then released for berth to bind).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// `GET path` on `addr`: the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| format!("GET {path}: no answer within 10 s"))?
        .map_err(|e| format!("GET {path}: {e}"))?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path}: not HTTP: {text}"))?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {path}: no status in {head}"))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(format!(
            "GET {path}: a chunked answer, which this test does not read"
        ));
    }
    Ok((code, body.to_string()))
}

fn workspace<'a>(status: &'a Value, name: &str) -> Result<&'a Value, String> {
    status["workspaces"]
        .as_array()
        .and_then(|list| list.iter().find(|w| w["name"] == name))
        .ok_or_else(|| format!("no workspace {name} yet"))
}

/// Where screenshots go: the cargo target folder's `status-page/`.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("status-page")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_every_workspace_and_why_in_a_real_browser() {
    let Some(chromium) = chromium() else { return };
    let Some(cp) = support::full_control_plane().await else {
        return;
    };
    let client = cp.client().await;
    let repo = support::repo::Repo::new("page");
    let (analytics, ml) = (repo.analytics(), repo.ml());
    // Every restart in one batch: the page is compared with /api/status read just before,
    // which batches every 2 s would make a race (rollouts are tests/rollout.rs's).
    repo.edit(
        "projects/analytics.yaml",
        "spec:\n",
        "spec:\n  rollout: {maxUnavailable: 100%}\n",
    );
    // serving-prod references a Secret that nobody creates.
    repo.edit(
        "workspaces/ml/serving-prod.yaml",
        "  env:\n",
        "  env:\n    - name: SERVING_API_KEY\n      secretRef: {name: serving-api-key, key: token}\n",
    );
    // The leader Lease lives next to the ApplySet parent.
    cp.kubectl()
        .args(["create", "namespace", &repo.applyset_namespace()])
        .output()
        .expect("kubectl");

    let addr = free_port();
    let logs = tempfile::tempdir().unwrap();
    let watch = start_watch(&repo, &cp, "berth-page-test", addr, logs.path());

    // 1. Everything applied, and a workspace running.
    let status_now = || async {
        let (code, body) = get(addr, "/api/status").await?;
        if code != 200 {
            return Err(format!("/api/status answered {code}: {body}"));
        }
        serde_json::from_str::<Value>(&body).map_err(|e| format!("/api/status: {e}: {body}"))
    };
    support::wait_for(Duration::from_secs(180), "the first apply", || async {
        let status = status_now().await?;
        let ready = workspace(&status, "serving-prod")?["state"].clone();
        if status["workspaces"].as_array().map(Vec::len) == Some(6) && ready == "ready" {
            Ok(())
        } else {
            Err(format!("{status}"))
        }
    })
    .await;

    // 2. The analytics workspaces' Secret comes to exist (its value must never show);
    // serving-prod's does not.
    let secret_value = format!("hunter2-{}", support::unique_name("value"));
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "warehouse-credentials", "namespace": analytics},
        "stringData": {"password": secret_value},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &analytics)
        .create(&PostParams::default(), &secret)
        .await
        .expect("creating the Secret");

    // 3. etl-dev's activity agent reports (a fresh heartbeat) no use for two hours: idle.
    let two_hours_ago = Timestamp::now() - SignedDuration::from_hours(2);
    Api::<Lease>::namespaced(client.clone(), &analytics)
        .patch(
            "etl-dev-activity",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"annotations": {
                    berth::activity::HEARTBEAT: Timestamp::now().to_string(),
                }},
                "spec": {"renewTime": MicroTime(two_hours_ago)},
            })),
        )
        .await
        .expect("patching the activity Lease");

    // 4. A project variable that reporting-dev (`restart: manual`) inherits changes.
    repo.edit(
        "projects/analytics.yaml",
        "value: warehouse.analytics.svc",
        "value: warehouse-v2.analytics.svc",
    );

    support::wait_for(
        Duration::from_secs(180),
        "idle, a pending restart and a missing Secret in /api/status",
        || async {
            let status = status_now().await?;
            let etl = workspace(&status, "etl-dev")?;
            let reporting = workspace(&status, "reporting-dev")?;
            let serving = workspace(&status, "serving-prod")?;
            let etl_prod = workspace(&status, "etl-prod")?;
            let done = etl["state"] == "suspended"
                && etl["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("idle since "))
                && reporting["pendingRestart"]
                    .as_str()
                    .is_some_and(|p| p.contains("DB_HOST"))
                && serving["warnings"]
                    .to_string()
                    .contains("Secret serving-api-key does not exist")
                && etl_prod.get("warnings").is_none();
            if done {
                Ok(())
            } else {
                Err(format!("{status}"))
            }
        },
    )
    .await;

    // 5. Someone edits a live object berth owns: drift, healed at the next drift check.
    Api::<ConfigMap>::namespaced(client.clone(), &ml)
        .patch(
            "serving-prod-env",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"SERVING_REPLICA_HINT": "99"}})),
        )
        .await
        .expect("editing the env ConfigMap");
    let status = support::wait_for(
        Duration::from_secs(60),
        "the healed drift in /api/status",
        || async {
            let status = status_now().await?;
            if status["lastDrift"]["objects"]
                .to_string()
                .contains("serving-prod-env")
            {
                Ok(status)
            } else {
                Err(format!("{status}"))
            }
        },
    )
    .await;

    // The browser's view: every workspace, in the state the API gives, with why.
    let url = format!("http://{addr}/");
    let dom = browse(
        &chromium,
        &["--dump-dom".into(), url.clone()],
        Duration::from_secs(60),
    );
    assert!(
        dom.contains("<h1>berth</h1>"),
        "not the page: {dom}\n{}",
        watch.log_tail()
    );
    let workspaces = status["workspaces"].as_array().unwrap();
    assert_eq!(workspaces.len(), 6);
    for w in workspaces {
        let card = format!(
            r#"data-workspace="{}/{}" data-state="{}""#,
            w["namespace"].as_str().unwrap(),
            w["name"].as_str().unwrap(),
            w["state"].as_str().unwrap()
        );
        assert!(dom.contains(&card), "{card} not in the page:\n{dom}");
    }
    let states: Vec<&str> = workspaces
        .iter()
        .filter_map(|w| w["state"].as_str())
        .collect();
    assert!(states.contains(&"ready"), "{states:?}");
    assert!(
        dom.contains(&format!(
            r#"data-workspace="{ml}/serving-prod" data-state="ready" data-flags="missing-secret""#
        )),
        "{dom}"
    );
    assert!(dom.contains(&format!(r#"data-workspace="{analytics}/reporting-dev""#)));
    assert!(
        dom.contains(r#"data-flags="restart-pending""#)
            && dom.contains("Restart pending: </strong>manual: run `berth restart` to apply; environment changed: DB_HOST"),
        "{dom}"
    );
    assert!(dom.contains(&format!(
        r#"data-workspace="{analytics}/legacy-reports" data-state="suspended""#
    )));
    assert!(dom.contains("suspended in git"), "{dom}");
    assert!(dom.contains("Idle since <time"), "{dom}");
    assert!(
        dom.contains("Missing Secret: </strong><code>serving-api-key</code>"),
        "{dom}"
    );
    assert!(
        dom.contains(&format!("ConfigMap/{ml}/serving-prod-env")),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<dd id="leader">berth-page-test</dd>"#),
        "{dom}"
    );
    // The page's one script is its own (`/page.js`); without scripts it reloads itself.
    assert_eq!(dom.matches("<script").count(), 1, "{dom}");
    assert!(
        dom.contains(r#"<script src="page.js" defer=""></script>"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<meta http-equiv="refresh" content="10">"#),
        "{dom}"
    );
    // No secret value, on the page or in its data.
    assert!(
        !dom.contains(&secret_value),
        "the Secret's value is on the page"
    );
    assert!(!status.to_string().contains(&secret_value));
    assert!(
        !dom.contains("warehouse-credentials does not exist"),
        "{dom}"
    );

    // Screenshots for people: a desktop and a phone.
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, size) in [("desktop.png", "1280,840"), ("phone.png", "390,1400")] {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        browse(
            &chromium,
            &[
                format!("--screenshot={}", path.display()),
                format!("--window-size={size}"),
                url.clone(),
            ],
            Duration::from_secs(60),
        );
        let png = std::fs::read(&path).unwrap_or_default();
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
            "no screenshot at {}",
            path.display()
        );
        eprintln!("screenshot: {}", path.display());
    }

    // A standby plans nothing: it serves the status the leader last wrote, and says so.
    let standby_addr = free_port();
    let standby = start_watch(&repo, &cp, "berth-page-standby", standby_addr, logs.path());
    support::wait_for(
        Duration::from_secs(60),
        "the standby's /api/status",
        || async {
            let (code, body) = get(standby_addr, "/api/status").await?;
            let seen: Value =
                serde_json::from_str(&body).map_err(|e| format!("{code}: {e}: {body}"))?;
            // The same workspaces as the leader's own view (read now: states move on).
            let leader = status_now().await?;
            if seen["writer"] == "berth-page-test" && seen["workspaces"] == leader["workspaces"] {
                Ok(())
            } else {
                Err(format!("{code}: {body}"))
            }
        },
    )
    .await;
    let (_, page) = get(standby_addr, "/").await.expect("the standby's page");
    assert!(
        page.contains("Served by a standby: the status the leader, berth-page-test, last wrote."),
        "{page}"
    );
    assert_eq!(
        page.matches("<article class=\"workspace\"").count(),
        6,
        "{page}"
    );
    drop(standby);
    drop(watch);
}
