//! The `tidegate` binary as a child process: spawned with a clean environment, its
//! bound addresses read from the `tidegate listening inbound=… internal=…` line.
//!
//! The child's stdout and stderr (its logs and any panic) are kept: the last
//! [`LOG_TAIL`] lines in memory, printed when a test panics while the process is
//! alive (so a failure in CI shows what the node said), and the whole output in
//! `$TMPDIR/tidegate-test-logs/<pid>.log`.
use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// `TIDEGATE_BIN` when set (scripts/test.sh points it at the release build), else `fallback`
/// (pass `env!("CARGO_BIN_EXE_tidegate")`).
pub fn binary(fallback: &str) -> PathBuf {
    std::env::var_os("TIDEGATE_BIN")
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(fallback))
}

pub struct Process {
    pub child: Child,
    pub inbound: SocketAddr,
    pub internal: SocketAddr,
    log: Log,
}

/// How many of the child's last output lines are kept in memory.
pub const LOG_TAIL: usize = 200;

/// The child's output: a bounded tail in memory and the whole of it in a file.
#[derive(Clone)]
struct Log {
    tail: Arc<Mutex<VecDeque<String>>>,
    file: Option<Arc<Mutex<std::fs::File>>>,
    path: Option<PathBuf>,
}

impl Log {
    fn new(pid: Option<u32>) -> Self {
        let dir = std::env::temp_dir().join("tidegate-test-logs");
        let path = pid.map(|p| dir.join(format!("{p}.log")));
        let file = path.as_ref().and_then(|p| {
            std::fs::create_dir_all(&dir).ok()?;
            std::fs::File::create(p).ok()
        });
        Self {
            tail: Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL))),
            path: file.as_ref().and(path),
            file: file.map(|f| Arc::new(Mutex::new(f))),
        }
    }

    fn push(&self, stream: &str, line: &str) {
        if let Some(f) = &self.file {
            let _ = writeln!(f.lock().unwrap(), "{stream}: {line}");
        }
        let mut t = self.tail.lock().unwrap();
        if t.len() == LOG_TAIL {
            t.pop_front();
        }
        t.push_back(format!("{stream}: {line}"));
    }

    /// Keeps reading `r` line by line (so the child never blocks on a full pipe).
    fn drain<R: tokio::io::AsyncRead + Unpin + Send + 'static>(&self, stream: &'static str, r: R) {
        let log = self.clone();
        let mut lines = BufReader::new(r).lines();
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                log.push(stream, &l);
            }
        });
    }
}

/// The result of a run that was expected to stop by itself.
#[derive(Debug)]
pub struct Exited {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

fn command(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args).env_clear().kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Spawns the binary and waits (up to `timeout`) for its listening line.
pub async fn spawn(
    bin: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> anyhow::Result<Process> {
    let mut child = command(bin, args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let log = Log::new(child.id());
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    if let Some(stderr) = child.stderr.take() {
        log.drain("stderr", stderr);
    }
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(timeout, async {
        while let Some(line) = lines.next_line().await? {
            log.push("stdout", &line);
            if line.starts_with("tidegate listening ") {
                return Ok::<_, anyhow::Error>(line);
            }
        }
        anyhow::bail!("stdout closed before the listening line")
    })
    .await
    .map_err(|_| anyhow::anyhow!("no listening line within {timeout:?}"))
    .and_then(|r| r)
    .map_err(|e| e.context(format!("the node said:\n{}", log.tail_text())))?;
    let addr = |key: &str| -> anyhow::Result<SocketAddr> {
        let v = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .ok_or_else(|| anyhow::anyhow!("no {key} in `{line}`"))?;
        Ok(v.parse()?)
    };
    let (inbound, internal) = (addr("inbound=")?, addr("internal=")?);
    log.drain("stdout", lines.into_inner());
    Ok(Process {
        child,
        inbound,
        internal,
        log,
    })
}

/// Runs the binary to completion (it must exit within `timeout`).
pub async fn run(
    bin: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> anyhow::Result<Exited> {
    let mut child = command(bin, args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut out = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut err = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let status = tokio::time::timeout(timeout, child.wait())
        .await
        .map_err(|_| anyhow::anyhow!("the binary did not exit within {timeout:?}"))??;
    let (mut stdout, mut stderr) = (String::new(), String::new());
    out.read_to_string(&mut stdout).await?;
    err.read_to_string(&mut stderr).await?;
    Ok(Exited {
        code: status.code(),
        stdout,
        stderr,
    })
}

impl Log {
    fn tail_text(&self) -> String {
        let t = self.tail.lock().unwrap();
        t.iter().map(|l| format!("  | {l}\n")).collect()
    }
}

impl Process {
    /// The last lines the child printed (stdout and stderr, oldest first).
    pub fn log_tail(&self) -> String {
        self.log.tail_text()
    }

    /// Where the child's whole output is written, if the file could be created.
    pub fn log_path(&self) -> Option<&Path> {
        self.log.path.as_deref()
    }

    /// SIGTERM (by pid: only this child), then waits for the exit code.
    pub async fn terminate(mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow::anyhow!("already exited"))?;
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .map_err(|_| anyhow::anyhow!("no exit within {timeout:?} of SIGTERM"))??;
        Ok(status.code())
    }
}

impl Drop for Process {
    /// A test failing while this node runs prints what the node said last.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- the last lines of tidegate pid {:?} (whole output: {:?}) ---\n{}",
                self.child.id(),
                self.log.path,
                self.log.tail_text()
            );
        }
    }
}
