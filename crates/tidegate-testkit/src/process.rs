//! The `tidegate` binary as a child process: spawned with a clean environment, its
//! bound addresses read from the `tidegate listening inbound=… internal=…` line.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
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
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(timeout, async {
        while let Some(line) = lines.next_line().await? {
            if line.starts_with("tidegate listening ") {
                return Ok::<_, anyhow::Error>(line);
            }
        }
        anyhow::bail!("stdout closed before the listening line")
    })
    .await
    .map_err(|_| anyhow::anyhow!("no listening line within {timeout:?}"))??;
    let addr = |key: &str| -> anyhow::Result<SocketAddr> {
        let v = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .ok_or_else(|| anyhow::anyhow!("no {key} in `{line}`"))?;
        Ok(v.parse()?)
    };
    let (inbound, internal) = (addr("inbound=")?, addr("internal=")?);
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Process {
        child,
        inbound,
        internal,
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

impl Process {
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
