//! The status page of `berth watch --listen`: `GET /` is one server-rendered HTML page
//! (no JavaScript; it reloads itself every [`REFRESH_SECONDS`]) and `GET /api/status` the
//! same data as JSON — the [`Status`] that `berth status --format json` prints.
//!
//! Every workspace with its project, environment and state (with why: idle since when, a
//! pending restart and what it waits to apply, a Secret that does not exist), the revision
//! applied, the error, the last drift healed, and the leader. Nothing on it is a secret
//! value: berth never reads one (the plan carries names, the status what the plan said).
//!
//! A standby does not plan, so it shows the status the leader last wrote (the status
//! ConfigMap), read at most once per [`STANDBY_CACHE`] however often the page is asked
//! for: the page must not let a visitor multiply berth's API requests.

use super::Shared;
use super::status::{self, Status, WorkspaceStatus};
use crate::cluster::applyset::ApplySet;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use k8s_openapi::jiff::Timestamp;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the page reloads itself.
pub const REFRESH_SECONDS: u64 = 10;
/// How long a standby keeps the leader's status it read.
pub const STANDBY_CACHE: Duration = Duration::from_secs(5);
/// The longest a standby waits for the leader's status before showing its own.
const STANDBY_READ: Duration = Duration::from_secs(5);

/// What the page needs besides the shared state: where the leader writes its status, and
/// a standby's last read of it.
pub struct PageState {
    applyset: ApplySet,
    read: tokio::sync::Mutex<Option<(Instant, Status)>>,
}

impl PageState {
    pub fn new(applyset: ApplySet) -> PageState {
        PageState {
            applyset,
            read: tokio::sync::Mutex::new(None),
        }
    }
}

/// Which instance's view the page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// This instance writes: its own status.
    Leader,
    /// A standby showing the status the leader wrote.
    FromLeader,
    /// A standby that could not read the leader's status: its own, which has no
    /// workspaces (a standby does not plan).
    Standby,
}

/// The status to show, and whose it is.
async fn current(shared: &Shared) -> (Status, View) {
    let election = match &shared.election {
        Some(election) if !shared.is_leader() => election,
        _ => return (shared.status(), View::Leader),
    };
    // One read at a time: requests that come meanwhile wait for it instead of reading too.
    let mut read = shared.page.read.lock().await;
    if let Some((at, status)) = read.as_ref()
        && at.elapsed() < STANDBY_CACHE
    {
        return (status.clone(), View::FromLeader);
    }
    let fresh = tokio::time::timeout(
        STANDBY_READ,
        status::read(election.cluster(), &shared.page.applyset),
    )
    .await;
    match fresh {
        Ok(Ok(Some(status))) => {
            *read = Some((Instant::now(), status.clone()));
            (status, View::FromLeader)
        }
        _ => (shared.status(), View::Standby),
    }
}

/// `GET /`.
pub async fn page(State(shared): State<Arc<Shared>>) -> Response {
    let (status, view) = current(&shared).await;
    let html = render(&status, view, Timestamp::now()).into_string();
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // No script may run, whatever a message contains: the page has none.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response()
}

/// `GET /api/status`: the page's data.
pub async fn api(State(shared): State<Arc<Shared>>) -> Response {
    let (status, _) = current(&shared).await;
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(status)).into_response()
}

const STYLE: &str = r#"
:root { color-scheme: light dark; --fg: #1d232b; --muted: #5b6673; --bg: #f6f7f9; --card: #fff;
  --line: #d9dee4; --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; --idle: #6e7781; --info: #0969da; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #9aa5b1; --bg: #0d1117;
  --card: #161b22; --line: #30363d; --ok: #3fb950; --warn: #d29922; --bad: #f85149; --idle: #8b949e; --info: #58a6ff; } }
* { box-sizing: border-box; }
body { margin: 0; padding: 1rem; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--fg); background: var(--bg); }
main { max-width: 72rem; margin: 0 auto; }
h1 { font-size: 1.4rem; margin: 0 0 .25rem; }
h2 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
h3 { font-size: 1rem; margin: 0; overflow-wrap: anywhere; }
.muted, .meta { color: var(--muted); }
code, pre { font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: .5rem 0 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; margin: 0; }
dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
.panel, .workspace { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: .75rem 1rem; }
.error { border-color: var(--bad); border-left-width: 4px; margin-top: 1rem; }
.counts { display: flex; flex-wrap: wrap; gap: .5rem; margin: .5rem 0 .75rem; padding: 0; list-style: none; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(17rem, 1fr)); gap: .75rem; }
.workspace header { display: flex; justify-content: space-between; align-items: baseline; gap: .5rem; }
.workspace p { margin: .35rem 0 0; overflow-wrap: anywhere; }
.badge { display: inline-block; padding: 0 .5rem; border-radius: 999px; font-size: .8rem; font-weight: 600;
  border: 1px solid currentColor; white-space: nowrap; }
