//! Notify: what `berth watch` did with a revision, told where its author looks — a commit
//! status on the git host (Gitea/Forgejo, GitHub, GitLab; [`providers`]) and, for chat
//! tools, a generic webhook signed with HMAC-SHA256 ([`chat`]).
//!
//! Why a module of its own: the reconcile loop must never wait on a git host, and the
//! rule "exactly one final status per revision" must survive restarts and leader changes.
//! So the loop only hands events to a [`Notifier`] (never blocking), a task of its own
//! sends them, and the git host itself is the record: before the first status of a
//! revision the task reads that revision's statuses of berth's context, so a new leader
//! (or a restarted berth) finishes a revision its predecessor left `pending` and never
//! repeats one it finished.
//!
//! The states: `pending` when an apply of the revision starts; then one final state —
//! `success` once it is applied and every workspace it restarted is Ready, `failure` for a
//! revision that does not validate (its first diagnostic, `file:line`) or whose apply
//! fails (the cluster unchanged by it); `error` when the cluster cannot be reached. `error`
//! is not final: berth retries, and a revision that then applies turns `success`. A
//! revision that changes nothing gets no status. The one decision of the final state is
//! [`final_status`]; see there for the rollout hook.

pub mod chat;
pub mod http;
pub mod providers;

use super::status::WorkspaceStatus;
use crate::source::TokenSource;
use anyhow::Result;
use providers::{Provider, Request};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A commit status's state, as Gitea and GitHub name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Pending,
    Success,
    Failure,
    Error,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Success => "success",
            State::Failure => "failure",
            State::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        match text {
            "pending" => Some(State::Pending),
            "success" => Some(State::Success),
            "failure" => Some(State::Failure),
            "error" => Some(State::Error),
            _ => None,
        }
    }

    /// Whether the revision is done with: nothing is posted for it after this.
    pub fn is_final(self) -> bool {
        matches!(self, State::Success | State::Failure)
    }
}

/// One status on one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStatus {
    pub state: State,
    /// At most [`MAX_DESCRIPTION`] characters (GitHub's limit).
    pub description: String,
    /// The status page.
    pub target_url: Option<String>,
    /// `berth/<applyset>`: one per reconciler, so staging and production do not collide.
    pub context: String,
}

/// GitHub refuses longer descriptions; Gitea and GitLab take them, but a status line is
/// not where a whole error belongs (the status page has it).
pub const MAX_DESCRIPTION: usize = 140;

/// How a revision's apply came out, as the final status needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyResult {
    /// Applied; `summary` says what changed.
    Applied { summary: String },
    /// The plan had no changes.
    Unchanged,
    /// Refused before any apply: it does not validate (or is not signed as required).
    Refused { first: String },
    /// The apply (or the tenancy rule) refused it; nothing of it was pruned.
    Failed { first: String },
    /// The cluster could not be reached (or the cycle ran out of time).
    Unreachable { cause: String },
}

/// Whether the workspaces a revision restarted are up. Today it is worked out from the
/// status's workspace states ([`rollout_of`]); the health-gated rollout (#26) hands its own
/// verdict in here instead, and nothing else changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Every restarted workspace is Ready (or there were none).
    Done,
    /// Still waiting for these (`namespace/name`).
    Waiting(Vec<String>),
    /// The rollout gave up (a workspace not Ready in time, or rolled back).
    Failed(String),
}

/// What to tell the git host about a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Post this final (or, for `error`, retried) state.
    Post(State, String),
    /// Post `success` only if the host shows the revision `pending`: a predecessor started
    /// it and stopped before its final status.
    FinishIfPending(String),
    /// Not yet: the rollout is under way.
    Wait,
}

