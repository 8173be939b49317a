//! The command probe: run a program; exit status 0 is up, anything else down.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use idns_core::{ConfigError, Probe, ProbeOutcome};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::spec::target::{BuildContext, Target};
use idns_core::Problems;

/// How much of the output is kept for the reason; the rest is read and dropped so the program
/// never blocks on a full pipe.
const KEEP: usize = 4096;

/// A command check, as written (`kind = "command"`).
///
/// The program runs without a shell, with `IDNS_SERVICE`, `IDNS_SITE` and (when the site has
/// one) `IDNS_ADDRESS` in its environment. Exit status 0 is up; any other status is down, with
/// the first line of its output (stdout, else stderr) as the reason. When the probe's timeout
/// passes the program and every process of its process group are killed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// The program and its arguments, e.g. `["/usr/lib/nagios/plugins/check_ssh", "-H", "10.0.0.5"]`.
    pub argv: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the controller's).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Log this probe's details at `info` instead of `debug`.
    #[serde(default)]
    pub debug: bool,
}

/// A built command probe.
#[derive(Debug)]
pub struct CommandProbe {
    label: String,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    dir: Option<PathBuf>,
    timeout: Duration,
    debug: bool,
}

impl CommandProbe {
    pub(crate) fn new(
        ctx: &BuildContext,
        spec: &CommandSpec,
        target: &Target,
    ) -> Result<CommandProbe, ConfigError> {
        let path = ctx.path.as_str();
        let mut p = Problems::default();
        match spec.argv.first() {
            None => p.push(format!("{path}.argv"), "[]", "must name the program to run"),
            Some(a) if a.is_empty() => p.push(format!("{path}.argv[0]"), "\"\"", "is empty"),
            Some(_) => {}
        }
        for (i, a) in spec.argv.iter().enumerate() {
            if a.contains('\0') {
                p.push(
                    format!("{path}.argv[{i}]"),
                    a.escape_debug(),
                    "holds a NUL byte",
                );
            }
        }
        for k in spec.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                p.push(format!("{path}.env"), k, "is not a valid variable name");
            }
        }
        if let Some(d) = &spec.dir
            && !d.is_dir()
        {
            p.push(format!("{path}.dir"), d.display(), "is not a directory");
        }
        p.finish()?;
        let mut env = vec![
            ("IDNS_SERVICE".to_owned(), target.service.to_string()),
            ("IDNS_SITE".to_owned(), target.site.to_string()),
        ];
        if let Some(a) = target.address {
            env.push(("IDNS_ADDRESS".to_owned(), a.to_string()));
        }
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(CommandProbe {
            label: ctx.label.clone(),
            argv: spec.argv.clone(),
            env,
            dir: spec.dir.clone(),
            timeout: ctx.timeout,
            debug: spec.debug,
        })
    }

    async fn run(&self) -> ProbeOutcome {
        let start = Instant::now();
        let program = &self.argv[0];
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&self.argv[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout can kill what it started too.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(d) = &self.dir {
            cmd.current_dir(d);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return ProbeOutcome::down(start.elapsed(), format!("cannot start {program}: {e}"));
            }
        };
        let pid = child.id();
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let result = tokio::time::timeout(self.timeout, async {
            tokio::join!(keep_first(out), keep_first(err), child.wait())
        })
        .await;
        let latency = start.elapsed();
        match result {
            Ok((out, err, Ok(status))) if status.success() => {
                let _ = (out, err);
                ProbeOutcome::up(latency)
            }
            Ok((out, err, Ok(status))) => {
                let line = first_line(&out).or_else(|| first_line(&err));
                let reason = match line {
                    Some(l) => format!("{}: {l}", describe(status)),
                    None => format!("{} (no output)", describe(status)),
                };
                ProbeOutcome::down(latency, reason)
            }
            Ok((_, _, Err(e))) => {
                ProbeOutcome::down(latency, format!("waiting for {program}: {e}"))
            }
            Err(_) => {
                if let Some(pid) = pid {
                    kill_group(pid).await;
                }
                let _ = child.start_kill();
                // Reap it, so the process is gone when the outcome is reported.
                let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
                let mut o = ProbeOutcome::timeout(latency);
                o.reason = format!(
                    "{program} still running after {}: killed",
                    humantime::format_duration(self.timeout)
                );
                o
            }
        }
    }
}

/// SIGKILL to the process group `pgid` (the child and whatever it started), best effort.
async fn kill_group(pgid: u32) {
    let killed = tokio::process::Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pgid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(1), killed).await;
}

/// Reads a stream to its end, keeping the first [`KEEP`] bytes.
async fn keep_first<R: AsyncRead + Unpin>(stream: Option<R>) -> Vec<u8> {
    let Some(mut stream) = stream else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = KEEP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// The first non-blank line, trimmed and cut to 200 characters.
fn first_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.chars().take(200).collect())
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

#[async_trait]
impl Probe for CommandProbe {
    async fn check(&self) -> ProbeOutcome {
        let outcome = self.run().await;
        crate::probe_log!(
            self.debug,
            "idns_probe::command",
            probe = %self.label,
            program = %self.argv[0],
            status = ?outcome.status,
            latency = ?outcome.latency,
            reason = %outcome.reason,
            "command check"
        );
        outcome
    }
}
