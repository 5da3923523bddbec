//! The git hosts' commit-status APIs as request shapes, one [`Provider`] per host. A
//! provider only builds requests and reads answers; [`super::http`] sends them. That keeps
//! each host's documented shape checkable in a unit test without the host, and keeps the
//! token in one place: the `Authorization`-like header of a [`Request`], which `Debug`
//! never prints.

use super::{CommitStatus, State};
use serde_json::{Value, json};
use std::fmt;

/// An HTTP request to a git host or a chat tool.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    pub method: &'static str,
    pub url: String,
    /// Headers that carry no secret.
    pub headers: Vec<(&'static str, String)>,
    /// The header that carries the credential, if any (name, value).
    pub auth: Option<(&'static str, String)>,
    pub body: Option<Vec<u8>>,
}

/// Never the credential: `Authorization: ***`.
impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &self.headers)
            .field("auth", &self.auth.as_ref().map(|(name, _)| (name, "***")))
            .field(
                "body",
                &self.body.as_ref().map(|b| String::from_utf8_lossy(b)),
            )
            .finish()
    }
}

impl Request {
    fn json(method: &'static str, url: String, body: Option<Value>) -> Request {
        let mut headers = vec![("accept", "application/json".to_string())];
        if body.is_some() {
            headers.push(("content-type", "application/json".to_string()));
        }
        Request {
            method,
            url,
            headers,
            auth: None,
            body: body.map(|b| b.to_string().into_bytes()),
        }
    }

    /// The body as JSON (for tests and logs of shapes).
    pub fn body_json(&self) -> Option<Value> {
        serde_json::from_slice(self.body.as_deref()?).ok()
    }
}

/// A git host that takes commit statuses.
pub trait Provider: Send + Sync {
    /// `gitea`, `github`, `gitlab`: for logs and errors.
    fn name(&self) -> &'static str;
    /// Set `status` on `commit`.
    fn post(&self, commit: &str, status: &CommitStatus, token: &str) -> Request;
    /// The statuses of `commit`, newest first as every host here answers.
    fn list(&self, commit: &str, token: &str) -> Request;
    /// The newest state of `context` in an answer of [`Provider::list`].
    fn latest(&self, answer: &Value, context: &str) -> Option<State>;
}

/// Which host, from `--commit-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// Gitea and Forgejo (Forgejo keeps Gitea's API).
    Gitea,
    GitHub,
    GitLab,
}

impl Host {
    pub fn parse(text: &str) -> Result<Host, String> {
        match text {
            "gitea" | "forgejo" => Ok(Host::Gitea),
            "github" => Ok(Host::GitHub),
            "gitlab" => Ok(Host::GitLab),
            other => Err(format!(
                "unknown commit-status host `{other}` (gitea, forgejo, github, gitlab)"
            )),
        }
    }

    /// The API root when none is given (GitHub and GitLab's public hosts).
    pub fn default_api(self) -> Option<&'static str> {
        match self {
            Host::Gitea => None,
            Host::GitHub => Some("https://api.github.com"),
            Host::GitLab => Some("https://gitlab.com"),
        }
    }

    /// The provider for repository `repo` (`owner/name`; GitLab: the project's full path)
    /// at `api` (Gitea and GitLab: the server's root URL; GitHub: the API root, e.g.
    /// `https://github.example.com/api/v3`).
    pub fn provider(self, api: &str, repo: &str) -> Box<dyn Provider> {
        let api = api.trim_end_matches('/').to_string();
        let repo = repo.trim_matches('/').to_string();
        match self {
            Host::Gitea => Box::new(Gitea { api, repo }),
            Host::GitHub => Box::new(GitHub { api, repo }),
            Host::GitLab => Box::new(GitLab { api, repo }),
        }
    }
}

/// Gitea/Forgejo: `POST /api/v1/repos/{owner}/{repo}/statuses/{sha}`, token in
/// `Authorization: token …`; states pending, success, error, failure, warning.
pub struct Gitea {
    api: String,
    repo: String,
}

impl Provider for Gitea {
    fn name(&self) -> &'static str {
        "gitea"
    }

    fn post(&self, commit: &str, status: &CommitStatus, token: &str) -> Request {
        let mut request = Request::json(
            "POST",
            format!("{}/api/v1/repos/{}/statuses/{commit}", self.api, self.repo),
            Some(json!({
                "state": status.state.as_str(),
                "target_url": status.target_url.clone().unwrap_or_default(),
                "description": status.description,
                "context": status.context,
            })),
        );
        request.auth = Some(("authorization", format!("token {token}")));
        request
    }

    fn list(&self, commit: &str, token: &str) -> Request {
        let mut request = Request::json(
            "GET",
            format!(
                "{}/api/v1/repos/{}/statuses/{commit}?sort=leastindex&limit=50",
                self.api, self.repo
            ),
            None,
        );
        request.auth = Some(("authorization", format!("token {token}")));
        request
    }

    fn latest(&self, answer: &Value, context: &str) -> Option<State> {
        // Gitea's own `status` field; `state` in older releases and Forgejo. Gitea's
        // default order is by creation second, which two statuses can share: by id.
        newest(answer, "context", context, |s| {
            s.get("status")
                .or_else(|| s.get("state"))
                .and_then(Value::as_str)
                .and_then(State::parse)
        })
    }
}