/// THE decision of a revision's final status, from the apply's outcome and the rollout of
/// the workspaces it restarted. Every final status goes through here.
pub fn final_status(result: &ApplyResult, rollout: &Rollout) -> Decision {
    match (result, rollout) {
        (ApplyResult::Refused { first }, _) | (ApplyResult::Failed { first }, _) => {
            Decision::Post(State::Failure, first.clone())
        }
        (ApplyResult::Unreachable { cause }, _) => Decision::Post(State::Error, cause.clone()),
        (_, Rollout::Waiting(_)) => Decision::Wait,
        (_, Rollout::Failed(why)) => Decision::Post(State::Failure, why.clone()),
        (ApplyResult::Applied { summary }, Rollout::Done) => {
            Decision::Post(State::Success, summary.clone())
        }
        (ApplyResult::Unchanged, Rollout::Done) => {
            Decision::FinishIfPending("applied; every restarted workspace is Ready".into())
        }
    }
}

/// How long restarted workspaces may take to be Ready before the revision is a `failure`.
pub const ROLLOUT_LIMIT: Duration = Duration::from_secs(600);

/// The rollout of `restarted` (`namespace/name`) from the workspaces' states: Ready or
/// suspended (no pod to wait for) is done; past `ROLLOUT_LIMIT` since `since`, failed.
pub fn rollout_of(restarted: &[String], workspaces: &[WorkspaceStatus], since: Instant) -> Rollout {
    let states: BTreeMap<String, &str> = workspaces
        .iter()
        .map(|w| (format!("{}/{}", w.namespace, w.name), w.state.as_str()))
        .collect();
    // A rollout that stopped fails the revision; one still holding restarts back for later
    // batches is not done, however Ready the restarted ones are.
    if let Some(w) = workspaces.iter().find(|w| w.state == "halted") {
        return Rollout::Failed(format!(
            "{}/{}: {}",
            w.namespace,
            w.name,
            w.reason.as_deref().unwrap_or("rollout halted")
        ));
    }
    let not_ready: Vec<String> = restarted
        .iter()
        .filter(|w| !matches!(states.get(*w), Some(&"ready") | Some(&"suspended") | None))
        .cloned()
        .collect();
    // Held restarts (a later batch, a paused project) have no time limit here: the gate
    // halts the rollout when a restarted workspace misses its deadline, and a pause lasts
    // until someone resumes it, with the revision `pending` all along.
    let held = workspaces
        .iter()
        .filter(|w| {
            w.pending_restart
                .as_deref()
                .is_some_and(|p| p.starts_with("rollout"))
        })
        .map(|w| format!("{}/{}", w.namespace, w.name));
    if !not_ready.is_empty() && since.elapsed() > ROLLOUT_LIMIT {
        return Rollout::Failed(format!(
            "not Ready after {}s: {}",
            ROLLOUT_LIMIT.as_secs(),
            not_ready.join(", ")
        ));
    }
    let waiting: Vec<String> = not_ready.into_iter().chain(held).collect();
    if waiting.is_empty() {
        Rollout::Done
    } else {
        Rollout::Waiting(waiting)
    }
}

/// Where commit statuses go.
#[derive(Clone)]
pub struct StatusTarget {
    pub provider: Arc<dyn Provider>,
    pub token: TokenSource,
}

impl std::fmt::Debug for StatusTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusTarget")
            .field("provider", &self.provider.name())
            .field("token", &self.token)
            .finish()
    }
}

/// What `berth watch` notifies, and where.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub status: Option<StatusTarget>,
    pub chat: Option<chat::ChatHook>,
    /// `berth/<applyset>`.
    pub context: String,
    /// The status page's URL, the statuses' link.
    pub target_url: Option<String>,
}

impl Config {
    pub fn is_empty(&self) -> bool {
        self.status.is_none() && self.chat.is_none()
    }
}

/// When a status is posted, given what the host shows for the revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// `pending`: unless it is pending or final already.
    Start,
    /// A final state: unless it is final already.
    Finish,
    /// `error`: unless it is final or `error` already.
    Trouble,
    /// `success` only over a `pending`.
    FinishIfPending,
}

#[derive(Debug)]
struct Event {
    commit: String,
    status: CommitStatus,
    rule: Rule,
}

/// The reconcile loop's side: never blocks, remembers what this process decided.
pub struct Notifier {
    tx: mpsc::UnboundedSender<Event>,
    config: Config,
    /// The revision applied whose restarted workspaces are awaited.
    awaiting: Option<Awaiting>,
    /// Revisions this process decided the final status of (the newest few).
    settled: VecDeque<String>,
    /// The revision whose apply started (pending sent) in this process.
    started: BTreeSet<String>,
}

