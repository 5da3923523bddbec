//! Signed commits: with `berth watch --verify-commits`, a revision is applied only when its
//! commit carries an SSH signature by a key of an allowed-signers file — the check
//! `git verify-commit` makes with `gpg.format=ssh` and `gpg.ssh.allowedSignersFile`. It is
//! done here, in-process (RustCrypto's `ssh-key` verifies the SSHSIG), rather than by running
//! `ssh-keygen` as git does: the image needs no OpenSSH, and no verdict is read back from
//! another program's words.
//!
//! What is checked, in this order, each failure with its own reason:
//! 1. the commit has a signature (git's `gpgsig` header), and it is an SSH one: an OpenPGP
//!    or X.509 signature is refused by name (berth does not verify those);
//! 2. it was made for the namespace `git` (what `git commit -S` signs for);
//! 3. it verifies, over the commit as git signs it (the object without its `gpgsig`);
//! 4. its key is on a line of the allowed-signers file (ssh-keygen(1), "ALLOWED SIGNERS")
//!    whose `namespaces="…"`, if any, allow `git`, and whose `valid-after`/`valid-before`,
//!    if any, hold at the commit's committer time — the time git hands to
//!    `ssh-keygen -Overify-time`. The committer date is written by whoever signs, so a
//!    validity window limits when a key was meant to sign, not what a stolen key can claim:
//!    to revoke a key, delete its line;
//! 5. only with [`SignaturePolicy::signer_must_be_committer`] (git does not check this): the
//!    committer's e-mail is one of that line's principals.
//!
//! Lines berth cannot honour are refused, not skipped: `cert-authority` (signatures by SSH
//! certificates), an option OpenSSH does not know, a key berth cannot read. A file with such
//! a line refuses every revision, naming the line, until it is fixed — a check that could
//! silently accept less or more than its file says is worse than none. Times without `Z` are
//! read as UTC (OpenSSH reads them in the local time zone; berth's container has UTC).
//! `gpg.ssh.revocationFile` (a KRL) is not read: remove a revoked key's line instead.
//!
//! Only the commit to be applied is checked — the head of the followed branch, the commit a
//! tag points at (not the tag's own signature), a pinned commit — as Flux's GitRepository
//! `verify` does for HEAD: its ancestors are not. What the head's tree holds is what is
//! applied, and whoever signs the head vouches for it whole, merges included.
//!
//! Nothing here writes key material anywhere: a reason names a key by its type and SHA-256
//! fingerprint, the form `ssh-keygen -l` prints, never by its base64 text or a signature.

use anyhow::{Context, Result, bail};
use git2::{ErrorCode, Oid, Repository};
use k8s_openapi::jiff::Timestamp;
use ssh_key::{HashAlg, PublicKey, SshSig};
use std::fmt;
use std::path::{Path, PathBuf};

/// The namespace git signs commits for (`ssh-keygen -Y sign -n git`).
pub const NAMESPACE: &str = "git";

/// Which signatures a revision must carry to be applied (`--verify-commits`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignaturePolicy {
    /// The allowed-signers file, re-read at every check: an edited ConfigMap takes effect
    /// at the next fetch.
    pub allowed_signers: PathBuf,
    /// Also require the committer's e-mail to be one of the signing key's principals.
    pub signer_must_be_committer: bool,
}

/// Who signed an accepted revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The principals of the key's line in the allowed-signers file (`alice@example.com`).
    pub principals: String,
    /// The key, by type and fingerprint (`ssh-ed25519 SHA256:…`).
    pub key: String,
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.principals, self.key)
    }
}

/// What the signature check said about a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by an allowed key.
    Signed(Signer),
    /// Not to be applied, and why (a sentence about the commit: "it has no signature").
    Refused(String),
}

/// One line of an allowed-signers file.
#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    /// A pattern-list (`*`, `?`, `!`), as OpenSSH matches principals.
    principals: String,
    namespaces: Option<String>,
    valid_after: Option<(i64, String)>,
    valid_before: Option<(i64, String)>,
    key: PublicKey,
}

