//! Credentials for git remotes: an https token (read from a file, an environment variable
//! or a key of a Kubernetes Secret at every use, so a rotated token is picked up) and ssh
//! keys with the server's host key checked against a known_hosts file. Secrets never reach
//! a log or an error: [`GitAuth::redact`] takes them out of any text about a remote.

use base64::Engine;
use git2::{CertificateCheckStatus, Cred, CredentialType, RemoteCallbacks};
use std::path::PathBuf;

/// Where the https token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    Env(String),
    /// A key of a Kubernetes Secret, read through the API server at every use.
    Secret(Box<SecretKey>),
}

/// A key of a Kubernetes Secret: `NAMESPACE/NAME[:KEY]`, the key `token` by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretKey {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

impl std::fmt::Display for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.key)
    }
}

impl std::str::FromStr for SecretKey {
    type Err = String;

    fn from_str(text: &str) -> Result<SecretKey, String> {
        let (path, key) = text.split_once(':').unwrap_or((text, "token"));
        match path.split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty()
                    && !name.is_empty()
                    && !name.contains('/')
                    && !key.is_empty() =>
            {
                Ok(SecretKey {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    key: key.to_string(),
                })
            }
            _ => Err(format!(
                "`{text}`: expected NAMESPACE/NAME[:KEY] (a Secret and its key, `token` by default)"
            )),
        }
    }
}

impl SecretKey {
    /// The key's value, trimmed, read now through `client`. The error is one line that
    /// names the Secret and the key, never a value.
    pub async fn read(&self, client: &kube::Client) -> Result<String, String> {
        use k8s_openapi::api::core::v1::Secret;
        let (namespace, name, key) = (&self.namespace, &self.name, &self.key);
        let api: kube::Api<Secret> = kube::Api::namespaced(client.clone(), namespace);
        let secret = api
            .get_opt(name)
            .await
            .map_err(|e| {
                let why = e.to_string().replace('\n', " ");
                format!("reading the Secret {namespace}/{name} (git token): {why}")
            })?
            .ok_or_else(|| format!("the Secret {namespace}/{name} (git token) does not exist"))?;
        let value = secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .ok_or_else(|| {
                format!("the Secret {namespace}/{name} (git token) has no key `{key}`")
            })?;
        let text = std::str::from_utf8(&value.0).map_err(|_| {
            format!("the key `{key}` of the Secret {namespace}/{name} (git token) is not text")
        })?;
        match text.trim() {
            "" => Err(format!(
                "the key `{key}` of the Secret {namespace}/{name} (git token) is empty"
            )),
            token => Ok(token.to_string()),
        }
    }
}

/// How to authenticate to a remote. The default is anonymous.
#[derive(Debug, Clone, Default)]
pub struct GitAuth {
    /// https: the token, sent as the password (GitHub, GitLab and Gitea accept that).
    pub token: Option<TokenSource>,
    /// https: the user name sent with the token (any non-empty name works on GitHub;
    /// GitLab suggests `oauth2`).
    pub username: Option<String>,
    /// ssh: the private key file (no passphrase).
    pub ssh_key: Option<PathBuf>,
    /// ssh: the known_hosts file the server's host key must be in. Without it, ssh is
    /// refused rather than trusting any host.
    pub known_hosts: Option<PathBuf>,
}

impl TokenSource {
    /// The token's current value (read now: a rotated token is picked up) from a file or
    /// the environment; a Secret's is read by [`TokenSource::read`]. The error names where
    /// it was looked for, never a value.
    pub fn value(&self) -> Result<Option<String>, String> {
        match self {
            TokenSource::Env(var) => std::env::var(var)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|_| format!("the environment variable {var} (git token) is not set")),
            TokenSource::File(path) => std::fs::read_to_string(path)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|e| format!("reading the git token file {}: {e}", path.display())),
            TokenSource::Secret(secret) => Err(format!(
                "the Secret {}/{} (git token) is read through the API server, not here",
                secret.namespace, secret.name
            )),
        }
    }

    /// The token's current value, wherever it is: a Secret through `client`.
    pub async fn read(&self, client: Option<&kube::Client>) -> Result<Option<String>, String> {
        match (self, client) {
            (TokenSource::Secret(secret), Some(client)) => secret.read(client).await.map(Some),
            _ => self.value(),
        }
    }
}