struct Awaiting {
    commit: String,
    summary: String,
    restarted: Vec<String>,
    since: Instant,
}

impl Notifier {
    /// Start the sending task; it ends when `shutdown` is cancelled (after a bounded try
    /// at what is still queued).
    /// `kube` reads a token kept in a Kubernetes Secret.
    pub fn start(
        config: Config,
        kube: Option<kube::Client>,
        shutdown: CancellationToken,
    ) -> Result<(Notifier, tokio::task::JoinHandle<()>)> {
        let client = http::Client::new()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(sender(config.clone(), client, kube, rx, shutdown));
        Ok((
            Notifier {
                tx,
                config,
                awaiting: None,
                settled: VecDeque::new(),
                started: BTreeSet::new(),
            },
            task,
        ))
    }

    fn send(&self, commit: &str, state: State, description: &str, rule: Rule) {
        let status = CommitStatus {
            state,
            description: truncate(description),
            target_url: self.config.target_url.clone(),
            context: self.config.context.clone(),
        };
        let _ = self.tx.send(Event {
            commit: commit.to_string(),
            status,
            rule,
        });
    }

    fn is_settled(&self, commit: &str) -> bool {
        self.settled.iter().any(|c| c == commit)
    }

    fn settle(&mut self, commit: &str) {
        self.settled.push_back(commit.to_string());
        while self.settled.len() > 64 {
            self.settled.pop_front();
        }
        self.started.remove(commit);
        if self.awaiting.as_ref().is_some_and(|a| a.commit == commit) {
            self.awaiting = None;
        }
    }

    /// Whether a revision waits for its restarted workspaces to be Ready.
    pub fn is_awaiting(&self) -> bool {
        self.awaiting.is_some()
    }

    /// An apply of `commit` starts.
    pub fn applying(&mut self, commit: &str) {
        if self.is_settled(commit) || !self.started.insert(commit.to_string()) {
            return;
        }
        self.send(
            commit,
            State::Pending,
            &format!("applying {}", short(commit)),
            Rule::Start,
        );
    }

    /// How a cycle's apply of `commit` came out; `restarted` are the workspaces it
    /// restarted (`namespace/name`), `workspaces` the states the status now shows.
    pub fn finished(
        &mut self,
        commit: &str,
        result: ApplyResult,
        restarted: Vec<String>,
        workspaces: &[WorkspaceStatus],
    ) {
        if self.is_settled(commit) {
            return;
        }
        if let ApplyResult::Applied { summary } = &result {
            // A later apply of the same revision (a retry) adds its restarts.
            let mut all = restarted;
            if let Some(a) = self.awaiting.take().filter(|a| a.commit == commit) {
                all.extend(a.restarted);
                all.sort();
                all.dedup();
            }
            self.awaiting = Some(Awaiting {
                commit: commit.to_string(),
                summary: summary.clone(),
                restarted: all,
                since: Instant::now(),
            });
            self.progress(workspaces);
            return;
        }
        if result == ApplyResult::Unchanged
            && self.awaiting.as_ref().is_some_and(|a| a.commit == commit)
        {
            // The restarts of the apply before are still followed by `progress`.
            self.progress(workspaces);
            return;
        }
        let rollout = rollout_of(&restarted, workspaces, Instant::now());
        self.decide(commit, &result, &rollout);
    }

    /// The workspaces' states changed (every cycle): a revision awaiting its restarted
    /// workspaces may be done.
    pub fn progress(&mut self, workspaces: &[WorkspaceStatus]) {
        let Some(a) = &self.awaiting else { return };
        let rollout = rollout_of(&a.restarted, workspaces, a.since);
        let (commit, summary) = (a.commit.clone(), a.summary.clone());
        self.decide(&commit, &ApplyResult::Applied { summary }, &rollout);
    }

