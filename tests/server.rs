//! The HTTP server of `berth watch` under hostile load, with the real binary on the test
//! control plane (issues 17 and 20): unauthenticated webhook requests are refused without
//! their bodies being read or buffered, so they cannot raise berth's memory past a small
//! bound; refusals are counted, not logged one by one; slow clients are cut off, and
//! meanwhile /healthz answers and commits are applied.

mod support;

use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::ControlPlane;
use support::eventually;
use support::generated::{GeneratedRepo, http_get, status_and_body};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "webhook-s3cret";
/// The bound the issue sets for berth's resident memory under unauthenticated load.
const RSS_BOUND_MB: u64 = 150;
/// The webhook's body limit (src/reconcile/server.rs).
const MAX_BODY: usize = 1024 * 1024;
/// Both tests measure one process's memory and load the machine: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A `berth watch` following a small generated repository, with a webhook secret.
struct Watch {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Watch {
    async fn start(cp: &ControlPlane, repo: &GeneratedRepo) -> Watch {
        let watch = repo.watch_command("watch", "berth-server", cp.kubeconfig_path());
        let secret = watch.dir.join("secret");
        std::fs::write(&secret, SECRET).unwrap();
        let mut command = watch.command;
        let child = command
            .arg("--no-leader-elect")
            .arg("--webhook-secret-file")
            .arg(&secret)
            .spawn()
            .expect("starting berth watch");
        Watch {
            child,
            addr: watch.addr,
            log: watch.log,
        }
    }

    async fn metrics(&self) -> String {
        http_get(&self.addr, "/metrics").await.1
    }

    async fn applied(&self, commit: &str) -> bool {
        self.metrics().await.contains(&format!(
            "berth_last_applied_revision_info{{revision=\"{commit}\"}} 1"
        ))
    }

    /// `VmRSS` and `VmHWM` (peak) of the process, in MB.
    fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("reading the process's status");
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb / 1024)
                .unwrap_or_else(|| panic!("{name} in /proc/pid/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// The count of `berth_webhook_requests_total{code}`.
    async fn answered(&self, code: u16) -> u64 {
        let needle = format!("berth_webhook_requests_total{{code=\"{code}\"}} ");
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(&needle))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// An HTTP/1.1 request with a body of `body` (sent as is); the status code and the
/// response's body. 0 when nothing answered.
async fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let _ = stream.write_all(body).await;
    read_response(stream).await
}

async fn read_response(mut stream: TcpStream) -> (u16, String) {
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    status_and_body(&response)
}

/// What a hostile client sends.
#[derive(Clone, Copy, Debug)]
enum Attack {
    /// No signature, a declared 24 MB body (refused on its headers: 413 for the length, or
    /// 401 for the missing signature).
    Unsigned,
    /// A wrong signature over a body of the maximum size the webhook reads.
    WrongSignature,
    /// A wrong signature, a 24 MB body without a declared length (chunked).
    ChunkedFlood,
}

const FLOOD: usize = 24 * 1024 * 1024;

/// Send one hostile request, its body as fast as the server takes it, until the server
/// answers or closes; the status code (0: closed without an answer we could read).
async fn attack(addr: String, kind: Attack, sent: Arc<AtomicU64>) -> u16 {
    let Ok(mut stream) = TcpStream::connect(&addr).await else {
        return 0;
    };
    let wrong = berth::reconcile::webhook::github_signature(b"not the secret", b"whatever");
    let head = match kind {
        Attack::Unsigned => format!(
            "POST /hooks/git HTTP/1.1\r\nhost: {addr}\r\nx-github-event: push\r\n\
             content-length: {FLOOD}\r\n\r\n"
        ),
        Attack::WrongSignature => format!(
            "POST /hooks/git HTTP/1.1\r\nhost: {addr}\r\nx-github-event: push\r\n\
             x-hub-signature-256: {wrong}\r\ncontent-length: {MAX_BODY}\r\n\r\n"
        ),
        Attack::ChunkedFlood => format!(
            "POST /hooks/git HTTP/1.1\r\nhost: {addr}\r\nx-github-event: push\r\n\
             x-hub-signature-256: {wrong}\r\ntransfer-encoding: chunked\r\n\r\n"
        ),
    };
    if stream.write_all(head.as_bytes()).await.is_err() {
        return 0;
    }
    let chunk = vec![b'x'; 64 * 1024];
    let total = match kind {
        Attack::WrongSignature => MAX_BODY,
        _ => FLOOD,
    };
    let (mut read, mut write) = stream.into_split();
    let writer = async {
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk.len());
            let ok = match kind {
                Attack::ChunkedFlood => {
                    let mut framed = format!("{n:x}\r\n").into_bytes();
                    framed.extend_from_slice(&chunk[..n]);
                    framed.extend_from_slice(b"\r\n");
                    write.write_all(&framed).await.is_ok()
                }
                _ => write.write_all(&chunk[..n]).await.is_ok(),
            };
            if !ok {
                return;
            }
            sent.fetch_add(n as u64, Ordering::Relaxed);
            left -= n;
        }
        if matches!(kind, Attack::ChunkedFlood) {
            let _ = write.write_all(b"0\r\n\r\n").await;
        }
        // Then wait for the answer.
        std::future::pending::<()>().await;
    };
    let reader = async {
        let mut response = Vec::new();
        let _ = read.read_to_end(&mut response).await;
        String::from_utf8_lossy(&response)
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0u16)
    };
    tokio::select! {
        code = reader => code,
        _ = writer => 0,
        _ = tokio::time::sleep(Duration::from_secs(60)) => 0,
    }
}

