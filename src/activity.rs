//! The activity agent: `berth activity-agent`, a sidecar in every workspace pod that has an
//! idle timeout. It is the only thing that says a workspace is in use, and it says so by
//! renewing the workspace's activity Lease (`<workspace>-activity`), the only object its
//! Role lets it touch.
//!
//! Every sampling interval it **asks Mage** first, as Mage's own instance manager does:
//! the workspace's status route (`/api/statuses?_format=with_activity_details` on the Mage
//! port), read with Mage's idle rule ([`crate::mage::activity`]): a running pipeline run
//! is activity now; otherwise activity is the later of Mage's last user request and last
//! scheduler activity, and that time becomes the Lease's `renewTime`. So a pipeline
//! waiting on executor Jobs with no UI open keeps its workspace running, exactly as in
//! Mage.
//!
//! Only when that route cannot be read (Mage not up yet, another image) does it fall back
//! to looking at the pod from the inside (one process and one network namespace, so
//! `/proc` shows all of it):
//! - **sessions**: TCP connections to the Mage port (6789) that stay established across two
//!   samples: an open UI tab (its websocket), an API client, a notebook's kernel channel.
//!   A probe's connection lasts milliseconds and is not seen twice;
//! - **work**: CPU used by the pod's processes since the last sample, at or above a
//!   threshold (`busy_cpu`, 100 millicores by default): a running pipeline or kernel.
//!
//! The Lease's annotation [`SIGNAL`] says which signal the last sample used. Every sample
//! also sets the annotation [`HEARTBEAT`]: the reconciler suspends a workspace only while
//! the agent's heartbeat is fresh and `renewTime` is older than the idle timeout, so a
//! workspace whose agent does not run (not deployed, crashing, no permission) is never
//! suspended. `renewTime` never moves back: a `berth wake` renewal stands.

use crate::cluster::Cluster;
use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Lease annotation: when the agent last sampled (RFC 3339), active or not.
pub const HEARTBEAT: &str = "berth/agent-heartbeat";
/// Lease annotation: the signal of the last sample (`mage-status`, or `sessions-and-cpu`
/// with why Mage's status could not be read).
pub const SIGNAL: &str = "berth/activity-signal";
/// The field manager of the agent's writes.
pub const FIELD_MANAGER: &str = "berth-activity-agent";
/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ: 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub namespace: String,
    pub lease: String,
    /// The port whose connections are sessions (Mage's UI).
    pub port: u16,
    pub interval: Duration,
    pub busy_millicores: u64,
    /// Where the pod's processes and sockets are seen (`/proc`).
    pub proc_root: PathBuf,
}

/// What the agent saw at one sample.
#[derive(Debug, Default)]
struct Sample {
    sessions: BTreeSet<String>,
    ticks: u64,
}

/// Established connections on local port `port`, as `local->remote`, from the kernel's
/// socket tables (`net/tcp`, `net/tcp6`).
fn sessions(proc_root: &Path, port: u16) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for table in ["net/tcp", "net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(proc_root.join(table)) else {
            continue;
        };
        out.extend(established_on(&text, port));
    }
    out
}

/// Parse one socket table: lines `sl local_address rem_address st …` with hex addresses
/// (`0100007F:1A85`) and the state `01` for ESTABLISHED.
fn established_on(table: &str, port: u16) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, state) = (fields.get(1)?, fields.get(2)?, fields.get(3)?);
            let local_port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
            (*state == "01" && local_port == port).then(|| format!("{local}->{remote}"))
        })
        .collect()
}

/// CPU ticks (user + system, with reaped children) of every process but `except`.
fn cpu_ticks(proc_root: &Path, except: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != except)
        .filter_map(|pid| std::fs::read_to_string(proc_root.join(format!("{pid}/stat"))).ok())
        .filter_map(|stat| stat_ticks(&stat))
        .sum()
}