    fn decide(&mut self, commit: &str, result: &ApplyResult, rollout: &Rollout) {
        match final_status(result, rollout) {
            Decision::Wait => {}
            Decision::Post(State::Error, why) => {
                // Retried by the loop: the revision is not settled.
                self.started.remove(commit);
                self.send(commit, State::Error, &why, Rule::Trouble);
            }
            Decision::Post(state, why) => {
                self.send(commit, state, &why, Rule::Finish);
                self.settle(commit);
            }
            Decision::FinishIfPending(why) => {
                self.send(commit, State::Success, &why, Rule::FinishIfPending);
                self.settle(commit);
            }
        }
    }
}

/// The sending task: one event at a time, in order; a host that does not answer is tried
/// again with backoff (1 s doubling to 30 s), each event up to 10 times.
async fn sender(
    config: Config,
    client: http::Client,
    kube: Option<kube::Client>,
    mut rx: mpsc::UnboundedReceiver<Event>,
    shutdown: CancellationToken,
) {
    // The newest state of berth's context per revision, as the host shows it.
    let mut known: BTreeMap<String, Option<State>> = BTreeMap::new();
    let mut queue: VecDeque<(Event, u32)> = VecDeque::new();
    loop {
        if queue.is_empty() {
            tokio::select! {
                event = rx.recv() => match event {
                    Some(event) => queue.push_back((event, 0)),
                    None => return,
                },
                _ = shutdown.cancelled() => return,
            }
        }
        while let Ok(event) = rx.try_recv() {
            queue.push_back((event, 0));
        }
        let Some((event, tries)) = queue.pop_front() else {
            continue;
        };
        match deliver(&config, &client, kube.as_ref(), &mut known, &event).await {
            Ok(()) => {}
            Err(message) if tries < 10 => {
                let delay = Duration::from_secs((1u64 << tries.min(5)).min(30));
                tracing::warn!(revision = %event.commit, state = event.status.state.as_str(), error = %message, retry_in = ?delay, "posting the commit status failed");
                queue.push_front((event, tries + 1));
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            Err(message) => {
                tracing::error!(revision = %event.commit, state = event.status.state.as_str(), error = %message, "giving up on the commit status");
            }
        }
        if known.len() > 256
            && let Some(oldest) = known.keys().next().cloned()
        {
            known.remove(&oldest);
        }
    }
}

/// Post one event's status if its rule allows, given the host's record; then the chat
/// tool for what the host took (final states and errors).
async fn deliver(
    config: &Config,
    client: &http::Client,
    kube: Option<&kube::Client>,
    known: &mut BTreeMap<String, Option<State>>,
    event: &Event,
) -> Result<(), String> {
    let mut posted = true;
    if let Some(target) = &config.status {
        let token = match target.token.read(kube).await {
            Ok(Some(token)) => token,
            Ok(None) => return Err("no token for the commit statuses".into()),
            Err(why) => return Err(why),
        };
        let redact = |text: String| {
            if token.len() >= 4 {
                text.replace(&token, "***")
            } else {
                text
            }
        };
        let latest = match known.get(&event.commit) {
            Some(latest) => *latest,
            None => {
                let request = target.provider.list(&event.commit, &token);
                let answer = client.send(&request).await.map_err(|e| {
                    redact(format!(
                        "reading the statuses of {} on {}: {e:#}",
                        short(&event.commit),
                        target.provider.name()
                    ))
                })?;
                target.provider.latest(&answer, &event.status.context)
            }
        };
        let allowed = match event.rule {
            Rule::Start => !latest.is_some_and(|s| s.is_final() || s == State::Pending),
            Rule::Finish => !latest.is_some_and(State::is_final),
            Rule::Trouble => !latest.is_some_and(|s| s.is_final() || s == State::Error),
            Rule::FinishIfPending => latest == Some(State::Pending),
        };
        known.insert(event.commit.clone(), latest);
        posted = allowed;
        if allowed {
            let request: Request = target.provider.post(&event.commit, &event.status, &token);
            client.send(&request).await.map_err(|e| {
                redact(format!(
                    "posting `{}` on {} to {}: {e:#}",
                    event.status.state.as_str(),
                    short(&event.commit),
                    target.provider.name()
                ))
            })?;
            known.insert(event.commit.clone(), Some(event.status.state));
            tracing::info!(revision = %event.commit, state = event.status.state.as_str(), description = %event.status.description, "commit status posted");
        }
    } else if event.rule == Rule::FinishIfPending {
        // Without a host to ask, nothing says a predecessor left it pending.
        posted = false;
    }
    if posted
        && event.status.state != State::Pending
        && let Some(hook) = &config.chat
        && let Err(err) = client
            .send(&hook.request(&event.commit, &event.status))
            .await
    {
        // A chat message is best effort: the commit status is the record.
        tracing::warn!(error = %format!("{err:#}"), "the chat webhook failed");
    }
    Ok(())
}

fn truncate(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    if line.chars().count() <= MAX_DESCRIPTION {
        return line.to_string();
    }
    let mut out: String = line.chars().take(MAX_DESCRIPTION - 1).collect();
    out.push('…');
    out
}

fn short(commit: &str) -> String {
    commit.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(name: &str, state: &str) -> WorkspaceStatus {
        WorkspaceStatus {
            namespace: "ns".into(),
            name: name.into(),
            state: state.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_final_status_follows_the_outcome_and_the_rollout() {
        let applied = ApplyResult::Applied {
            summary: "applied".into(),
        };
        assert_eq!(
            final_status(&applied, &Rollout::Done),
            Decision::Post(State::Success, "applied".into())
        );
        assert_eq!(
            final_status(&applied, &Rollout::Waiting(vec!["ns/a".into()])),
            Decision::Wait
        );
        assert_eq!(
            final_status(&applied, &Rollout::Failed("ns/a not Ready".into())),
            Decision::Post(State::Failure, "ns/a not Ready".into())
        );
        let refused = ApplyResult::Refused {
            first: "repo.yaml:3:1: error: x".into(),
        };
        assert_eq!(
            final_status(&refused, &Rollout::Done),
            Decision::Post(State::Failure, "repo.yaml:3:1: error: x".into())
        );
        let down = ApplyResult::Unreachable {
            cause: "cannot reach".into(),
        };
        assert_eq!(
            final_status(&down, &Rollout::Done),
            Decision::Post(State::Error, "cannot reach".into())
        );
        assert!(matches!(
            final_status(&ApplyResult::Unchanged, &Rollout::Done),
            Decision::FinishIfPending(_)
        ));
        assert!(!State::Error.is_final() && State::Failure.is_final() && State::Success.is_final());
    }

    #[test]
    fn restarted_workspaces_must_be_ready() {
        let restarted = vec!["ns/a".to_string(), "ns/b".to_string()];
        let now = Instant::now();
        assert_eq!(
            rollout_of(&restarted, &[ws("a", "ready"), ws("b", "restarting")], now),
            Rollout::Waiting(vec!["ns/b".into()])
        );
        assert_eq!(
            rollout_of(&restarted, &[ws("a", "ready"), ws("b", "suspended")], now),
            Rollout::Done
        );
        assert_eq!(rollout_of(&[], &[ws("a", "starting")], now), Rollout::Done);
        let long_ago = now
            .checked_sub(ROLLOUT_LIMIT + Duration::from_secs(1))
            .unwrap_or(now);
        if long_ago < now {
            assert!(matches!(
                rollout_of(&restarted, &[ws("a", "restarting")], long_ago),
                Rollout::Failed(_)
            ));
            // A paused project (or a later batch) keeps the revision pending, however long.
            let mut paused = ws("c", "ready");
            paused.pending_restart =
                Some("rollout paused: `berth rollout resume` to continue".into());
            assert_eq!(
                rollout_of(
                    &restarted,
                    &[ws("a", "ready"), ws("b", "ready"), paused],
                    long_ago
                ),
                Rollout::Waiting(vec!["ns/c".into()])
            );
        }
        assert_eq!(truncate(&"x".repeat(200)).chars().count(), MAX_DESCRIPTION);
        assert_eq!(truncate("first line\nsecond"), "first line");
    }
}