/// Sample the process's resident memory every 20 ms until `done`; the highest seen (MB).
fn sample_rss(pid: u32, done: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !done.load(Ordering::Relaxed) {
            if let Some(kb) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                })
            {
                peak = peak.max(kb / 1024);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    })
}

fn signed_push(commit: &str) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let body = serde_json::json!({"ref": "refs/heads/main", "after": commit})
        .to_string()
        .into_bytes();
    let headers = vec![
        ("x-github-event", "push".to_string()),
        (
            "x-hub-signature-256",
            berth::reconcile::webhook::github_signature(SECRET.as_bytes(), &body),
        ),
    ];
    (headers, body)
}

/// 200 concurrent unsigned 24 MB bodies, 200 wrongly signed bodies of the maximum size
/// the webhook reads, and 200 wrongly signed chunked 24 MB floods, all at once: every one
/// is refused, berth's resident memory stays under 150 MB throughout, the log gets one
/// line (the counter gets them all), and a signed push still works afterwards.
#[tokio::test]
async fn unauthenticated_webhooks_cannot_exhaust_memory_or_the_log() {
    let _serial = SERIAL.lock().await;
    let Some(cp) = support::control_plane().await else {
        return;
    };
    let repo = GeneratedRepo::new("hooks", 2);
    let c1 = repo.commit("r1");
    let watch = Watch::start(&cp, &repo).await;
    eventually(Duration::from_secs(60), "the first apply", || async {
        watch.applied(&c1).await
    })
    .await;
    let (rss_before, _) = watch.memory();

    // The documented refusals, one by one first.
    let (code, _) = request(
        &watch.addr,
        "POST",
        "/hooks/git",
        &[("x-github-event", "push".into())],
        b"{}",
    )
    .await;
    assert_eq!(code, 401, "unsigned");
    let gitlab = [
        ("x-gitlab-event", "Push Hook".to_string()),
        ("x-gitlab-token", "wrong".to_string()),
    ];
    assert_eq!(
        request(&watch.addr, "POST", "/hooks/git", &gitlab, b"{}")
            .await
            .0,
        401,
        "a wrong GitLab token"
    );
    // A declared 100 MB body: 413 before a byte of it is read.
    let stream = TcpStream::connect(&watch.addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let (headers, _) = signed_push("x");
    let mut head = format!(
        "POST /hooks/git HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n",
        100 * 1024 * 1024
    );
    for (name, value) in &headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    write.write_all(head.as_bytes()).await.unwrap();
    let code = read_response(read.reunite(write).unwrap()).await.0;
    assert_eq!(code, 413, "a 100 MB body");

    // The flood.
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(watch.child.id(), done.clone());
    let started = Instant::now();
    let mut attacks = Vec::new();
    for kind in [
        Attack::Unsigned,
        Attack::WrongSignature,
        Attack::ChunkedFlood,
    ] {
        for _ in 0..200 {
            attacks.push((
                kind,
                tokio::spawn(attack(watch.addr.clone(), kind, sent.clone())),
            ));
        }
    }
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for (kind, attack) in attacks {
        let code = attack.await.unwrap();
        *codes.entry(format!("{kind:?} {code}")).or_default() += 1;
    }
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let peak_sampled = sampler.join().unwrap();
    let (rss_after, hwm) = watch.memory();
    eprintln!(
        "measured: 600 hostile webhook requests ({:.0} MB sent) in {took:.1?}: answers {codes:?}; \
         berth RSS before {rss_before} MB, peak {peak_sampled} MB sampled, VmHWM {hwm} MB, \
         after {rss_after} MB",
        sent.load(Ordering::Relaxed) as f64 / 1e6
    );
    assert!(
        hwm < RSS_BOUND_MB,
        "berth's peak resident memory {hwm} MB is over {RSS_BOUND_MB} MB"
    );
    // Every one refused, as the server counts: nothing accepted.
    let refused: u64 = {
        let mut sum = 0;
        for code in [401, 408, 413, 503] {
            sum += watch.answered(code).await;
        }
        sum
    };
    // 600 of the flood, plus the three refused one by one above.
    assert_eq!(refused, 603, "{}", watch.metrics().await);
    assert_eq!(watch.answered(202).await, 0);
    // As the clients saw it: refused (a declared oversized body gets 413 before its
    // signature is looked at), or cut off mid-body once the answer was sent.
    for what in codes.keys() {
        let code = what.rsplit(' ').next().unwrap_or_default();
        assert!(
            ["0", "401", "408", "413", "503"].contains(&code),
            "{what}: {codes:?}"
        );
    }
    let refusal_lines = watch
        .log()
        .lines()
        .filter(|l| l.contains("webhook refused"))
        .count();
    assert_eq!(
        refusal_lines,
        1,
        "refusals are logged once a minute at most:\n{}",
        watch.log()
    );

    // A signed push still goes through.
    let c2 = repo.commit("r2");
    let (headers, body) = signed_push(&c2);
    let (code, text) = request(&watch.addr, "POST", "/hooks/git", &headers, &body).await;
    assert_eq!(code, 202, "{text}");
    eventually(Duration::from_secs(60), "the pushed commit", || async {
        watch.applied(&c2).await
    })
    .await;
}

/// 1,000 clients that open a connection and trickle one header line every 5 s: the server
/// cuts each off when its headers have not come within the header timeout (10 s), and
/// meanwhile /healthz answers and a new commit is applied.
#[tokio::test]
async fn slow_clients_are_cut_off_and_do_not_stop_health_checks_or_applies() {
    let _serial = SERIAL.lock().await;
    let Some(cp) = support::control_plane().await else {
        return;
    };
    let repo = GeneratedRepo::new("slow", 2);
    let c1 = repo.commit("r1");
    let watch = Watch::start(&cp, &repo).await;
    eventually(Duration::from_secs(60), "the first apply", || async {
        watch.applied(&c1).await
    })
    .await;

    let connected = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(watch.child.id(), done.clone());
    let mut clients = Vec::new();
    for _ in 0..1000 {
        let addr = watch.addr.clone();
        let connected = connected.clone();
        clients.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(&addr).await.ok()?;
            let opened = Instant::now();
            connected.fetch_add(1, Ordering::Relaxed);
            stream
                .write_all(b"POST /hooks/git HTTP/1.1\r\n")
                .await
                .ok()?;
            let mut buf = [0u8; 1024];
            // Until the server closes the connection (bounded: 120 s).
            while opened.elapsed() < Duration::from_secs(120) {
                tokio::select! {
                    read = stream.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return Some(opened.elapsed()),
                        Ok(_) => {}
                    },
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {
                        if stream.write_all(b"x-slow: still here\r\n").await.is_err() {
                            return Some(opened.elapsed());
                        }
                    }
                }
            }
            None
        }));
    }
    eventually(
        Duration::from_secs(30),
        "1,000 slow clients connected",
        || {
            let connected = connected.clone();
            async move { connected.load(Ordering::Relaxed) >= 1000 }
        },
    )
    .await;

    // With all of them open: health checks answer, and a commit is applied.
    let started = Instant::now();
    let (code, _) = tokio::time::timeout(
        Duration::from_secs(5),
        request(&watch.addr, "GET", "/healthz", &[], b""),
    )
    .await
    .expect("/healthz answers within 5 s while 1,000 slow clients are connected");
    assert_eq!(code, 200);
    let healthz = started.elapsed();
    let c2 = repo.commit("r2");
    eventually(
        Duration::from_secs(60),
        "a commit to be applied while slow clients are connected",
        || async { watch.applied(&c2).await },
    )
    .await;

    let mut held = Vec::new();
    for client in clients {
        let open = client
            .await
            .unwrap()
            .expect("the server closed the slow connection within 120 s");
        held.push(open);
    }
    done.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let longest = held.iter().max().copied().unwrap_or_default();
    eprintln!(
        "measured: 1,000 slow clients: /healthz answered in {healthz:?}; each cut off after at \
         most {longest:.1?} (header timeout 10 s); berth peak RSS {peak} MB"
    );
    // Cut off by the header timeout, not held open by the trickle (a line every 5 s).
    assert!(
        longest < Duration::from_secs(30),
        "a slow connection stayed open {longest:?}"
    );
    assert!(peak < RSS_BOUND_MB, "peak RSS {peak} MB");
}