/// An allowed-signers file, read whole: every line is understood, or the file is an error.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    origin: String,
    entries: Vec<Entry>,
}

impl AllowedSigners {
    pub fn read(path: &Path) -> Result<AllowedSigners> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the allowed signers file {}", path.display()))?;
        AllowedSigners::parse(&text, &path.display().to_string())
    }

    /// Parse the text of an allowed-signers file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<AllowedSigners> {
        let mut entries = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            match parse_line(line, number) {
                Ok(Some(entry)) => entries.push(entry),
                Ok(None) => {}
                Err(why) => bail!("{origin}:{number}: {why}"),
            }
        }
        Ok(AllowedSigners {
            origin: origin.to_string(),
            entries,
        })
    }

    /// How many keys the file lists.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// `principals [options] keytype base64 [comment]`, or a blank or `#` line (`None`).
fn parse_line(line: &str, number: usize) -> Result<Option<Entry>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (principals, rest) = match line.strip_prefix('"') {
        Some(quoted) => {
            let end = quoted
                .find('"')
                .ok_or("the quoted principals have no closing `\"`")?;
            (&quoted[..end], &quoted[end + 1..])
        }
        None => line.split_at(line.find(char::is_whitespace).unwrap_or(line.len())),
    };
    if principals.is_empty() {
        return Err("no principals".into());
    }
    let rest = rest.trim_start();
    if rest.is_empty() {
        return Err("no public key after the principals".into());
    }
    let (options, key) = match PublicKey::from_openssh(rest) {
        Ok(key) => ("", key),
        Err(_) => {
            // Not a key: options first, then the key.
            let end = unquoted_whitespace(rest).unwrap_or(rest.len());
            let (options, after) = (&rest[..end], rest[end..].trim_start());
            match PublicKey::from_openssh(after) {
                Ok(key) => (options, key),
                Err(_) if options.contains('=') => {
                    let found = after.split_whitespace().next().map(key_type);
                    return Err(format!(
                        "no public key berth can read after the options (found {})",
                        found.as_deref().unwrap_or("nothing")
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "{} is not a public key berth can read (ssh-ed25519, \
                         ecdsa-sha2-nistp256/384/521, ssh-rsa, or their sk- variants)",
                        key_type(options)
                    ));
                }
            }
        }
    };
    let mut entry = Entry {
        line: number,
        principals: principals.to_string(),
        namespaces: None,
        valid_after: None,
        valid_before: None,
        key,
    };
    apply_options(&mut entry, options)?;
    Ok(Some(entry))
}

/// A word where a key type should be, for an error: itself if it looks like a key type
/// (`ssh-dss`), else not (it may be a key's base64, which no message repeats).
fn key_type(word: &str) -> String {
    let plain = word.len() <= 64
        && word
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-@.".contains(&b));
    if plain {
        format!("`{word}`")
    } else {
        "a word".to_string()
    }
}

/// Where the first whitespace outside double quotes is.
fn unquoted_whitespace(text: &str) -> Option<usize> {
    let mut quoted = false;
    text.char_indices().find_map(|(i, c)| {
        if c == '"' {
            quoted = !quoted;
        }
        (!quoted && c.is_whitespace()).then_some(i)
    })
}