impl GitAuth {
    /// The token's current value, if one is configured and readable.
    fn token(&self) -> Result<Option<String>, String> {
        match &self.token {
            None => Ok(None),
            Some(source) => source.value(),
        }
    }

    /// libgit2 callbacks: credentials on request (once; libgit2 asks again after a
    /// rejection, which would loop), and the ssh host key check. `read` is the token as
    /// read before the fetch (a Secret's); without it, a file or variable is read when the
    /// server asks.
    ///
    /// `refused` gets why berth refused the server's host key: libgit2 puts its own words
    /// ("invalid or unknown remote ssh hostkey") in the fetch's error instead.
    pub fn callbacks(
        &self,
        read: Option<String>,
        refused: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    ) -> RemoteCallbacks<'static> {
        let mut callbacks = RemoteCallbacks::new();
        let auth = self.clone();
        let mut attempts = 0;
        callbacks.credentials(move |_url, user_from_url, allowed| {
            attempts += 1;
            if attempts > 1 {
                return Err(git2::Error::from_str(
                    "the remote rejected berth's credentials",
                ));
            }
            auth.credential(read.as_deref(), user_from_url, allowed)
        });
        let known_hosts = self.known_hosts.clone();
        callbacks.certificate_check(move |cert, host| {
            let result = check_host_key(known_hosts.as_deref(), cert, host);
            if let (Err(e), Ok(mut slot)) = (&result, refused.lock()) {
                *slot = Some(e.message().to_string());
            }
            result
        });
        callbacks
    }

    /// The credential of the kind the server allows: the ssh key, the token (`read`, else
    /// read now from its file or variable), or the user name alone.
    fn credential(
        &self,
        read: Option<&str>,
        user_from_url: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        if allowed.contains(CredentialType::SSH_KEY) {
            let user = user_from_url.unwrap_or("git");
            return match &self.ssh_key {
                Some(key) => Cred::ssh_key(user, None, key, None),
                None => Err(git2::Error::from_str(
                    "the remote wants an ssh key: pass --ssh-key",
                )),
            };
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            let token = match read {
                Some(token) => Ok(Some(token.to_string())),
                None => self.token(),
            };
            return match token {
                Ok(Some(token)) => {
                    let user = self
                        .username
                        .as_deref()
                        .or(user_from_url)
                        .unwrap_or("x-access-token");
                    Cred::userpass_plaintext(user, &token)
                }
                Ok(None) => Err(git2::Error::from_str(
                    "the remote wants a token: pass --git-token-file, --git-token-env or \
                     --git-token-secret",
                )),
                Err(why) => Err(git2::Error::from_str(&why)),
            };
        }
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(user_from_url.unwrap_or("git"));
        }
        Err(git2::Error::from_str(
            "the remote wants credentials berth cannot give",
        ))
    }

    /// `text` without credentials: URL user-info passwords and the token's value (a
    /// file's or variable's, read now).
    pub fn redact(&self, text: &str) -> String {
        self.redact_also(text, None)
    }

    /// [`GitAuth::redact`], and `read` (a token read before) taken out too.
    pub fn redact_also(&self, text: &str, read: Option<&str>) -> String {
        let mut out = redact_userinfo(text);
        let current = self.token().ok().flatten();
        for token in [current.as_deref(), read].into_iter().flatten() {
            if !token.is_empty() {
                out = out.replace(token, "***");
            }
        }
        out
    }
}

