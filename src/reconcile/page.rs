//! The status page of `berth watch --listen`: `GET /` is one server-rendered HTML page,
//! `GET /live` the parts of it that change with the status, and `GET /api/status` the same
//! data as JSON — the [`Status`] that `berth status --format json` prints.
//!
//! It must stay readable and cheap at 10,000 workspaces (issue #28): problems come first
//! ([`GROUPS`]: failed, missing Secret, restart pending, suspended, then the rest), with
//! counts per group and per project; a GET form filters by group, project and name; and
//! only one page of at most [`PAGE_SIZE`] workspaces is sent. `/api/status` takes the same
//! parameters ([`Query`]) and says which page it is. Every answer carries an ETag of what
//! it shows and is `304 Not Modified` to a client that has it.
//!
//! The page updates in place: its one script ([`SCRIPT`], served as `/page.js`, the only
//! script the Content-Security-Policy allows) asks `/live` with the page's own query every
//! [`REFRESH_SECONDS`], sending the ETag it has, so an unchanged status costs a 304 and no
//! body; when the status changed it swaps in only the parts that differ (counts, groups,
//! the revision, the error, the rows of the page that changed), so filters typed but not
//! sent, the page and the scroll position stay. Without JavaScript the page reloads itself
//! instead (`<noscript>` refresh). Everything inserted is the server's escaped HTML.
//!
//! Every workspace with its project, environment and state (with why: idle since when, a
//! pending restart and what it waits to apply, a Secret that does not exist), the revision
//! applied, the error, the last drift healed, and the leader. Nothing on it is a secret
//! value: berth never reads one (the plan carries names, the status what the plan said).
//!
//! A standby does not plan, so it shows the status the leader last wrote (the status
//! ConfigMap), read at most once per [`STANDBY_CACHE`] however often the page is asked
//! for: the page must not let a visitor multiply berth's API requests.

use super::shared::Shared;
use super::status::{self, Status, WorkspaceStatus};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::jiff::Timestamp;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the page asks for its live parts (or, without JavaScript, reloads itself).
pub const REFRESH_SECONDS: u64 = 10;
/// How long a standby keeps the leader's status it read.
pub const STANDBY_CACHE: Duration = Duration::from_secs(5);
/// The longest a standby waits for the leader's status before showing its own.
const STANDBY_READ: Duration = Duration::from_secs(5);

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

/// The workspaces a page or an `/api/status` answer shows: `?state=GROUP&project=P&q=TEXT&page=N`
/// (all optional; `q` matches a part of the name or namespace, ignoring case; pages count
/// from 1). `per_page` is for the API, at most [`MAX_PAGE_SIZE`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct Query {
    pub state: String,
    pub project: String,
    pub q: String,
    pub page: usize,
    pub per_page: usize,
}

/// Workspaces on one page.
pub const PAGE_SIZE: usize = 100;
/// The most `/api/status?per_page=` gives at once.
pub const MAX_PAGE_SIZE: usize = 1000;

/// A group of workspaces the page counts and filters by: its name (the `state` parameter),
/// and whether a workspace is in it. A workspace is in the first group that holds for it,
/// so problems come first; a new state (such as a halted rollout) is one line here.
type Group = (&'static str, fn(&WorkspaceStatus) -> bool);

pub const GROUPS: &[Group] = &[
    ("failed", |w| w.state == "failed"),
    ("rollout-halted", |w| w.state == "halted"),
    ("missing-secret", |w| {
        w.warnings.iter().any(|t| missing_secret(t).is_some())
    }),
    ("restart-pending", |w| w.pending_restart.is_some()),
    ("suspended", |w| w.state == "suspended"),
    ("starting", |w| w.state == "starting"),
    ("restarting", |w| w.state == "restarting"),
    ("ready", |w| w.state == "ready"),
];

/// The index in [`GROUPS`] of a workspace's group (`GROUPS.len()`: none, an unknown state).
fn group_of(w: &WorkspaceStatus) -> usize {
    GROUPS
        .iter()
        .position(|(_, holds)| holds(w))
        .unwrap_or(GROUPS.len())
}

fn group_name(index: usize) -> &'static str {
    GROUPS.get(index).map_or("other", |(name, _)| name)
}