.s-ready { color: var(--ok); } .s-starting, .s-restarting { color: var(--info); }
.s-suspended { color: var(--idle); } .s-failed { color: var(--bad); }
.pending { color: var(--warn); } .warning { color: var(--bad); }
footer { margin: 1.5rem 0 0; font-size: .85rem; }
@media (max-width: 30rem) { body { padding: .5rem; } dl { grid-template-columns: 1fr; } dt { margin-top: .35rem; } }
"#;

/// The page for `status`, seen from `view`, at `now`.
pub fn render(status: &Status, view: View, now: Timestamp) -> Markup {
    let mut workspaces: Vec<&WorkspaceStatus> = status.workspaces.iter().collect();
    workspaces.sort_by(|a, b| {
        (&a.project, &a.environment, &a.namespace, &a.name).cmp(&(
            &b.project,
            &b.environment,
            &b.namespace,
            &b.name,
        ))
    });
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for w in &workspaces {
        match counts.iter_mut().find(|(state, _)| *state == w.state) {
            Some((_, n)) => *n += 1,
            None => counts.push((&w.state, 1)),
        }
    }
    counts.sort();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content=(REFRESH_SECONDS);
                title { "berth · " (workspaces.len()) " workspaces" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                main {
                    h1 { "berth" }
                    p.muted { "Following " code { (status.source) } }
                    (whose(status, view))
                    @if let Some(error) = &status.error {
                        section.panel.error #error {
                            strong { "Error: " (error.kind) }
                            " " span.muted {
                                @if let Some(revision) = &error.revision {
                                    "at " code title=(revision) { (short(revision)) } " "
                                }
                                "since " (when(&error.since, now))
                            }
                            pre { (error.message) }
                        }
                    }
                    h2 { "Revision" }
                    section.panel #revision {
                        dl {
                            dt { "Applied" }
                            dd {
                                @match &status.last_applied {
                                    Some(r) => {
                                        code title=(r.revision) { (short(&r.revision)) } " " (r.summary)
                                        @if let Some(signer) = &r.signer {
                                            br; span #signer { "signed by " (signer) }
                                        }
                                        br; span.muted { (when(&r.at, now)) }
                                    }
                                    None => { span.muted { "nothing yet" } }
                                }
                            }
                            @if let Some(seen) = status.last_seen.as_ref().filter(|s| {
                                status.last_applied.as_ref().is_none_or(|a| a.revision != s.revision)
                            }) {
                                dt { "Seen, not applied" }
                                dd {
                                    code title=(seen.revision) { (short(&seen.revision)) } " " (seen.summary)
                                    br; span.muted { (when(&seen.at, now)) }
                                }
                            }
                            dt { "Drift healed" }
                            dd #drift {
                                @match &status.last_drift {
                                    Some(d) => {
                                        (d.objects.join(", "))
                                        br; span.muted { (when(&d.at, now)) }
                                    }
                                    None => { span.muted { "none since this instance started" } }
                                }
                            }
                            dt { "Leader" }
                            dd #leader { (status.writer) }
                        }
                    }
                    h2 { "Workspaces" }
                    ul.counts {
                        @for (state, n) in &counts {
                            li { span class={"badge s-" (state)} { (n) " " (state) } }
                        }
                    }
                    @if workspaces.is_empty() {
                        p.muted { "No workspaces yet." }
                    }
                    div.grid #workspaces {
                        @for w in &workspaces {
                            (card(w, now))
                        }
                    }
                    footer.muted {
                        "Reloads every " (REFRESH_SECONDS) " s. The same data as JSON: "
                        a href="api/status" { "/api/status" } "."
                    }
                }
            }
        }
    }
}

/// Who wrote what the page shows.
fn whose(status: &Status, view: View) -> Markup {
    html! {
        p.muted #view {
            @match view {
                View::Leader => { "Served by the leader, " (status.writer) "." }
                View::FromLeader => {
                    "Served by a standby: the status the leader, " (status.writer) ", last wrote."
                }
                View::Standby => {
                    "Served by a standby, " (status.writer)
                    ", that could not read the leader's status: it plans nothing itself, so \
                     it knows no workspaces."
                }
            }
        }
    }
}