/// The ssh host key check against `known_hosts` (required); TLS certificates are
/// libgit2's to verify.
fn check_host_key(
    known_hosts: Option<&std::path::Path>,
    cert: &git2::cert::Cert<'_>,
    host: &str,
) -> Result<CertificateCheckStatus, git2::Error> {
    let Some(hostkey) = cert.as_hostkey() else {
        // TLS: libgit2 verifies the certificate chain and name itself.
        return Ok(CertificateCheckStatus::CertificatePassthrough);
    };
    let Some(key) = hostkey.hostkey() else {
        return Err(git2::Error::from_str("the ssh server sent no host key"));
    };
    let Some(path) = known_hosts else {
        return Err(git2::Error::from_str(
            "refusing ssh without --known-hosts: the server's host key cannot be checked",
        ));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| git2::Error::from_str(&format!("reading {}: {e}", path.display())))?;
    match check_known_host(&text, host, key) {
        HostCheck::Match => Ok(CertificateCheckStatus::CertificateOk),
        HostCheck::Mismatch => Err(git2::Error::from_str(&format!(
            "the host key of {host} does not match {}: refusing (possible \
             man-in-the-middle)",
            path.display()
        ))),
        HostCheck::Unknown => Err(git2::Error::from_str(&format!(
            "{host} is not in {}: add its key (ssh-keyscan {host})",
            path.display()
        ))),
    }
}

/// `scheme://user:password@host` → `scheme://user:***@host`.
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let end = rest
            .find(|c: char| c == '/' || c.is_whitespace())
            .unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            out.push_str(&rest[..colon]);
            out.push_str(":***");
            rest = &rest[at..];
        }
    }
    out.push_str(rest);
    out
}

#[derive(Debug, PartialEq, Eq)]
pub enum HostCheck {
    Match,
    Mismatch,
    Unknown,
}

/// Look `host`'s `key` (raw wire format) up in known_hosts text. Plain host patterns
/// (`host`, `host,alias`, `[host]:port`) are understood; hashed (`|1|…`) entries and
/// wildcards are not, and never match.
pub fn check_known_host(known_hosts: &str, host: &str, key: &[u8]) -> HostCheck {
    let mut seen = false;
    for line in known_hosts.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(_kind), Some(b64)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let names = hosts.split(',').any(|h| {
            h == host
                || h.strip_prefix('[')
                    .and_then(|h| h.split_once("]:"))
                    .is_some_and(|(name, _port)| name == host)
        });
        if !names {
            continue;
        }
        seen = true;
        if base64::engine::general_purpose::STANDARD
            .decode(b64)
            .is_ok_and(|k| k == key)
        {
            return HostCheck::Match;
        }
    }
    if seen {
        HostCheck::Mismatch
    } else {
        HostCheck::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_match_mismatch_and_unknown() {
        let key = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20abcdefghijabcdefghijabcdefghijab";
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        let file = format!(
            "# comment\ngit.example.com,10.0.0.1 ssh-ed25519 {b64}\n[other.example]:2222 ssh-ed25519 {b64}\n\
             evil.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
        );
        assert_eq!(
            check_known_host(&file, "git.example.com", key),
            HostCheck::Match
        );
        assert_eq!(check_known_host(&file, "10.0.0.1", key), HostCheck::Match);
        assert_eq!(
            check_known_host(&file, "other.example", key),
            HostCheck::Match
        );
        assert_eq!(
            check_known_host(&file, "evil.example", key),
            HostCheck::Mismatch
        );
        assert_eq!(
            check_known_host(&file, "nowhere.example", key),
            HostCheck::Unknown
        );
    }

    #[test]
    fn secret_keys_parse_with_a_default_key() {
        let key: SecretKey = "berth/berth-git".parse().unwrap();
        assert_eq!(
            key,
            SecretKey {
                namespace: "berth".into(),
                name: "berth-git".into(),
                key: "token".into()
            }
        );
        let key: SecretKey = "ns/git:password".parse().unwrap();
        assert_eq!((key.name.as_str(), key.key.as_str()), ("git", "password"));
        assert_eq!(key.to_string(), "ns/git:password");
        for bad in ["berth-git", "/x", "ns/", "ns/a/b", "ns/x:"] {
            assert!(bad.parse::<SecretKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn redaction_hides_url_passwords_and_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "ghp_SECRET123\n").unwrap();
        let auth = GitAuth {
            token: Some(TokenSource::File(file)),
            ..Default::default()
        };
        let text = "fetching https://bot:ghp_SECRET123@example.com/x.git failed: ghp_SECRET123";
        let out = auth.redact(text);
        assert!(!out.contains("SECRET"), "{out}");
        assert!(out.contains("https://bot:***@example.com/x.git"), "{out}");
        assert_eq!(
            redact_userinfo("ssh://git@host/x and https://h/y"),
            "ssh://git@host/x and https://h/y"
        );
    }
}