/// One page of the status: its workspaces in order (problems first), and the counts.
pub struct Paged<'a> {
    pub workspaces: Vec<&'a WorkspaceStatus>,
    /// Workspaces that match the query, on every page.
    pub matching: usize,
    /// The page shown (from 1) and how many there are (at least 1).
    pub page: usize,
    pub pages: usize,
    pub per_page: usize,
    /// Every workspace by group (in [`GROUPS`] order, then `other`) and by project, whatever
    /// the query.
    pub groups: Vec<(&'static str, usize)>,
    pub projects: Vec<(&'a str, usize)>,
}

/// The page of `status` that `query` asks for, `per_page` workspaces at most.
pub fn paged<'a>(status: &'a Status, query: &Query, per_page: usize) -> Paged<'a> {
    let mut all: Vec<(usize, &WorkspaceStatus)> =
        status.workspaces.iter().map(|w| (group_of(w), w)).collect();
    all.sort_by(|(ga, a), (gb, b)| {
        (ga, &a.project, &a.environment, &a.namespace, &a.name).cmp(&(
            gb,
            &b.project,
            &b.environment,
            &b.namespace,
            &b.name,
        ))
    });
    let mut groups = vec![0; GROUPS.len() + 1];
    let mut projects: std::collections::BTreeMap<&str, usize> = Default::default();
    for (g, w) in &all {
        groups[*g] += 1;
        *projects.entry(w.project.as_str()).or_default() += 1;
    }
    let needle = query.q.trim().to_lowercase();
    let matching: Vec<&WorkspaceStatus> = all
        .into_iter()
        .filter(|(g, w)| {
            (query.state.is_empty() || group_name(*g) == query.state)
                && (query.project.is_empty() || w.project == query.project)
                && (needle.is_empty()
                    || w.name.to_lowercase().contains(&needle)
                    || w.namespace.to_lowercase().contains(&needle))
        })
        .map(|(_, w)| w)
        .collect();
    let per_page = per_page.clamp(1, MAX_PAGE_SIZE);
    let pages = matching.len().div_ceil(per_page).max(1);
    let page = query.page.clamp(1, pages);
    let count = matching.len();
    let workspaces = matching
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    Paged {
        workspaces,
        matching: count,
        page,
        pages,
        per_page,
        groups: groups
            .into_iter()
            .enumerate()
            .filter(|&(i, n)| n > 0 || i < GROUPS.len())
            .map(|(i, n)| (group_name(i), n))
            .collect(),
        projects: projects.into_iter().collect(),
    }
}

/// An ETag for what an answer shows: which answer (`part`: the page, its live parts, the
/// JSON), the status and whose it is, the query, and (for the page's "3 min ago") the
/// minute. Equal tags, equal answers, within this process.
fn etag(status: &Status, view: View, query: &Query, minute: i64, part: &str) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(status)
        .unwrap_or_default()
        .hash(&mut hasher);
    format!("{view:?} {query:?} {part}").hash(&mut hasher);
    minute.hash(&mut hasher);
    format!("\"{:016x}\"", hasher.finish())
}

/// Whether the client already has `tag` (`If-None-Match`).
fn has_tag(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == tag || t.trim() == "*")
}

fn not_modified(tag: &str) -> Response {
    (
        StatusCode::NOT_MODIFIED,
        [
            (header::ETAG, tag.to_string()),
            (header::CACHE_CONTROL, "no-cache".to_string()),
        ],
    )
        .into_response()
}

/// What the page may load: its own script and its own live parts, nothing else.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
     style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

/// An HTML answer tagged `tag`.
fn html_answer(tag: &str, html: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Kept, but asked again each time: an unchanged status is a 304.
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::ETAG, tag),
        ],
        html,
    )
        .into_response()
}

/// `GET /`.
pub async fn page(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(query): axum::extract::Query<Query>,
    headers: HeaderMap,
) -> Response {
    let (status, view) = current(&shared).await;
    let now = Timestamp::now();
    let tag = etag(&status, view, &query, now.as_second() / 60, "page");
    if has_tag(&headers, &tag) {
        return not_modified(&tag);
    }
    html_answer(&tag, render_page(&status, view, now, &query).into_string())
}

/// `GET /live`: the parts of the page `query` asks for that change with the status
/// ([`render_live`]), for the page's script to swap in.
pub async fn live(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(query): axum::extract::Query<Query>,
    headers: HeaderMap,
) -> Response {
    let (status, view) = current(&shared).await;
    let now = Timestamp::now();
    let tag = live_tag(&status, view, &query, now);
    if has_tag(&headers, &tag) {
        return not_modified(&tag);
    }
    html_answer(&tag, render_live(&status, view, now, &query).into_string())
}