/// A Secret the workspace references that does not exist or lacks a key, from one of its
/// warnings (`Secret <name> does not exist …`, `Secret <name> has no key <key> …`).
fn missing_secret(warning: &str) -> Option<&str> {
    let rest = warning.strip_prefix("Secret ")?;
    let (name, rest) = rest.split_once(' ')?;
    (rest.starts_with("does not exist") || rest.starts_with("has no key")).then_some(name)
}

fn card(w: &WorkspaceStatus, now: Timestamp) -> Markup {
    let missing: Vec<&str> = w
        .warnings
        .iter()
        .filter_map(|t| missing_secret(t))
        .collect();
    let mut flags = Vec::new();
    if w.pending_restart.is_some() {
        flags.push("restart-pending");
    }
    if !missing.is_empty() {
        flags.push("missing-secret");
    }
    html! {
        article.workspace
            data-workspace={(w.namespace) "/" (w.name)}
            data-state=(w.state)
            data-flags=(flags.join(" "))
        {
            header {
                h3 { (w.name) }
                span class={"badge s-" (w.state)} { (w.state) }
            }
            p.meta {
                @if w.project.is_empty() { "—" } @else { (w.project) }
                " · "
                @if w.environment.is_empty() { "—" } @else { (w.environment) }
                " · " code { (w.namespace) }
            }
            @if let Some(reason) = &w.reason {
                p.reason {
                    @match reason.strip_prefix("idle since ") {
                        Some(since) => { "Idle since " (when(since, now)) }
                        None => { (reason) }
                    }
                }
            }
            @if let Some(pending) = &w.pending_restart {
                p.pending { strong { "Restart pending: " } (pending) }
            }
            @for name in &missing {
                p.warning { strong { "Missing Secret: " } code { (name) } }
            }
            @for warning in w.warnings.iter().filter(|t| missing_secret(t).is_none()) {
                p.warning { (warning) }
            }
        }
    }
}

fn short(revision: &str) -> String {
    revision.chars().take(12).collect()
}

/// An RFC 3339 time to the second (the exact one in `<time datetime>`), and how long ago
/// it was.
fn when(at: &str, now: Timestamp) -> Markup {
    let parsed = at.parse::<Timestamp>().ok();
    let shown = parsed.map_or_else(
        || at.to_string(),
        |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
    );
    html! {
        time datetime=(at) { (shown) }
        @if let Some(t) = parsed { " (" (ago(now.as_second() - t.as_second())) ")" }
    }
}

