//! Headless Chromium (Debian's package) for the status page tests: one-shot runs
//! ([`browse`]: `--dump-dom`, `--screenshot`) and a live page driven over the DevTools
//! protocol on a pipe ([`Page`]: navigate, run JavaScript, read what it returns, take a
//! screenshot), for what only a page left open shows — its updates in place.
//!
//! Chromium is found as `$BERTH_CHROMIUM`, or `chromium` / `chromium-browser` on PATH
//! (.ci/run installs Debian's `chromium`). Without it the tests are skipped loudly, except
//! under `CI=true`, where that is a failure.

use base64::Engine as _;
use serde_json::{Value, json};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::fd::{FromRawFd as _, RawFd};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The browser, or `None` after saying loudly that the test is skipped (a failure under
/// `CI=true`).
pub fn chromium() -> Option<PathBuf> {
    let on_path = |name: &str| {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        })
    };
    let found = std::env::var_os("BERTH_CHROMIUM")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| on_path("chromium"))
        .or_else(|| on_path("chromium-browser"));
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "no Chromium (chromium on PATH or $BERTH_CHROMIUM), and CI=true makes that a \
                 failure: .ci/run installs Debian's chromium package"
            );
        }
        // Straight to stderr, as tests/support does: libtest would capture `eprintln!`.
        let _ = writeln!(
            std::io::stderr().lock(),
            "\n************************************************************\n\
             SKIPPED: no Chromium: the status page test needs a browser\n\
             (apt-get install chromium, or set BERTH_CHROMIUM;\n\
             under CI=true this is a failure)\n\
             ************************************************************"
        );
    }
    found
}

/// The flags of every run: headless, no sandbox (tests run as root), nothing fetched but
/// what the test asks for.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
];

/// Run headless Chromium with `args` on a fresh profile, within `limit`; its stdout.
/// Chromium runs in its own process group, so a run past the limit is ended whole.
pub fn browse(chromium: &Path, args: &[String], limit: Duration) -> String {
    let profile = tempfile::tempdir().expect("a profile folder");
    let mut child = Command::new(chromium)
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("starting Chromium");
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let started = Instant::now();
    loop {
        if child.try_wait().expect("waiting for Chromium").is_some() {
            break;
        }
        if started.elapsed() > limit {
            // SAFETY: signals the process group this test started, nothing else.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!("Chromium did not finish within {limit:?}: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().expect("the reader thread")
}

/// One page of a headless Chromium driven over `--remote-debugging-pipe` (the DevTools
/// protocol as NUL-separated JSON on file descriptors 3 and 4). Chromium is killed with
/// its process group when this is dropped.
pub struct Page {
    child: Child,
    to_browser: std::fs::File,
    from_browser: mpsc::Receiver<Value>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

/// A pipe whose ends are both above the descriptors the child is given (3 and 4), and
/// closed on exec: `(read, write)`.
fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: a fresh pipe into a two-element array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let high = |fd: RawFd| {
        // SAFETY: duplicates a descriptor this function owns, then closes the original.
        unsafe {
            let moved = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
            assert!(moved >= 10, "fcntl F_DUPFD_CLOEXEC");
            libc::close(fd);
            moved
        }
    };
    (high(fds[0]), high(fds[1]))
}

impl Page {
    /// A new browser with one blank page of `width`×`height` CSS pixels.
    pub fn open(chromium: &Path, width: u32, height: u32) -> Page {
        let profile = tempfile::tempdir().expect("a profile folder");
        let (commands_read, commands_write) = pipe();
        let (events_read, events_write) = pipe();
        let mut command = Command::new(chromium);
        command
            .args(FLAGS)
            .arg("--remote-debugging-pipe")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={width},{height}"))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // SAFETY: only dup2 (async-signal-safe) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(commands_read, 3) < 0 || libc::dup2(events_write, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("starting Chromium");
        // SAFETY: the child has its copies; these ends are the parent's alone.
        let (to_browser, from_browser) = unsafe {
            libc::close(commands_read);
            libc::close(events_write);
            (
                std::fs::File::from_raw_fd(commands_write),
                std::fs::File::from_raw_fd(events_read),
            )
        };
        let (send, receive) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(from_browser);
            loop {
                let mut message = Vec::new();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if message.last() == Some(&0) {
                    message.pop();
                }
                if let Ok(value) = serde_json::from_slice::<Value>(&message)
                    && send.send(value).is_err()
                {
                    return;
                }
            }
        });
        let mut page = Page {
            child,
            to_browser,
            from_browser: receive,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let target = page.call("Target.createTarget", json!({"url": "about:blank"}));
        let target = target["targetId"]
            .as_str()
            .expect("a target id")
            .to_string();
        let attached = page.call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        page.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        page
    }

    /// Send `method` with `params` (to the page once attached) and wait for its answer.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&message).expect("JSON");
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .expect("writing to Chromium");
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = self
                .from_browser
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no answer from Chromium to {method}: {e}"));
            if answer["id"] == id {
                assert!(
                    answer.get("error").is_none(),
                    "Chromium refused {method}: {answer}"
                );
                return answer["result"].clone();
            }
        }
    }

    /// The value of the JavaScript `expression` (a promise is awaited); a thrown error
    /// fails the test.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}\nthrew: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Load `url` and wait until it has loaded.
    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        let started = Instant::now();
        while self.eval("document.readyState") != "complete" || self.eval("location.href") != url {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{url} did not load"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of what the page shows.
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
        std::fs::write(path, png).expect("writing the screenshot");
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: signals the process group this test started, nothing else.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}