/// The ETag of `/live` for `query` at `now`: the page carries it, so its first poll of an
/// unchanged status is a 304.
fn live_tag(status: &Status, view: View, query: &Query, now: Timestamp) -> String {
    etag(status, view, query, now.as_second() / 60, "live")
}

/// `GET /page.js`: [`SCRIPT`].
pub async fn script(headers: HeaderMap) -> Response {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    SCRIPT.hash(&mut hasher);
    let tag = format!("\"{:016x}\"", hasher.finish());
    if has_tag(&headers, &tag) {
        return not_modified(&tag);
    }
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::ETAG, &tag),
        ],
        SCRIPT,
    )
        .into_response()
}

/// The page's script: every [`REFRESH_SECONDS`] it asks `live` (with the page's query and
/// the ETag it has; `no-store`, so the 304 reaches it) and swaps in each part whose HTML
/// differs; rows are swapped one by one, so an unchanged row stays as it is. A `<select>`
/// keeps the choice made in it and is left alone while in use. `window.berthLive` counts
/// the polls, for tests and the curious.
pub const SCRIPT: &str = r#"'use strict';
(() => {
  const root = document.documentElement;
  const every = Number(root.dataset.refresh || 10) * 1000;
  let tag = root.dataset.liveTag || null;
  const counts = { polls: 0, unchanged: 0, updated: 0, swapped: 0, rows: 0, failed: 0 };
  window.berthLive = counts;
  const fresh = (node) => { counts.swapped++; return document.importNode(node, true); };
  function rows(old, now) {
    const have = new Map(Array.from(old.children, (row) => [row.dataset.workspace, row]));
    const want = Array.from(now.children, (row) => {
      const kept = have.get(row.dataset.workspace);
      if (kept && kept.outerHTML === row.outerHTML) return kept;
      counts.rows++;
      return fresh(row);
    });
    want.forEach((row, i) => {
      if (old.children[i] !== row) old.insertBefore(row, old.children[i] || null);
    });
    while (old.children.length > want.length) old.lastElementChild.remove();
  }
  function swap(text) {
    const parts = new DOMParser().parseFromString(text, 'text/html').getElementById('live');
    if (!parts) return;
    if (parts.dataset.title) document.title = parts.dataset.title;
    for (const part of Array.from(parts.children)) {
      const old = part.id ? document.getElementById(part.id) : null;
      if (!old || old.outerHTML === part.outerHTML) continue;
      if (part.id === 'workspaces') {
        rows(old, part);
      } else if (old.tagName === 'SELECT') {
        if (document.activeElement === old || old.innerHTML === part.innerHTML) continue;
        const chosen = old.value;
        old.innerHTML = part.innerHTML;
        old.value = chosen;
        counts.swapped++;
      } else {
        old.replaceWith(fresh(part));
      }
    }
  }
  async function poll() {
    counts.polls++;
    try {
      const answer = await fetch('live' + location.search, {
        headers: tag ? { 'If-None-Match': tag } : {},
        cache: 'no-store',
      });
      if (answer.status === 304) {
        counts.unchanged++;
      } else if (answer.ok) {
        const text = await answer.text();
        tag = answer.headers.get('ETag');
        swap(text);
        counts.updated++;
      } else {
        counts.failed++;
      }
    } catch (_) {
      counts.failed++;
    }
    setTimeout(poll, every);
  }
  setTimeout(poll, every);
})();
"#;

/// `GET /api/status`: the page's data, paged the same way (500 workspaces a page unless
/// `per_page` says otherwise): the [`Status`] with that page's workspaces, and `page` —
/// which page, how many, how many workspaces match — and the counts by group and project.
pub async fn api(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(query): axum::extract::Query<Query>,
    headers: HeaderMap,
) -> Response {
    let (status, view) = current(&shared).await;
    let tag = etag(&status, view, &query, 0, "api");
    if has_tag(&headers, &tag) {
        return not_modified(&tag);
    }
    let body = api_body(&status, &query);
    (
        [
            (header::CACHE_CONTROL, "no-cache".to_string()),
            (header::ETAG, tag),
        ],
        axum::Json(body),
    )
        .into_response()
}