/// utime + stime + cutime + cstime of one `/proc/<pid>/stat` line. The command name is in
/// parentheses and may hold spaces, so fields are counted after the last `)`.
fn stat_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid pgrp session tty tpgid flags minflt cminflt majflt
    // cmajflt utime(11) stime(12) cutime(13) cstime(14).
    fields[11..=14]
        .iter()
        .map(|f| f.parse::<i64>().ok().map(|n| n.max(0) as u64))
        .sum()
}

impl AgentOptions {
    fn sample(&self) -> Sample {
        Sample {
            sessions: sessions(&self.proc_root, self.port),
            ticks: cpu_ticks(&self.proc_root, std::process::id()),
        }
    }
}

/// Whether the pod was in use between two samples: a session seen in both, or CPU at or
/// above the threshold over the interval.
fn active(before: &Sample, now: &Sample, interval: Duration, busy_millicores: u64) -> bool {
    if now.sessions.intersection(&before.sessions).next().is_some() {
        return true;
    }
    let ticks = now.ticks.saturating_sub(before.ticks);
    let millis = interval.as_millis().max(1) as u64;
    // ticks / TICKS_PER_SECOND CPU-seconds over `millis` ms, in millicores.
    let millicores = ticks * 1000 * 1000 / TICKS_PER_SECOND / millis;
    millicores >= busy_millicores
}

/// RFC 3339 with microseconds, as a Lease's MicroTime wants it.
fn micro(t: Timestamp) -> String {
    Timestamp::from_microsecond(t.as_microsecond())
        .unwrap_or(t)
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// What one sample found: when the workspace was last active (`None`: not since the last
/// sample), and by which signal.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    active_at: Option<Timestamp>,
    signal: String,
}