/// Seconds as a rough age: `just now`, `42 s ago`, `5 min ago`, `3 h ago`, `2 d ago`.
fn ago(seconds: i64) -> String {
    match seconds {
        s if s < 5 => "just now".into(),
        s if s < 120 => format!("{s} s ago"),
        s if s < 2 * 3600 => format!("{} min ago", s / 60),
        s if s < 2 * 86400 => format!("{} h ago", s / 3600),
        s => format!("{} d ago", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::status::{DriftInfo, ErrorInfo, RevisionInfo};

    fn sample() -> Status {
        Status {
            source: "file:///repo (branch main)".into(),
            writer: "berth-0".into(),
            omitted_workspaces: 0,
            last_applied: Some(RevisionInfo {
                revision: "0123456789abcdef0123".into(),
                summary: "add <etl>".into(),
                at: "2025-01-01T00:00:00Z".into(),
                signer: None,
            }),
            last_seen: None,
            error: Some(ErrorInfo {
                kind: "invalid".into(),
                revision: Some("fedcba9876543210".into()),
                message: "ws.yaml:3:1: error: <script>alert(1)</script>".into(),
                since: "2025-01-01T00:30:00Z".into(),
            }),
            last_drift: Some(DriftInfo {
                at: "2025-01-01T00:45:00Z".into(),
                revision: "0123456789abcdef0123".into(),
                objects: vec!["StatefulSet/a/etl".into()],
            }),
            workspaces: vec![
                WorkspaceStatus {
                    namespace: "a".into(),
                    name: "etl".into(),
                    project: "analytics".into(),
                    environment: "dev".into(),
                    state: "suspended".into(),
                    reason: Some("idle since 2024-12-31T22:00:00Z".into()),
                    ..Default::default()
                },
                WorkspaceStatus {
                    namespace: "a".into(),
                    name: "report".into(),
                    project: "analytics".into(),
                    environment: "dev".into(),
                    state: "ready".into(),
                    pending_restart: Some("manual: run `berth restart` to apply; environment changed: X".into()),
                    warnings: vec!["Secret creds does not exist (variable DB_PASSWORD); the workspace cannot start until it does".into()],
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn the_page_shows_every_workspace_with_its_state_and_why() {
        let now: Timestamp = "2025-01-01T01:00:00Z".parse().unwrap();
        let page = render(&sample(), View::Leader, now).into_string();
        assert!(
            page.contains(r#"data-workspace="a/etl" data-state="suspended" data-flags="""#),
            "{page}"
        );
        assert!(page.contains(r#"data-workspace="a/report" data-state="ready" data-flags="restart-pending missing-secret""#), "{page}");
        assert!(page.contains("Idle since <time datetime=\"2024-12-31T22:00:00Z\">2024-12-31 22:00:00 UTC</time> (3 h ago)"), "{page}");
        assert!(page.contains("Restart pending: </strong>manual: run `berth restart` to apply; environment changed: X"), "{page}");
        assert!(
            page.contains("Missing Secret: </strong><code>creds</code>"),
            "{page}"
        );
        assert!(page.contains("analytics · dev · <code>a</code>"), "{page}");
        assert!(page.contains("StatefulSet/a/etl"), "{page}");
        assert!(page.contains(r#"<dd id="leader">berth-0</dd>"#), "{page}");
        assert!(
            page.contains(r#"<meta http-equiv="refresh" content="10">"#),
            "{page}"
        );
        assert!(page.contains(r#"<meta name="viewport""#), "{page}");
    }

    #[test]
    fn nothing_from_the_status_is_markup() {
        let page = render(&sample(), View::Leader, Timestamp::UNIX_EPOCH).into_string();
        assert!(!page.contains("<script"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
        assert!(page.contains("add &lt;etl&gt;"), "{page}");
    }

    #[test]
    fn an_unsigned_head_is_shown_as_refused_next_to_who_signed_the_applied_one() {
        let mut status = sample();
        if let Some(applied) = &mut status.last_applied {
            applied.signer = Some("alice@example.com (ssh-ed25519 SHA256:abc)".into());
        }
        status.last_seen = Some(RevisionInfo {
            revision: "fedcba9876543210".into(),
            summary: "unsigned change".into(),
            at: "2025-01-01T00:30:00Z".into(),
            signer: None,
        });
        status.error = Some(ErrorInfo {
            kind: "unverified".into(),
            revision: Some("fedcba9876543210".into()),
            message: "revision fedcba987654 is not signed by an allowed key (it has no signature)"
                .into(),
            since: "2025-01-01T00:30:00Z".into(),
        });
        let page = render(&status, View::Leader, Timestamp::UNIX_EPOCH).into_string();
        assert!(
            page.contains("<strong>Error: unverified</strong>"),
            "{page}"
        );
        assert!(page.contains("(it has no signature)</pre>"), "{page}");
        assert!(
            page.contains(
                r#"<span id="signer">signed by alice@example.com (ssh-ed25519 SHA256:abc)</span>"#
            ),
            "{page}"
        );
        assert!(page.contains("Seen, not applied"), "{page}");
        assert!(page.contains("unsigned change"), "{page}");
    }

    #[test]
    fn a_standby_says_whose_status_it_shows() {
        let page = render(&sample(), View::FromLeader, Timestamp::UNIX_EPOCH).into_string();
        assert!(
            page.contains("Served by a standby: the status the leader, berth-0, last wrote."),
            "{page}"
        );
        let empty = Status {
            writer: "berth-1".into(),
            ..Default::default()
        };
        let page = render(&empty, View::Standby, Timestamp::UNIX_EPOCH).into_string();
        assert!(page.contains("No workspaces yet."), "{page}");
        assert!(page.contains("Served by a standby, berth-1"), "{page}");
    }

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(ago(0), "just now");
        assert_eq!(ago(42), "42 s ago");
        assert_eq!(ago(300), "5 min ago");
        assert_eq!(ago(3 * 3600), "3 h ago");
        assert_eq!(ago(3 * 86400), "3 d ago");
        assert_eq!(
            missing_secret("Secret x has no key k (variable V)"),
            Some("x")
        );
        assert_eq!(missing_secret("berth may not read Secrets in a yet"), None);
    }
}