/// The JSON of `/api/status` for `query`.
pub fn api_body(status: &Status, query: &Query) -> serde_json::Value {
    let per_page = if query.per_page == 0 {
        500
    } else {
        query.per_page
    };
    let paged = paged(status, query, per_page);
    let mut body = serde_json::to_value(Status {
        workspaces: Vec::new(),
        ..status.clone()
    })
    .unwrap_or_default();
    body["workspaces"] = serde_json::json!(paged.workspaces);
    body["page"] = serde_json::json!({
        "number": paged.page,
        "pages": paged.pages,
        "perPage": paged.per_page,
        "matching": paged.matching,
        "total": status.workspaces.len(),
    });
    body["counts"] = serde_json::json!({
        "states": paged.groups.iter().map(|(g, n)| (g.to_string(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
        "projects": paged.projects.iter().map(|(p, n)| (p.to_string(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
    });
    body
}

/// `?…` for `query` at `page` (parameters left empty are left out).
fn link(query: &Query, page: usize) -> String {
    let mut parts = Vec::new();
    for (name, value) in [
        ("state", &query.state),
        ("project", &query.project),
        ("q", &query.q),
    ] {
        if !value.is_empty() {
            parts.push(format!("{name}={}", encode(value)));
        }
    }
    if page > 1 {
        parts.push(format!("page={page}"));
    }
    format!("?{}", parts.join("&"))
}

/// Percent-encoding of a query value: every byte but unreserved ones.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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
.g-failed, .g-missing-secret { color: var(--bad); } .g-restart-pending { color: var(--warn); }
.g-suspended, .g-other { color: var(--idle); } .g-starting, .g-restarting { color: var(--info); } .g-ready { color: var(--ok); }
a.badge { text-decoration: none; }
#filter { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; margin-bottom: .75rem; }
.pages { margin: 1rem 0 0; }
footer { margin: 1.5rem 0 0; font-size: .85rem; }
@media (max-width: 30rem) { body { padding: .5rem; } dl { grid-template-columns: 1fr; } dt { margin-top: .35rem; } }
"#;

/// The first page of `status`, seen from `view`, at `now`.
#[cfg(test)]
pub fn render(status: &Status, view: View, now: Timestamp) -> Markup {
    render_page(status, view, now, &Query::default())
}

/// The page of `status` that `query` asks for, seen from `view`, at `now`.
pub fn render_page(status: &Status, view: View, now: Timestamp, query: &Query) -> Markup {
    let paged = paged(status, query, PAGE_SIZE);
    let parts = Parts::new(status, view, now, query, &paged);
    let total = status.workspaces.len();
    html! {
        (DOCTYPE)
        html lang="en" data-refresh=(REFRESH_SECONDS)
            data-live-tag=(live_tag(status, view, query, now))
        {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                noscript { meta http-equiv="refresh" content=(REFRESH_SECONDS); }
                title { (parts.title()) }
                style { (PreEscaped(STYLE)) }
                script src="page.js" defer {}
            }
            body {
                main {
                    h1 { "berth" }
                    p.muted { "Following " code { (status.source) } }
                    (parts.view())
                    (parts.error())
                    h2 { "Revision" }
                    (parts.revision())
                    h2 { "Workspaces" }
                    (parts.counts())
                    @if total == 0 {
                        p.muted { "No workspaces yet." }
                    } @else {
                        (parts.groups())
                        form.panel #filter method="get" action="" {
                            label { "State " (parts.states()) }
                            " "
                            label { "Project " (parts.projects()) }
                            " "
                            label { "Name " input type="search" name="q" value=(query.q) placeholder="part of a name"; }
                            " " button type="submit" { "Filter" }
                            " " (parts.shown())
                        }
                    }
                    (parts.workspaces())
                    (parts.pages())
                    footer.muted {
                        "Updates in place every " (REFRESH_SECONDS) " s (only what changed is \
                         sent; an unchanged status is a 304). The same data as JSON: "
                        a href={"api/status" (link(query, paged.page))} { "/api/status" } "."
                    }
                }
            }
        }
    }
}

/// `/live`: [`render_page`]'s parts that change with the status, each with the id of its
/// place in the page, in one `<div id="live">` (whose `data-title` is the page's title).
pub fn render_live(status: &Status, view: View, now: Timestamp, query: &Query) -> Markup {
    let paged = paged(status, query, PAGE_SIZE);
    let parts = Parts::new(status, view, now, query, &paged);
    html! {
        div #live data-title=(parts.title()) {
            (parts.view())
            (parts.error())
            (parts.revision())
            (parts.counts())
            (parts.groups())
            (parts.states())
            (parts.projects())
            (parts.shown())
            (parts.workspaces())
            (parts.pages())
        }
    }
}

/// The parts of a page that change with the status: the page and `/live` render them
/// alike. Each one is always there (empty and `hidden` when it has nothing to show), so
/// the script always finds its place.
struct Parts<'a> {
    status: &'a Status,
    view: View,
    now: Timestamp,
    query: &'a Query,
    paged: &'a Paged<'a>,
}

impl<'a> Parts<'a> {
    fn new(
        status: &'a Status,
        view: View,
        now: Timestamp,
        query: &'a Query,
        paged: &'a Paged<'a>,
    ) -> Parts<'a> {
        Parts {
            status,
            view,
            now,
            query,
            paged,
        }
    }

    fn title(&self) -> String {
        format!("berth · {} workspaces", self.status.workspaces.len())
    }

    fn view(&self) -> Markup {
        whose(self.status, self.view)
    }

    fn error(&self) -> Markup {
        let now = self.now;
        html! {
            @if let Some(error) = &self.status.error {
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
            } @else {
                section #error hidden {}
            }
        }
    }

    fn revision(&self) -> Markup {
        let (status, now) = (self.status, self.now);
        html! {
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
        }
    }

    /// Workspaces by state, as the status says it.
    fn counts(&self) -> Markup {
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for w in &self.status.workspaces {
            *counts.entry(w.state.as_str()).or_default() += 1;
        }
        html! {
            ul.counts #counts {
                @for (state, n) in &counts {
                    li { span class={"badge s-" (state)} { (n) " " (state) } }
                }
            }
        }
    }

    /// Counts by group (problems first), each a link to its filter.
    fn groups(&self) -> Markup {
        html! {
            ul.counts #groups {
                @for (group, n) in &self.paged.groups {
                    @if *n > 0 {
                        li {
                            a class={"badge g-" (group)} data-group=(group)
                                href=(link(&Query { state: group.to_string(), ..self.query.clone() }, 1))
                            { (n) " " (group) }
                        }
                    }
                }
            }
        }
    }

    /// The filter's choice of group.
    fn states(&self) -> Markup {
        let groups = self.paged.groups.iter().map(|(g, n)| (*g, *n));
        choice("state", &self.query.state, groups)
    }

    /// The filter's choice of project.
    fn projects(&self) -> Markup {
        let projects = self.paged.projects.iter().map(|(p, n)| (*p, *n));
        choice("project", &self.query.project, projects)
    }

    /// Which workspaces the page shows of those that match.
    fn shown(&self) -> Markup {
        let paged = self.paged;
        let shown = if paged.matching == paged.workspaces.len() {
            format!("{} shown", paged.matching)
        } else {
            let first = (paged.page - 1) * paged.per_page + 1;
            let last = first + paged.workspaces.len().saturating_sub(1);
            format!("{first}–{last} of {} shown", paged.matching)
        };
        html! { span.muted #shown { (shown) } }
    }

    fn workspaces(&self) -> Markup {
        html! {
            div.grid #workspaces {
                @for w in &self.paged.workspaces {
                    (card(w, self.now))
                }
            }
        }
    }

    fn pages(&self) -> Markup {
        let (paged, query) = (self.paged, self.query);
        html! {
            nav.pages #pages hidden[paged.pages < 2] {
                @if paged.pages > 1 {
                    @if paged.page > 1 {
                        a rel="prev" href=(link(query, paged.page - 1)) { "← previous" } " "
                    }
                    "page " (paged.page) " of " (paged.pages)
                    @if paged.page < paged.pages {
                        " " a rel="next" href=(link(query, paged.page + 1)) { "next →" }
                    }
                }
            }
        }
    }
}