/// Mage's status, from the Mage port of the pod (HTTP/1.0, so the answer ends with the
/// connection), within `timeout`.
async fn mage_status(
    port: u16,
    timeout: Duration,
) -> Result<crate::mage::activity::Status, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connecting to port {port}: {e}"))?;
        let request = format!(
            "GET {} HTTP/1.0\r\nHost: localhost\r\nAccept: application/json\r\n\r\n",
            crate::mage::activity::STATUS_PATH
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        stream
            .take(1 << 20)
            .read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
        let status = head.split_whitespace().nth(1).unwrap_or_default();
        if status != "200" {
            return Err(format!("HTTP {status}"));
        }
        crate::mage::activity::parse(body)
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

/// Write the heartbeat and the signal, and `renewTime` when there was activity, never
/// earlier than the Lease's own (a wake's renewal stands).
async fn report(api: &Api<Lease>, lease: &str, seen: &Seen) -> Result<()> {
    let now = micro(Timestamp::now());
    let mut patch = json!({"metadata": {"annotations": {HEARTBEAT: now, SIGNAL: seen.signal}}});
    if let Some(at) = seen.active_at {
        let current = api
            .get(lease)
            .await
            .with_context(|| format!("reading Lease {lease}"))?
            .spec
            .and_then(|s| s.renew_time)
            .map(|t| t.0);
        if current.is_none_or(|c| c < at) {
            patch["spec"] = json!({"renewTime": micro(at)});
        }
    }
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    api.patch(lease, &params, &Patch::Merge(&patch))
        .await
        .with_context(|| format!("renewing Lease {lease}"))?;
    Ok(())
}

/// Run until `stop` resolves. The start of the pod counts as activity: the first report
/// renews the Lease. A failed write is logged and retried at the next sample.
pub async fn run(
    cluster: Cluster,
    options: AgentOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(cluster.client.clone(), &options.namespace);
    let mut before = options.sample();
    let mut seen = Seen {
        active_at: Some(Timestamp::now()),
        signal: "pod start".into(),
    };
    tokio::pin!(stop);
    loop {
        match report(&api, &options.lease, &seen).await {
            Ok(()) => {
                tracing::info!(lease = %options.lease, active = ?seen.active_at, signal = %seen.signal, "reported")
            }
            Err(err) => tracing::warn!(
                lease = %options.lease,
                error = %crate::cluster::error::chain(&err),
                "could not report activity; trying again at the next sample"
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(options.interval) => {}
            _ = &mut stop => return Ok(()),
        }
        let now = options.sample();
        let pod_active = active(&before, &now, options.interval, options.busy_millicores);
        before = now;
        seen = match mage_status(options.port, Duration::from_secs(5)).await {
            Ok(status) => Seen {
                active_at: Some(crate::mage::activity::renew_time(&status, Timestamp::now())),
                signal: "mage-status".into(),
            },
            Err(why) => Seen {
                active_at: pod_active.then(Timestamp::now),
                signal: format!("sessions-and-cpu (Mage's status: {why})"),
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1A85 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 100 0 0 10 0
   1: 0100007F:1A85 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 20 4 30 10 -1
   2: 0100007F:D2F0 0100007F:1A85 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0 20 4 30 10 -1
   3: 0100007F:1A85 0100007F:D300 06 00000000:00000000 00:00000000 00000000  1000        0 4 1 0 20 4 30 10 -1
";

    #[test]
    fn sessions_are_established_connections_to_the_port() {
        // 0x1A85 = 6789: the listener (0A) and a closing one (06) are not sessions; the
        // client end of the connection has another local port.
        assert_eq!(established_on(TCP, 6789), ["0100007F:1A85->0100007F:D2F0"]);
        assert!(established_on(TCP, 8080).is_empty());
    }

    #[test]
    fn cpu_ticks_count_after_the_command_name() {
        let stat = "42 (python3 -m mage (x)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 4 0";
        assert_eq!(stat_ticks(stat), Some(310));
        assert_eq!(stat_ticks("garbage"), None);
    }

    fn sample(sessions: &[&str], ticks: u64) -> Sample {
        Sample {
            sessions: sessions.iter().map(|s| s.to_string()).collect(),
            ticks,
        }
    }

    #[test]
    fn activity_is_a_lasting_session_or_cpu_over_the_threshold() {
        let interval = Duration::from_secs(10);
        // A connection seen twice is a session; a new one (a probe) is not.
        assert!(active(
            &sample(&["a"], 0),
            &sample(&["a", "b"], 0),
            interval,
            100
        ));
        assert!(!active(
            &sample(&["a"], 0),
            &sample(&["b"], 0),
            interval,
            100
        ));
        // 100 ticks in 10 s = 1 CPU-second over 10 s = 100 millicores.
        assert!(active(
            &sample(&[], 1000),
            &sample(&[], 1100),
            interval,
            100
        ));
        assert!(!active(
            &sample(&[], 1000),
            &sample(&[], 1099),
            interval,
            100
        ));
        // Processes that ended take their ticks with them: never negative.
        assert!(!active(&sample(&[], 5000), &sample(&[], 10), interval, 100));
    }

    /// The agent reads Mage's status route as a real Mage server answers it (the body is
    /// one captured from `mage start`, mage-ai 0.9.80), and says why when it cannot.
    #[tokio::test]
    async fn the_agent_reads_mages_status_route() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = r#"{"statuses": [{"is_instance_manager": false, "scheduler_status": "running", "project_type": "standalone", "active_pipeline_run_count": 2, "last_scheduler_activity": "2026-12-02 01:00:20", "last_user_request": "2026-12-02 00:59:48.840573+00:00"}], "metadata": {}}"#;
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 4096];
            let n = socket.read(&mut request).await.unwrap();
            let request = String::from_utf8_lossy(&request[..n]).to_string();
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
            request
        });
        let status = mage_status(port, Duration::from_secs(5)).await.unwrap();
        assert_eq!(status.active_pipeline_run_count, serde_json::json!(2));
        let request = server.await.unwrap();
        assert!(
            request.starts_with("GET /api/statuses?_format=with_activity_details HTTP/1.0"),
            "{request}"
        );
        // Nothing listening: the reason, for the Lease's signal annotation.
        drop(status);
        let err = mage_status(port, Duration::from_secs(5)).await.unwrap_err();
        assert!(err.contains("connecting to port"), "{err}");
    }
}
