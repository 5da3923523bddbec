//! The status page of a `berth watch` of 10,000 workspaces (`berth-bench gen`, about
//! 38,000 objects applied to the plain test control plane), in headless Chromium driven
//! over the DevTools protocol (`tests/support/browser.rs`):
//!
//! 1. `/` shows one page of 100 workspaces, problems first, with the counts by group; the
//!    test prints the page's transfer size and its first paint (the browser's performance
//!    API) and saves a screenshot under `target/status-page/`.
//! 2. A page filtered by project is left open, scrolled, with a name typed in the filter
//!    but not sent. While nothing changes its polls are answered 304. Then a commit
//!    suspends one of its workspaces: the page shows it in place — the row's state, the
//!    counts, the groups — without reloading (a mark set in the page survives), with the
//!    typed name, the scroll position and the query as they were, and each row whose HTML
//!    did not change still the very same DOM node.
//!
//! `BERTH_PAGE_WORKSPACES` sets another size. Without Chromium or a control plane the
//! test is skipped loudly, except under `CI=true`, where that is a failure.

mod support;

use serde_json::{Value, json};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};
use support::browser::{Page, chromium};
use support::generated::{GeneratedRepo, git, http_get};

/// `berth watch`, killed when dropped; its log's end is printed if the test failed.
struct Watch {
    child: Child,
    log: PathBuf,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "berth watch, the end of its log:\n{}",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn say(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// A workspace of the generated repository: its file, name, namespace and project.
struct Generated {
    file: PathBuf,
    name: String,
    namespace: String,
    project: String,
    suspended: bool,
}

fn generated(repo: &GeneratedRepo) -> Vec<Generated> {
    let mut all = Vec::new();
    let root = repo.work().join("workspaces");
    for dir in std::fs::read_dir(&root).expect("workspaces/") {
        let dir = dir.expect("an entry").path();
        for file in std::fs::read_dir(&dir).expect("a folder of workspaces") {
            let file = file.expect("an entry").path();
            let text = std::fs::read_to_string(&file).expect("a workspace file");
            let project = text
                .lines()
                .find_map(|l| l.strip_prefix("  project: "))
                .expect("a project")
                .to_string();
            all.push(Generated {
                name: file.file_stem().unwrap().to_string_lossy().into_owned(),
                namespace: format!(
                    "{}{}",
                    repo.prefix,
                    dir.file_name().unwrap().to_string_lossy()
                ),
                project,
                suspended: text.contains("\n  suspended: true"),
                file,
            });
        }
    }
    all.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_of_10000_workspaces_updates_in_place() {
    let Some(chromium) = chromium() else { return };
    let Some(cp) = support::control_plane().await else {
        return;
    };
    let workspaces: usize = std::env::var("BERTH_PAGE_WORKSPACES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let repo = GeneratedRepo::new("page", workspaces);
    repo.commit("r0");
    let mut command = repo.watch_command("watch", "page", cp.kubeconfig_path());
    command
        .command
        .args(["--no-leader-elect", "--drift-interval", "1h"])
        .args(["--cycle-timeout", "30m"]);
    let addr = command.addr.clone();
    let watch = Watch {
        child: command.command.spawn().expect("starting berth watch"),
        log: command.log.clone(),
    };

    let started = Instant::now();
    let status = support::wait_for(
        Duration::from_secs(1800),
        "every workspace applied",
        || async {
            let (code, body) = http_get(&addr, "/api/status?per_page=1").await;
            let status: Value =
                serde_json::from_str(&body).map_err(|e| format!("{code}: {e}: {body}"))?;
            if status["page"]["total"] == workspaces && status["lastApplied"].is_object() {
                Ok(status)
            } else {
                Err(format!("{code}: {body}"))
            }
        },
    )
    .await;
    say(&format!(
        "{workspaces} workspaces applied in {:.0} s; counts: {}",
        started.elapsed().as_secs_f64(),
        status["counts"]["states"]
    ));

    // A revision that changes nothing, so the workspaces' reasons are no longer those of
    // their creation: the rows the suspension below does not touch stay as they are.
    let work = repo.work();
    std::fs::write(work.join("NOTES.md"), "a note\n").unwrap();
    git(&work, &["add", "NOTES.md"]);
    git(&work, &["commit", "-q", "-m", "a note"]);
    git(&work, &["push", "-q", "origin", "main"]);
    support::wait_for(Duration::from_secs(600), "the note applied", || async {
        let (code, body) = http_get(&addr, "/api/status?per_page=1").await;
        if body.contains(r#""summary":"a note""#) {
            Ok(())
        } else {
            Err(format!("{code}: {body}"))
        }
    })
    .await;

    // 1. The first page: problems first, 100 rows, its size and first paint.
    let mut page = Page::open(&chromium, 1280, 900);
    let url = format!("http://{addr}/");
    page.navigate(&url);
    let metrics = support::wait_for(Duration::from_secs(30), "the first paint", || {
        let figures = page.eval(
            "(() => {
                const nav = performance.getEntriesByType('navigation')[0];
                const paint = Object.fromEntries(
                    performance.getEntriesByType('paint').map((e) => [e.name, e.startTime]));
                const script = performance.getEntriesByType('resource')
                    .find((e) => e.name.endsWith('/page.js'));
                return {
                    transfer: nav.transferSize, body: nav.encodedBodySize,
                    response: nav.responseEnd, paint,
                    script: script ? script.transferSize : null,
                    rows: document.querySelectorAll('article.workspace').length,
                    first: document.querySelector('article.workspace').dataset.flags,
                    groups: Array.from(document.querySelectorAll('#groups a'),
                        (a) => a.dataset.group),
                };
            })()",
        );
        async move {
            if figures["paint"]["first-contentful-paint"].is_number() {
                Ok(figures)
            } else {
                Err(format!("{figures}"))
            }
        }
    })
    .await;
    say(&format!(
        "measured: the page of {workspaces} workspaces: {} bytes transferred ({} of HTML; \
         page.js {} bytes), response end {:.0} ms, first paint {:.0} ms, first contentful \
         paint {:.0} ms",
        metrics["transfer"],
        metrics["body"],
        metrics["script"],
        metrics["response"].as_f64().unwrap_or(-1.0),
        metrics["paint"]["first-paint"].as_f64().unwrap_or(-1.0),
        metrics["paint"]["first-contentful-paint"]
            .as_f64()
            .unwrap_or(-1.0),
    ));
    assert_eq!(metrics["rows"], 100, "{metrics}");
    // The generated repository references Secrets nobody creates: those come first.
    assert_eq!(metrics["groups"][0], "missing-secret", "{metrics}");
    assert!(
        metrics["first"]
            .as_str()
            .is_some_and(|f| f.contains("missing-secret")),
        "{metrics}"
    );
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("status-page");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join(format!("{workspaces}-workspaces.png"));
    page.screenshot(&shot);
    say(&format!("screenshot: {}", shot.display()));

    // 2. One project's page, left open: scrolled, a name typed and not sent.
    let all = generated(&repo);
    let target = all
        .iter()
        .find(|w| !w.suspended && all.iter().filter(|o| o.project == w.project).count() >= 30)
        .expect("a running workspace in a project of 30 or more");
    let url = format!("http://{addr}/?project={}", target.project);
    page.navigate(&url);
    let row = |w: &Generated| format!("[data-workspace=\"{}/{}\"]", w.namespace, w.name);
    let suspended = "Number((document.querySelector('#counts .s-suspended') \
                     || {textContent: '0'}).textContent.split(' ')[0])";
    let before = page.eval(&format!(
        "(() => {{
            window.berthMark = 'kept';
            document.querySelector('input[name=q]').value = 'typed, not sent';
            window.scrollTo(0, 300);
            window.berthRows = new Map(Array.from(
                document.querySelectorAll('article.workspace'),
                (row) => [row.dataset.workspace, [row, row.outerHTML]]));
            return {{
                state: document.querySelector('{target}').dataset.state,
                suspended: {suspended},
                scroll: window.scrollY,
            }};
        }})()",
        target = row(target),
    ));
    assert_eq!(
        before["scroll"], 300,
        "the page is long enough to scroll: {before}"
    );
    assert_ne!(before["state"], "suspended", "{before}");

    // Nothing changes: the polls are answered 304, with no body.
    let polls = support::wait_for(Duration::from_secs(60), "two polls", || {
        let live = page.eval("window.berthLive");
        async move {
            if live["polls"].as_u64() >= Some(2) && live["unchanged"].as_u64() >= Some(1) {
                Ok(live)
            } else {
                Err(format!("{live}"))
            }
        }
    })
    .await;
    say(&format!("polls of an unchanged status: {polls}"));

    // A commit suspends the workspace.
    let text = std::fs::read_to_string(&target.file).unwrap();
    std::fs::write(
        &target.file,
        text.replacen("  storage:\n", "  suspended: true\n  storage:\n", 1),
    )
    .unwrap();
    git(&work, &["commit", "-q", "-am", "suspend one workspace"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let committed = Instant::now();
    let after = support::wait_for(
        Duration::from_secs(600),
        "the suspension on the open page",
        || {
            let now = page.eval(&format!(
                "(() => {{
                    const row = document.querySelector('{target}');
                    return {{
                        state: row ? row.dataset.state : null,
                        mark: window.berthMark || null,
                        typed: document.querySelector('input[name=q]').value,
                        scroll: window.scrollY,
                        search: location.search,
                        // Rows whose HTML is as it was, and of those the ones that are
                        // still the very same node.
                        unchanged: Array.from(document.querySelectorAll('article.workspace'))
                            .filter((r) => (window.berthRows.get(r.dataset.workspace)
                                || [])[1] === r.outerHTML).length,
                        same: Array.from(document.querySelectorAll('article.workspace'))
                            .filter((r) => (window.berthRows.get(r.dataset.workspace)
                                || [])[0] === r).length,
                        suspended: {suspended},
                        rows: document.querySelectorAll('article.workspace').length,
                        live: window.berthLive,
                        polls: performance.getEntriesByType('resource')
                            .filter((e) => new URL(e.name).pathname === '/live')
                            .map((e) => [e.transferSize, e.encodedBodySize]),
                    }};
                }})()",
                target = row(target),
            ));
            async move {
                if now["state"] == "suspended" {
                    Ok(now)
                } else {
                    Err(format!("{now}"))
                }
            }
        },
    )
    .await;
    say(&format!(
        "the suspension showed {:.1} s after the push: {after}",
        committed.elapsed().as_secs_f64()
    ));
    assert_eq!(after["mark"], "kept", "the page was not reloaded: {after}");
    assert_eq!(after["typed"], "typed, not sent", "{after}");
    // Not back at the top: where it was, give or take what Chromium's scroll anchoring
    // takes off when a part above the rows shrinks (the revision's "seen, not applied").
    let scroll = after["scroll"].as_f64().unwrap_or(0.0);
    assert!((200.0..=300.0).contains(&scroll), "{after}");
    assert_eq!(
        after["search"],
        json!(format!("?project={}", target.project))
    );
    assert_eq!(
        after["same"], after["unchanged"],
        "a row whose HTML did not change is the same node: {after}"
    );
    assert_eq!(
        after["suspended"].as_u64(),
        before["suspended"].as_u64().map(|n| n + 1),
        "{after}"
    );
    assert!(after["live"]["updated"].as_u64() >= Some(1), "{after}");
    assert!(
        after["unchanged"].as_u64() > Some(0),
        "some rows did not change: {after}"
    );
    drop(page);
    drop(watch);
}