/// A `<select name=NAME id=f-NAME>` of "all" and each of `options` with its count,
/// `chosen` selected.
fn choice<'o>(name: &str, chosen: &str, options: impl Iterator<Item = (&'o str, usize)>) -> Markup {
    html! {
        select name=(name) id={"f-" (name)} {
            option value="" selected[chosen.is_empty()] { "all" }
            @for (value, n) in options {
                option value=(value) selected[chosen == value] { (value) " (" (n) ")" }
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
            rollouts: Vec::new(),
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
            page.contains(r#"<noscript><meta http-equiv="refresh" content="10"></noscript>"#),
            "{page}"
        );
        assert!(
            page.contains(r#"<script src="page.js" defer></script>"#),
            "{page}"
        );
        assert!(page.contains(r#"<meta name="viewport""#), "{page}");
    }

    #[test]
    fn nothing_from_the_status_is_markup() {
        let page = render(&sample(), View::Leader, Timestamp::UNIX_EPOCH).into_string();
        assert_eq!(page.matches("<script").count(), 1, "{page}");
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

    /// 250 workspaces, one of each problem among them.
    fn many() -> Status {
        let mut status = sample();
        for i in 0..250 {
            status.workspaces.push(WorkspaceStatus {
                namespace: format!("p{}", i % 3),
                name: format!("ws-{i:03}"),
                project: format!("project-{}", i % 3),
                environment: "dev".into(),
                state: if i == 200 { "failed" } else { "ready" }.into(),
                ..Default::default()
            });
        }
        status
    }

    #[test]
    fn problems_come_first_and_pages_are_bounded() {
        let status = many();
        let first = paged(&status, &Query::default(), PAGE_SIZE);
        assert_eq!(first.matching, 252);
        assert_eq!((first.page, first.pages), (1, 3));
        assert_eq!(first.workspaces.len(), PAGE_SIZE);
        let names: Vec<&str> = first
            .workspaces
            .iter()
            .take(3)
            .map(|w| w.name.as_str())
            .collect();
        // Failed, then the missing Secret (also restart-pending), then the suspended one.
        assert_eq!(names, ["ws-200", "report", "etl"]);
        let groups: std::collections::BTreeMap<_, _> = first.groups.iter().copied().collect();
        assert_eq!(groups["failed"], 1);
        assert_eq!(groups["missing-secret"], 1);
        assert_eq!(groups["restart-pending"], 0);
        assert_eq!(groups["ready"], 249);
        assert_eq!(
            first
                .projects
                .iter()
                .find(|p| p.0 == "analytics")
                .map(|p| p.1),
            Some(2)
        );
        let last = paged(
            &status,
            &Query {
                page: 99,
                ..Query::default()
            },
            PAGE_SIZE,
        );
        assert_eq!((last.page, last.workspaces.len()), (3, 52));
    }

    #[test]
    fn the_page_filters_by_state_project_and_name() {
        let status = many();
        let query = |state: &str, project: &str, q: &str| Query {
            state: state.into(),
            project: project.into(),
            q: q.into(),
            ..Query::default()
        };
        let names = |q: &Query| -> Vec<String> {
            paged(&status, q, PAGE_SIZE)
                .workspaces
                .iter()
                .map(|w| w.name.clone())
                .collect()
        };
        assert_eq!(names(&query("failed", "", "")), ["ws-200"]);
        assert_eq!(names(&query("suspended", "", "")), ["etl"]);
        assert_eq!(
            names(&query("", "project-1", "WS-01")).len(),
            4,
            "ws-010..019 in project-1"
        );
        assert_eq!(
            names(&query("ready", "project-0", "ws-24")),
            ["ws-240", "ws-243", "ws-246", "ws-249"]
        );
        assert!(names(&query("ready", "nope", "")).is_empty());

        let now = Timestamp::UNIX_EPOCH;
        let page = render_page(&status, View::Leader, now, &query("", "", "")).into_string();
        assert_eq!(
            page.matches("<article class=\"workspace\"").count(),
            PAGE_SIZE
        );
        assert!(
            page.contains(r#"<title>berth · 252 workspaces</title>"#),
            "{page}"
        );
        assert!(page.contains(r#"href="?page=2">next →</a>"#), "{page}");
        assert!(
            page.contains(r#"data-group="failed" href="?state=failed">1 failed</a>"#),
            "{page}"
        );
        assert!(page.contains("1–100 of 252 shown"), "{page}");
        let page = render_page(
            &status,
            View::Leader,
            now,
            &Query {
                page: 2,
                ..query("ready", "", "a b&c")
            },
        )
        .into_string();
        assert!(page.contains(r#"value="a b&amp;c""#), "{page}");
        assert!(!page.contains("No workspaces yet."));
        let page = render_page(
            &status,
            View::Leader,
            now,
            &Query {
                page: 2,
                ..query("ready", "", "")
            },
        )
        .into_string();
        assert!(
            page.contains(r#"href="?state=ready">← previous</a>"#),
            "{page}"
        );
        assert!(
            page.contains(r#"<option value="ready" selected>ready (249)</option>"#),
            "{page}"
        );
        assert_eq!(
            link(&query("", "p q", "a&b"), 3),
            "?project=p%20q&q=a%26b&page=3"
        );
    }

    #[test]
    fn the_api_is_paged_the_same_way_and_tagged_by_what_it_shows() {
        let status = many();
        let body = api_body(
            &status,
            &Query {
                per_page: 100,
                page: 3,
                ..Query::default()
            },
        );
        assert_eq!(body["workspaces"].as_array().map(Vec::len), Some(52));
        assert_eq!(body["page"]["pages"], 3);
        assert_eq!(body["page"]["total"], 252);
        assert_eq!(body["counts"]["states"]["failed"], 1);
        assert_eq!(body["counts"]["projects"]["project-2"], 83);
        assert_eq!(body["source"], status.source);
        let all = api_body(&status, &Query::default());
        assert_eq!(all["workspaces"].as_array().map(Vec::len), Some(252));
        assert_eq!(all["workspaces"][0]["name"], "ws-200");

        let q = Query::default();
        let tag = etag(&status, View::Leader, &q, 0, "api");
        assert_eq!(tag, etag(&status.clone(), View::Leader, &q, 0, "api"));
        let page_two = Query {
            page: 2,
            ..Query::default()
        };
        assert_ne!(tag, etag(&status, View::Leader, &page_two, 0, "api"));
        assert_ne!(tag, etag(&status, View::Leader, &q, 1, "api"));
        assert_ne!(tag, etag(&status, View::FromLeader, &q, 0, "api"));
        assert_ne!(tag, etag(&status, View::Leader, &q, 0, "live"));
        let mut changed = status.clone();
        changed.workspaces[5].state = "failed".into();
        let changed_tag = etag(&changed, View::Leader, &q, 0, "api");
        assert_ne!(tag, changed_tag);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            format!("\"x\", {tag}").parse().unwrap(),
        );
        assert!(has_tag(&headers, &tag));
        assert!(!has_tag(&headers, &changed_tag));
    }

    /// Every part `/live` sends has its place, of the same id, in the page, and is what
    /// the page holds there for the same status; a changed status changes the parts it
    /// shows and no other.
    #[test]
    fn the_live_parts_are_the_pages_own() {
        let status = many();
        let now = Timestamp::UNIX_EPOCH;
        let query = Query {
            project: "project-1".into(),
            page: 1,
            ..Query::default()
        };
        let page = render_page(&status, View::Leader, now, &query).into_string();
        let live = render_live(&status, View::Leader, now, &query).into_string();
        assert!(
            live.starts_with(r#"<div id="live" data-title="berth · 252 workspaces">"#),
            "{live}"
        );
        let ids = [
            "view",
            "error",
            "revision",
            "counts",
            "groups",
            "f-state",
            "f-project",
            "shown",
            "workspaces",
            "pages",
        ];
        let parts = |html: &str| -> Vec<String> {
            ids.iter()
                .map(|id| {
                    let at = html
                        .find(&format!(r#" id="{id}""#))
                        .unwrap_or_else(|| panic!("no #{id} in {html}"));
                    let start = html[..at].rfind('<').unwrap();
                    let tag = html[start + 1..at].split(' ').next().unwrap();
                    let end = html[start..].find(&format!("</{tag}>")).unwrap();
                    html[start..start + end].to_string()
                })
                .collect()
        };
        assert_eq!(parts(&live), parts(&page));
        assert!(
            !live.contains("<form"),
            "the form stays as the user left it: {live}"
        );
        assert!(page.contains(&format!(
            r#"data-live-tag="{}""#,
            live_tag(&status, View::Leader, &query, now).replace('"', "&quot;")
        )));

        let mut changed = status.clone();
        // ws-001, of project-1: it moves to the top of the page.
        changed.workspaces[3].state = "failed".into();
        let after = parts(&render_live(&changed, View::Leader, now, &query).into_string());
        let before = parts(&live);
        let differ: Vec<&str> = ids
            .iter()
            .zip(before.iter().zip(&after))
            .filter(|(_, (b, a))| b != a)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(
            differ,
            ["counts", "groups", "f-state", "workspaces"],
            "{after:?}"
        );
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