/// GitHub: `POST /repos/{owner}/{repo}/statuses/{sha}` (REST API 2022-11-28), token as
/// `Authorization: Bearer …`, a User-Agent required; states error, failure, pending,
/// success; `description` at most 140 characters.
pub struct GitHub {
    api: String,
    repo: String,
}

impl GitHub {
    fn request(
        &self,
        method: &'static str,
        url: String,
        body: Option<Value>,
        token: &str,
    ) -> Request {
        let mut request = Request::json(method, url, body);
        request.headers[0].1 = "application/vnd.github+json".into();
        request
            .headers
            .push(("x-github-api-version", "2022-11-28".into()));
        request.headers.push(("user-agent", "berth".into()));
        request.auth = Some(("authorization", format!("Bearer {token}")));
        request
    }
}

impl Provider for GitHub {
    fn name(&self) -> &'static str {
        "github"
    }

    fn post(&self, commit: &str, status: &CommitStatus, token: &str) -> Request {
        let mut body = json!({
            "state": status.state.as_str(),
            "description": status.description,
            "context": status.context,
        });
        if let Some(url) = &status.target_url {
            body["target_url"] = json!(url);
        }
        self.request(
            "POST",
            format!("{}/repos/{}/statuses/{commit}", self.api, self.repo),
            Some(body),
            token,
        )
    }

    fn list(&self, commit: &str, token: &str) -> Request {
        self.request(
            "GET",
            format!(
                "{}/repos/{}/commits/{commit}/statuses?per_page=100",
                self.api, self.repo
            ),
            None,
            token,
        )
    }

    fn latest(&self, answer: &Value, context: &str) -> Option<State> {
        newest(answer, "context", context, |s| {
            s.get("state")
                .and_then(Value::as_str)
                .and_then(State::parse)
        })
    }
}

/// GitLab: `POST /api/v4/projects/:id/statuses/:sha` with the project's URL-encoded path
/// as `:id`, the token in `PRIVATE-TOKEN`, the context as `name`; states pending, running,
/// success, failed, canceled — berth's `failure` and `error` are both `failed` there (the
/// description tells them apart).
pub struct GitLab {
    api: String,
    repo: String,
}

impl GitLab {
    fn project(&self) -> String {
        self.repo
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect()
    }
}

impl Provider for GitLab {
    fn name(&self) -> &'static str {
        "gitlab"
    }

    fn post(&self, commit: &str, status: &CommitStatus, token: &str) -> Request {
        let state = match status.state {
            State::Pending => "pending",
            State::Success => "success",
            State::Failure | State::Error => "failed",
        };
        let mut body = json!({
            "state": state,
            "name": status.context,
            "description": status.description,
        });
        if let Some(url) = &status.target_url {
            body["target_url"] = json!(url);
        }
        let mut request = Request::json(
            "POST",
            format!(
                "{}/api/v4/projects/{}/statuses/{commit}",
                self.api,
                self.project()
            ),
            Some(body),
        );
        request.auth = Some(("private-token", token.to_string()));
        request
    }

    fn list(&self, commit: &str, token: &str) -> Request {
        let mut request = Request::json(
            "GET",
            format!(
                "{}/api/v4/projects/{}/repository/commits/{commit}/statuses?all=true&per_page=100",
                self.api,
                self.project()
            ),
            None,
        );
        request.auth = Some(("private-token", token.to_string()));
        request
    }

    fn latest(&self, answer: &Value, context: &str) -> Option<State> {
        // GitLab lists oldest first: the newest is the one with the highest id.
        let list = answer.as_array()?;
        list.iter()
            .filter(|s| s.get("name").and_then(Value::as_str) == Some(context))
            .max_by_key(|s| s.get("id").and_then(Value::as_i64).unwrap_or_default())
            .and_then(|s| {
                let state = s.get("status").and_then(Value::as_str)?;
                match state {
                    "pending" | "running" => Some(State::Pending),
                    "success" => Some(State::Success),
                    // A `failed` status of berth's: final either way.
                    "failed" | "canceled" => Some(State::Failure),
                    _ => None,
                }
            })
    }
}