/// `cert-authority`, `namespaces="…"`, `valid-after="…"`, `valid-before="…"`, comma-separated.
fn apply_options(entry: &mut Entry, options: &str) -> Result<(), String> {
    let mut rest = options;
    while !rest.is_empty() {
        // One option: up to the first comma outside quotes.
        let mut quoted = false;
        let end = rest
            .char_indices()
            .find_map(|(i, c)| {
                if c == '"' {
                    quoted = !quoted;
                }
                (!quoted && c == ',').then_some(i)
            })
            .unwrap_or(rest.len());
        let option = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or_default();
        if option == "cert-authority" {
            return Err(
                "`cert-authority`: signatures by SSH certificates are not supported; list the \
                 signers' own keys"
                    .into(),
            );
        }
        let Some((name, value)) = option.split_once('=') else {
            return Err(format!("unknown option `{option}`"));
        };
        let known = ["namespaces", "valid-after", "valid-before"];
        if !known.contains(&name) {
            return Err(format!(
                "unknown option `{name}` (berth reads namespaces, valid-after, valid-before)"
            ));
        }
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .filter(|v| !v.contains('"'))
            .ok_or_else(|| {
                format!("{name}= needs its value in double quotes, as ssh-keygen does")
            })?;
        let twice = || format!("{name} is given twice");
        match name {
            "namespaces" => {
                if entry.namespaces.replace(value.to_string()).is_some() {
                    return Err(twice());
                }
            }
            "valid-after" => {
                if entry
                    .valid_after
                    .replace((parse_time(value)?, value.to_string()))
                    .is_some()
                {
                    return Err(twice());
                }
            }
            _ => {
                if entry
                    .valid_before
                    .replace((parse_time(value)?, value.to_string()))
                    .is_some()
                {
                    return Err(twice());
                }
            }
        }
    }
    Ok(())
}

/// `YYYYMMDD`, `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, optionally ending in `Z`: seconds since
/// the epoch, read as UTC.
fn parse_time(text: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "`{text}` is not a time (YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS, optionally with Z)"
        )
    };
    let digits = text.strip_suffix('Z').unwrap_or(text);
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let field = |from: usize, to: usize| -> i64 {
        digits
            .get(from..to)
            .and_then(|d| d.parse().ok())
            .unwrap_or(0)
    };
    let (year, month, day) = (field(0, 4), field(4, 6), field(6, 8));
    let (hour, minute, second) = (field(8, 10), field(10, 12), field(12, 14));
    let date = k8s_openapi::jiff::civil::DateTime::new(
        year as i16,
        month as i8,
        day as i8,
        hour as i8,
        minute as i8,
        second as i8,
        0,
    )
    .map_err(|_| bad())?;
    date.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp().as_second())
        .map_err(|_| bad())
}

/// OpenSSH's `match_pattern_list`: comma-separated patterns with `*` and `?`; a pattern
/// starting with `!` that matches makes the whole list fail.
fn matches_list(text: &str, list: &str) -> bool {
    let mut positive = false;
    for pattern in list.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if wildcard(text.as_bytes(), pattern.as_bytes()) {
            if negated {
                return false;
            }
            positive = true;
        }
    }
    positive
}