/// The newest entry of `answer` whose `key` is `context`: the highest `id`, else the first
/// (the hosts list newest first).
fn newest(
    answer: &Value,
    key: &str,
    context: &str,
    state: impl Fn(&Value) -> Option<State>,
) -> Option<State> {
    let mut best: Option<(i64, &Value)> = None;
    for s in answer.as_array()? {
        if s.get(key).and_then(Value::as_str) != Some(context) {
            continue;
        }
        let id = s.get("id").and_then(Value::as_i64).unwrap_or(i64::MIN);
        if best.is_none_or(|(b, _)| id > b) {
            best = Some((id, s));
        }
    }
    best.and_then(|(_, s)| state(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: State) -> CommitStatus {
        CommitStatus {
            state,
            description: "applied abc: 3 created".into(),
            target_url: Some("https://berth.example.com/".into()),
            context: "berth/prod".into(),
        }
    }

    const SHA: &str = "6dcb09b5b57875f334f61aebed695e2e4193db5e";

    /// Gitea's API (swagger `CreateStatusOption`, `POST /repos/{owner}/{repo}/statuses/{sha}`).
    #[test]
    fn gitea_shapes() {
        let p = Host::parse("forgejo")
            .unwrap()
            .provider("http://git.local:3000/", "org/platform");
        let r = p.post(SHA, &status(State::Failure), "t0ken");
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.url,
            format!("http://git.local:3000/api/v1/repos/org/platform/statuses/{SHA}")
        );
        assert_eq!(r.auth, Some(("authorization", "token t0ken".into())));
        assert_eq!(
            r.body_json().unwrap(),
            json!({"state": "failure", "target_url": "https://berth.example.com/",
                   "description": "applied abc: 3 created", "context": "berth/prod"})
        );
        assert!(
            !format!("{r:?}").contains("t0ken"),
            "Debug shows no token: {r:?}"
        );
        let l = p.list(SHA, "t0ken");
        assert_eq!(l.method, "GET");
        assert!(l.url.starts_with(&format!(
            "http://git.local:3000/api/v1/repos/org/platform/statuses/{SHA}?"
        )));
        let answer = json!([
            {"id": 3, "status": "success", "context": "other"},
            {"id": 2, "status": "pending", "context": "berth/prod"},
            {"id": 1, "status": "error", "context": "berth/prod"},
        ]);
        assert_eq!(p.latest(&answer, "berth/prod"), Some(State::Pending));
        assert_eq!(p.latest(&answer, "berth/dev"), None);
    }

    /// GitHub's REST API: "Create a commit status" (2022-11-28).
    #[test]
    fn github_shapes() {
        let p = Host::GitHub.provider(Host::GitHub.default_api().unwrap(), "octo/platform");
        let r = p.post(SHA, &status(State::Pending), "ghp_x");
        assert_eq!(
            r.url,
            format!("https://api.github.com/repos/octo/platform/statuses/{SHA}")
        );
        assert_eq!(r.auth, Some(("authorization", "Bearer ghp_x".into())));
        let header = |name: &str| {
            r.headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("accept"), Some("application/vnd.github+json"));
        assert_eq!(header("x-github-api-version"), Some("2022-11-28"));
        assert!(
            header("user-agent").is_some(),
            "GitHub refuses requests without a User-Agent"
        );
        assert_eq!(
            r.body_json().unwrap(),
            json!({"state": "pending", "target_url": "https://berth.example.com/",
                   "description": "applied abc: 3 created", "context": "berth/prod"})
        );
        for state in [State::Success, State::Failure, State::Error] {
            let body = p.post(SHA, &status(state), "x").body_json().unwrap();
            assert!(["success", "failure", "error"].contains(&body["state"].as_str().unwrap()));
        }
        let l = p.list(SHA, "ghp_x");
        assert!(l.url.starts_with(&format!(
            "https://api.github.com/repos/octo/platform/commits/{SHA}/statuses"
        )));
        let answer = json!([{"id": 9, "state": "success", "context": "berth/prod"}, {"id": 8, "state": "pending", "context": "berth/prod"}]);
        assert_eq!(p.latest(&answer, "berth/prod"), Some(State::Success));
    }

    /// GitLab's "Set the pipeline status of a commit" (`POST /projects/:id/statuses/:sha`).
    #[test]
    fn gitlab_shapes() {
        let p = Host::GitLab.provider("https://gitlab.example.com", "group/sub/platform");
        let r = p.post(SHA, &status(State::Error), "glpat-x");
        assert_eq!(
            r.url,
            format!(
                "https://gitlab.example.com/api/v4/projects/group%2Fsub%2Fplatform/statuses/{SHA}"
            )
        );
        assert_eq!(r.auth, Some(("private-token", "glpat-x".into())));
        assert_eq!(
            r.body_json().unwrap(),
            json!({"state": "failed", "name": "berth/prod", "target_url": "https://berth.example.com/",
                   "description": "applied abc: 3 created"})
        );
        assert_eq!(
            p.post(SHA, &status(State::Pending), "x")
                .body_json()
                .unwrap()["state"],
            "pending"
        );
        assert_eq!(
            p.post(SHA, &status(State::Success), "x")
                .body_json()
                .unwrap()["state"],
            "success"
        );
        let l = p.list(SHA, "x");
        assert!(
            l.url
                .contains("/api/v4/projects/group%2Fsub%2Fplatform/repository/commits/")
        );
        let answer = json!([
            {"id": 1, "status": "running", "name": "berth/prod"},
            {"id": 5, "status": "success", "name": "berth/prod"},
            {"id": 7, "status": "failed", "name": "ci"},
        ]);
        assert_eq!(p.latest(&answer, "berth/prod"), Some(State::Success));
        assert!(Host::parse("bitbucket").is_err());
    }
}