/// `*` matches any run of bytes, `?` any one byte.
fn wildcard(text: &[u8], pattern: &[u8]) -> bool {
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            t += 1;
            p += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Check the signature of commit `oid` against `policy` (reading its allowed-signers file).
pub fn verify_commit(repo: &Repository, oid: Oid, policy: &SignaturePolicy) -> Verdict {
    let signers = match AllowedSigners::read(&policy.allowed_signers) {
        Ok(signers) => signers,
        Err(err) => {
            return Verdict::Refused(format!("its signature cannot be checked: {err:#}"));
        }
    };
    match check(repo, oid, &signers, policy.signer_must_be_committer) {
        Ok(signer) => Verdict::Signed(signer),
        Err(why) => Verdict::Refused(why),
    }
}

/// The check itself, against allowed signers already read.
///
/// Kept in one piece: the SSHSIG checks in the order of the protocol
/// (PROTOCOL.sshsig) and of git's own verification, each refusing with its own reason.
fn check(
    repo: &Repository,
    oid: Oid,
    signers: &AllowedSigners,
    signer_must_be_committer: bool,
) -> Result<Signer, String> {
    let commit = repo
        .find_commit(oid)
        .map_err(|e| format!("commit {oid} cannot be read: {}", e.message()))?;
    let (signature, signed) = match repo.extract_signature(&oid, None) {
        Ok(pair) => pair,
        Err(e) if e.code() == ErrorCode::NotFound => return Err("it has no signature".into()),
        Err(e) => return Err(format!("its signature cannot be read: {}", e.message())),
    };
    let armored = String::from_utf8_lossy(&signature);
    let armored = armored.trim();
    if armored.starts_with("-----BEGIN PGP ") {
        return Err(
            "it is signed with OpenPGP, which berth does not verify: sign with an SSH key \
             (git config gpg.format ssh)"
                .into(),
        );
    }
    if !armored.starts_with("-----BEGIN SSH SIGNATURE-----") {
        return Err(
            "its signature is neither SSH nor OpenPGP (X.509?): berth verifies SSH signatures only"
                .into(),
        );
    }
    let sig =
        SshSig::from_pem(armored).map_err(|e| format!("its SSH signature cannot be read ({e})"))?;
    if sig.namespace() != NAMESPACE {
        return Err(format!(
            "its signature was made for the namespace `{}`, not `{NAMESPACE}` (a signature \
             for something else, not for a commit)",
            sig.namespace()
        ));
    }
    let key = PublicKey::new(sig.public_key().clone(), "");
    let named = format!(
        "{} key {}",
        key.algorithm(),
        key.fingerprint(HashAlg::Sha256)
    );
    key.verify(NAMESPACE, &signed, &sig).map_err(|_| {
        format!(
            "its signature by {named} does not verify: the commit was changed after it was \
             signed, or the signature is damaged"
        )
    })?;

    let committed = commit.committer().when().seconds();
    let committer = commit.committer().email().ok().map(str::to_string);
    let mut reasons = Vec::new();
    for entry in signers
        .entries
        .iter()
        .filter(|e| e.key.key_data() == sig.public_key())
    {
        let at = format!("{}:{}", signers.origin, entry.line);
        let whose = format!("{named} of {}", entry.principals);
        if let Some(namespaces) = entry
            .namespaces
            .as_deref()
            .filter(|n| !matches_list(NAMESPACE, n))
        {
            reasons.push(format!(
                "{whose} may not sign for `{NAMESPACE}` ({at}: namespaces=\"{namespaces}\")"
            ));
            continue;
        }
        let time = || {
            Timestamp::from_second(committed)
                .map(|t| t.to_string())
                .unwrap_or_else(|_| committed.to_string())
        };
        if let Some((_, text)) = entry.valid_after.as_ref().filter(|(a, _)| committed < *a) {
            reasons.push(format!(
                "{whose} was not valid yet at the commit's time {} ({at}: valid-after=\"{text}\")",
                time()
            ));
            continue;
        }
        if let Some((_, text)) = entry.valid_before.as_ref().filter(|(b, _)| committed > *b) {
            reasons.push(format!(
                "{whose} had expired at the commit's time {} ({at}: valid-before=\"{text}\")",
                time()
            ));
            continue;
        }
        if signer_must_be_committer
            && !committer
                .as_deref()
                .is_some_and(|email| matches_list(email, &entry.principals))
        {
            reasons.push(format!(
                "its committer {} is not a principal of {named} ({at}: {})",
                committer.as_deref().unwrap_or("(not UTF-8)"),
                entry.principals
            ));
            continue;
        }
        return Ok(Signer {
            principals: entry.principals.clone(),
            key: format!("{} {}", key.algorithm(), key.fingerprint(HashAlg::Sha256)),
        });
    }
    if reasons.is_empty() {
        return Err(format!(
            "it is signed by {named}, which {} does not list",
            signers.origin
        ));
    }
    Err(reasons.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A public key (RustCrypto's test vector): parsing needs no key pair.
    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti";

    fn parse(text: &str) -> Result<AllowedSigners, String> {
        AllowedSigners::parse(text, "signers").map_err(|e| e.to_string())
    }

    #[test]
    fn allowed_signers_lines_are_read_as_ssh_keygen_reads_them() {
        let text = format!(
            "# the platform team\n\n\
             alice@example.com {KEY} alice's laptop\n\
             \"bob smith,b@example.com\" namespaces=\"git,file\",valid-after=\"20240101\",valid-before=\"20250101120000Z\" {KEY}\n\
             \x20 *@example.com,!mallory@example.com valid-before=\"202601011200\" {KEY}\n"
        );
        let signers = parse(&text).unwrap();
        assert_eq!(signers.len(), 3);
        let [alice, bob, anyone] = &signers.entries[..] else {
            panic!("three entries")
        };
        assert_eq!(
            (alice.line, alice.principals.as_str()),
            (3, "alice@example.com")
        );
        assert_eq!(alice.key.comment(), "alice's laptop");
        assert!(alice.namespaces.is_none() && alice.valid_after.is_none());
        assert_eq!(bob.principals, "bob smith,b@example.com");
        assert_eq!(bob.namespaces.as_deref(), Some("git,file"));
        assert_eq!(bob.valid_after.as_ref().map(|v| v.0), Some(1_704_067_200));
        assert_eq!(bob.valid_before.as_ref().map(|v| v.0), Some(1_735_732_800));
        assert_eq!(anyone.line, 5);
        assert_eq!(
            anyone.valid_before.as_ref().map(|v| v.0),
            Some(1_767_268_800)
        );
        assert!(matches_list("carol@example.com", &anyone.principals));
        assert!(!matches_list("mallory@example.com", &anyone.principals));
    }

    #[test]
    fn lines_berth_cannot_honour_refuse_the_file_naming_the_line() {
        for (line, expected) in [
            (
                format!("ca@example.com cert-authority {KEY}"),
                "signers:2: `cert-authority`",
            ),
            (
                format!("a@example.com no-touch-required {KEY}"),
                "signers:2: unknown option `no-touch-required`",
            ),
            (
                format!("a@example.com verify-required=\"x\" {KEY}"),
                "signers:2: unknown option `verify-required`",
            ),
            (
                format!("a@example.com namespaces=git {KEY}"),
                "namespaces= needs its value in double quotes",
            ),
            (
                format!("a@example.com namespaces=\"git\",namespaces=\"x\" {KEY}"),
                "namespaces is given twice",
            ),
            (
                format!("a@example.com valid-after=\"2024-01-01\" {KEY}"),
                "`2024-01-01` is not a time",
            ),
            (
                format!("a@example.com valid-before=\"20240231\" {KEY}"),
                "`20240231` is not a time",
            ),
            (
                "a@example.com".to_string(),
                "no public key after the principals",
            ),
            (format!("\"a@example.com {KEY}"), "no closing"),
            (
                "a@example.com ssh-dss AAAAB3NzaC1kc3MAAACBAP".to_string(),
                "`ssh-dss` is not a public key",
            ),
            (
                "a@example.com namespaces=\"git\" ssh-rsa AAAAnotbase64".to_string(),
                "found `ssh-rsa`",
            ),
        ] {
            let text = format!("ok@example.com {KEY}\n{line}\n");
            let err = parse(&text).expect_err(&line);
            assert!(err.contains(expected), "{line}: {err}");
        }
        // A key's base64 is never repeated in an error.
        let base64 = KEY.split(' ').nth(1).unwrap();
        let err = parse(&format!("a@example.com {base64}\n")).unwrap_err();
        assert!(!err.contains(base64), "{err}");
        assert!(err.contains("a word is not a public key"), "{err}");
    }

    #[test]
    fn patterns_and_times_as_openssh_has_them() {
        assert!(matches_list("git", "git"));
        assert!(matches_list("git", "file,g?t"));
        assert!(matches_list("git", "*"));
        assert!(!matches_list("git", "file"));
        assert!(!matches_list("git", "*,!git"));
        assert!(!matches_list("gitx", "git"));
        assert!(matches_list("a@b.example.com", "*@*.example.com"));
        assert!(!matches_list("a@example.org", "*@*.example.com"));
        assert_eq!(parse_time("19700101"), Ok(0));
        assert_eq!(parse_time("19700101000130Z"), Ok(90));
        assert_eq!(parse_time("197001010002"), Ok(120));
        assert!(parse_time("1970010100").is_err());
        assert!(parse_time("19701301").is_err());
    }

    /// A temporary repository, keys made by ssh-keygen and commits signed by git through it.
    struct Repo {
        dir: tempfile::TempDir,
    }

    impl Repo {
        fn new() -> Repo {
            let repo = Repo {
                dir: tempfile::tempdir().unwrap(),
            };
            std::fs::create_dir(repo.work()).unwrap();
            repo.git(&["init", "-q"], &[]);
            repo
        }

        fn work(&self) -> PathBuf {
            self.dir.path().join("work")
        }

        fn git(&self, args: &[&str], env: &[(&str, &str)]) -> String {
            let out = Command::new("git")
                .arg("-C")
                .arg(self.work())
                .args([
                    "-c",
                    "user.name=Alice",
                    "-c",
                    "user.email=alice@example.com",
                ])
                .args(["-c", "commit.gpgsign=false", "-c", "gpg.format=ssh"])
                .args(args)
                .envs(env.iter().copied())
                .output()
                .expect("running git");
            assert!(
                out.status.success(),
                "git {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }

        /// A new ed25519 key: its private key file and its public line.
        fn key(&self, name: &str) -> (PathBuf, String) {
            self.key_of(name, &["-t", "ed25519"])
        }

        /// A new key of the type `kind` says (`-t rsa`, `-t ecdsa -b 384`).
        fn key_of(&self, name: &str, kind: &[&str]) -> (PathBuf, String) {
            let path = self.dir.path().join(name);
            let out = Command::new("ssh-keygen")
                .arg("-q")
                .args(kind)
                .args(["-N", "", "-C", name, "-f"])
                .arg(&path)
                .output()
                .expect("running ssh-keygen");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
            (path, public.trim().to_string())
        }

        /// A commit (signed with `key` if given, through `program` if given) at `date`.
        fn commit(&self, key: Option<&Path>, program: Option<&Path>, date: &str) -> Oid {
            let mut args = vec![
                "-c".to_string(),
                format!(
                    "gpg.ssh.program={}",
                    program.map_or("ssh-keygen".into(), |p| p.display().to_string())
                ),
            ];
            args.push("commit".into());
            args.extend(["-q", "--allow-empty", "-m", "change"].map(String::from));
            match key {
                Some(key) => {
                    args.insert(0, format!("user.signingkey={}", key.display()));
                    args.insert(0, "-c".into());
                    args.push("-S".into());
                }
                None => args.push("--no-gpg-sign".into()),
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            self.git(
                &args,
                &[("GIT_COMMITTER_DATE", date), ("GIT_AUTHOR_DATE", date)],
            );
            Oid::from_str(&self.git(&["rev-parse", "HEAD"], &[])).unwrap()
        }

        /// Write a commit object as given (a changed copy of a signed one).
        fn write_object(&self, text: &str) -> Oid {
            let path = self.dir.path().join("object");
            std::fs::write(&path, text).unwrap();
            let path = path.display().to_string();
            let oid = self.git(&["hash-object", "-t", "commit", "-w", &path], &[]);
            Oid::from_str(&oid).unwrap()
        }

        fn signers(&self, text: &str) -> SignaturePolicy {
            let path = self.dir.path().join("allowed_signers");
            std::fs::write(&path, text).unwrap();
            SignaturePolicy {
                allowed_signers: path,
                signer_must_be_committer: false,
            }
        }

        /// berth's verdict, checked against `git verify-commit`'s with the same file.
        fn verdict(&self, oid: Oid, policy: &SignaturePolicy) -> Verdict {
            let repo = Repository::open(self.work()).unwrap();
            let verdict = verify_commit(&repo, oid, policy);
            let git = Command::new("git")
                .arg("-C")
                .arg(self.work())
                .arg("-c")
                .arg(format!(
                    "gpg.ssh.allowedSignersFile={}",
                    policy.allowed_signers.display()
                ))
                .args(["-c", "gpg.format=ssh", "verify-commit"])
                .arg(oid.to_string())
                .output()
                .expect("running git verify-commit");
            if !policy.signer_must_be_committer {
                assert_eq!(
                    matches!(verdict, Verdict::Signed(_)),
                    git.status.success(),
                    "berth and git disagree on {oid}: berth {verdict:?}, git {}",
                    String::from_utf8_lossy(&git.stderr)
                );
            }
            verdict
        }
    }

    fn refused(verdict: Verdict) -> String {
        match verdict {
            Verdict::Refused(why) => why,
            Verdict::Signed(signer) => panic!("accepted, signed by {signer}"),
        }
    }

    const DATE: &str = "2025-06-01T12:00:00Z";

    #[test]
    fn commits_are_accepted_and_refused_as_git_verify_commit_does() {
        let repo = Repo::new();
        let (alice, alice_pub) = repo.key("alice");
        let (mallory, mallory_pub) = repo.key("mallory");
        let allowed = repo.signers(&format!("alice@example.com {alice_pub}\n"));

        // Signed by an allowed key.
        let good = repo.commit(Some(&alice), None, DATE);
        let Verdict::Signed(signer) = repo.verdict(good, &allowed) else {
            panic!("a commit signed by alice is accepted")
        };
        assert_eq!(signer.principals, "alice@example.com");
        assert!(signer.key.starts_with("ssh-ed25519 SHA256:"), "{signer}");

        // Unsigned, and signed by a key the file does not list.
        let unsigned = repo.commit(None, None, DATE);
        assert_eq!(
            refused(repo.verdict(unsigned, &allowed)),
            "it has no signature"
        );
        let stranger = repo.commit(Some(&mallory), None, DATE);
        let why = refused(repo.verdict(stranger, &allowed));
        assert!(
            why.starts_with("it is signed by ssh-ed25519 key SHA256:"),
            "{why}"
        );
        assert!(why.ends_with("allowed_signers does not list"), "{why}");
        // Key material never in a reason.
        for secret in [&alice_pub, &mallory_pub] {
            assert!(!why.contains(secret.split(' ').nth(1).unwrap()), "{why}");
        }

        // The key is listed, but not for commits.
        let files_only = repo.signers(&format!(
            "mallory@example.com {mallory_pub}\nalice@example.com namespaces=\"file\" {alice_pub}\n"
        ));
        let why = refused(repo.verdict(good, &files_only));
        assert!(
            why.contains("of alice@example.com may not sign for `git`"),
            "{why}"
        );
        assert!(
            why.contains("allowed_signers:2: namespaces=\"file\""),
            "{why}"
        );

        // A signature made for another namespace (ssh-keygen -Y sign -n file) by an allowed key.
        let program = repo.dir.path().join("sign-for-file");
        std::fs::write(
            &program,
            "#!/bin/sh\nfor a in \"$@\"; do shift; [ \"$a\" = git ] && a=file; set -- \"$@\" \"$a\"; done\nexec ssh-keygen \"$@\"\n",
        )
        .unwrap();
        let mut mode = std::fs::metadata(&program).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
        std::fs::set_permissions(&program, mode).unwrap();
        let other_namespace = repo.commit(Some(&alice), Some(&program), DATE);
        let why = refused(repo.verdict(other_namespace, &allowed));
        assert!(
            why.contains("made for the namespace `file`, not `git`"),
            "{why}"
        );

        // The commit changed after it was signed: the same signature over other bytes.
        let object = repo.git(&["cat-file", "commit", &good.to_string()], &[]);
        let tampered =
            repo.write_object(&format!("{}\n", object.replace("change", "something else")));
        let why = refused(repo.verdict(tampered, &allowed));
        assert!(
            why.contains("does not verify: the commit was changed"),
            "{why}"
        );
    }

    #[test]
    fn every_key_type_ssh_keygen_signs_commits_with_is_verified() {
        let repo = Repo::new();
        for (name, kind, algorithm) in [
            (
                "p256",
                &["-t", "ecdsa", "-b", "256"][..],
                "ecdsa-sha2-nistp256",
            ),
            ("p384", &["-t", "ecdsa", "-b", "384"], "ecdsa-sha2-nistp384"),
            ("p521", &["-t", "ecdsa", "-b", "521"], "ecdsa-sha2-nistp521"),
            ("rsa", &["-t", "rsa", "-b", "3072"], "ssh-rsa"),
        ] {
            let (key, public) = repo.key_of(name, kind);
            let allowed = repo.signers(&format!("{name}@example.com {public}\n"));
            let commit = repo.commit(Some(&key), None, DATE);
            match repo.verdict(commit, &allowed) {
                Verdict::Signed(signer) => {
                    assert!(
                        signer.key.starts_with(&format!("{algorithm} SHA256:")),
                        "{signer}"
                    )
                }
                Verdict::Refused(why) => panic!("{name}: {why}"),
            }
            // And the same commit with another key's line only: refused.
            let other = repo.signers(&format!("x@example.com {KEY}\n"));
            let why = refused(repo.verdict(commit, &other));
            assert!(
                why.starts_with(&format!("it is signed by {algorithm} key")),
                "{why}"
            );
        }
    }

    #[test]
    fn validity_windows_hold_at_the_commit_time_and_the_committer_can_be_required() {
        let repo = Repo::new();
        let (alice, alice_pub) = repo.key("alice");
        let window = repo.signers(&format!(
            "alice@example.com valid-after=\"20240101\",valid-before=\"20250101\" {alice_pub}\n"
        ));
        let inside = repo.commit(Some(&alice), None, "2024-06-01T00:00:00Z");
        assert!(matches!(repo.verdict(inside, &window), Verdict::Signed(_)));
        let after = repo.commit(Some(&alice), None, "2025-06-01T00:00:00Z");
        let why = refused(repo.verdict(after, &window));
        assert!(
            why.contains("had expired at the commit's time 2025-06-01T00:00:00Z"),
            "{why}"
        );
        assert!(why.contains("valid-before=\"20250101\""), "{why}");
        let before = repo.commit(Some(&alice), None, "2023-06-01T00:00:00Z");
        let why = refused(repo.verdict(before, &window));
        assert!(why.contains("was not valid yet"), "{why}");

        // The committer (alice@example.com) must be a principal of the key's line: git does
        // not ask this, berth does when told to.
        let mut strict = repo.signers(&format!("ops@example.com {alice_pub}\n"));
        strict.signer_must_be_committer = true;
        let why = refused(repo.verdict(inside, &strict));
        assert!(
            why.contains("its committer alice@example.com is not a principal"),
            "{why}"
        );
        let strict = SignaturePolicy {
            signer_must_be_committer: true,
            ..repo.signers(&format!("*@example.com,!ops@example.com {alice_pub}\n"))
        };
        assert!(matches!(repo.verdict(inside, &strict), Verdict::Signed(_)));
    }

    #[test]
    fn what_berth_does_not_verify_is_refused_by_name() {
        let repo = Repo::new();
        let (alice, alice_pub) = repo.key("alice");
        let allowed = repo.signers(&format!("alice@example.com {alice_pub}\n"));
        let good = repo.commit(Some(&alice), None, DATE);
        // An OpenPGP signature (its shape: berth never gets as far as its content).
        let object = repo.git(&["cat-file", "commit", &good.to_string()], &[]);
        let (head, rest) = object.split_once("gpgsig ").unwrap();
        let (_, message) = rest.split_once("-----END SSH SIGNATURE-----").unwrap();
        let pgp = repo.write_object(&format!(
            "{head}gpgsig -----BEGIN PGP SIGNATURE-----\n \n iQEzBAABCAAdFiEE\n -----END PGP SIGNATURE-----{message}\n"
        ));
        let repository = Repository::open(repo.work()).unwrap();
        let why = refused(verify_commit(&repository, pgp, &allowed));
        assert!(
            why.starts_with("it is signed with OpenPGP, which berth does not verify"),
            "{why}"
        );

        // A file berth cannot read whole refuses every revision, saying where.
        let broken = repo.signers(&format!(
            "alice@example.com {alice_pub}\nca@example.com cert-authority {alice_pub}\n"
        ));
        let why = refused(verify_commit(&repository, good, &broken));
        assert!(why.starts_with("its signature cannot be checked:"), "{why}");
        assert!(why.contains("allowed_signers:2: `cert-authority`"), "{why}");
        let missing = SignaturePolicy {
            allowed_signers: repo.dir.path().join("nowhere"),
            signer_must_be_committer: false,
        };
        let why = refused(verify_commit(&repository, good, &missing));
        assert!(why.contains("reading the allowed signers file"), "{why}");
    }
}
