//! Local control of one site's cluster: `pg_ctl`, `pg_rewind`, `psql` and friends, run through
//! the site's command prefix and as its OS user.
//!
//! Behind a command prefix (`ssh postgres@db2`, `sh -c`) the program and its arguments are
//! joined into one command line for the remote shell, each argument quoted for a POSIX shell,
//! so paths with spaces and SQL reach the program unchanged. Options that `pg_ctl` hands to its
//! own shell (`-o`) are quoted once more.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use idns_core::BackendError;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout};

use super::config::PgSite;

/// Runs the site's programs.
#[derive(Debug, Clone)]
pub(crate) struct Control {
    pub site: PgSite,
}

/// What a finished command printed.
pub(crate) struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Control {
    pub(crate) fn new(site: &PgSite) -> Self {
        Self { site: site.clone() }
    }

    pub(crate) fn data(&self) -> String {
        self.site.data_dir.display().to_string()
    }

    /// The server log, beside the data directory (pg_rewind replaces files inside it).
    pub(crate) fn log(&self) -> String {
        format!("{}.log", self.data())
    }

    /// A private socket directory for isolated starts.
    pub(crate) fn socket_dir(&self) -> String {
        format!("{}.idns-sock", self.data())
    }

    /// The drill copy's data directory.
    pub(crate) fn drill_dir(&self) -> String {
        format!("{}.idns-drill", self.data())
    }

    /// The command line: locally the program and its arguments as they are (through
    /// `runuser` when root); behind a command prefix, one argument: the program and its
    /// arguments quoted for the remote shell and joined with spaces.
    fn argv(&self, program: String, args: &[String]) -> Vec<String> {
        let mut v: Vec<String> = self.site.command_prefix.clone();
        if self.site.command_prefix.is_empty() {
            if rustix::process::geteuid().is_root() {
                v.extend(["runuser", "-u", &self.site.os_user, "--"].map(String::from));
            }
            v.push(program);
            v.extend(args.iter().cloned());
        } else {
            let line: Vec<String> = std::iter::once(&program)
                .chain(args)
                .map(|a| shell_quote(a))
                .collect();
            v.push(line.join(" "));
        }
        v
    }

    /// Runs a PostgreSQL program from the binaries directory.
    pub(crate) async fn bin(
        &self,
        program: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<Output, BackendError> {
        let p = self.site.bin_dir.join(program).display().to_string();
        self.exec(self.argv(p, args), timeout).await
    }

    /// Runs a system program (`touch`, `mkdir`, `rm`, `test`).
    pub(crate) async fn sys(
        &self,
        program: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<Output, BackendError> {
        self.exec(self.argv(program.to_owned(), args), timeout)
            .await
    }

    /// Runs a system program that must succeed.
    pub(crate) async fn sys_ok(
        &self,
        program: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<(), BackendError> {
        let out = self.sys(program, args, timeout).await?;
        self.succeeded(program, out).map(|_| ())
    }

    /// The output of a program that exited with 0, or an error with what it printed.
    fn succeeded(&self, program: &str, out: Output) -> Result<String, BackendError> {
        if out.code == Some(0) {
            Ok(out.stdout)
        } else {
            Err(BackendError::Unavailable(format!(
                "site {}: {program} failed ({:?}): {}{}",
                self.site.site,
                out.code,
                out.stdout.trim(),
                out.stderr.trim()
            )))
        }
    }

    fn spawn(&self, argv: &[String]) -> Result<Child, BackendError> {
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        tracing::debug!(site = %self.site.site, command = ?argv, "running");
        cmd.spawn().map_err(|e| {
            BackendError::Unavailable(format!(
                "site {}: cannot run {:?}: {e}",
                self.site.site, argv[0]
            ))
        })
    }

    /// Starts a PostgreSQL program whose standard output is read as it comes (see
    /// [`Stream`]), killed at `deadline`.
    pub(crate) fn bin_stream(
        &self,
        program: &str,
        args: &[String],
        deadline: Instant,
    ) -> Result<Stream, BackendError> {
        let p = self.site.bin_dir.join(program).display().to_string();
        let mut child = self.spawn(&self.argv(p, args))?;
        let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(BackendError::Unavailable(format!(
                "site {}: {program} has no output pipes",
                self.site.site
            )));
        };
        // Only the start of the error output is kept: it explains a failure.
        let stderr = tokio::spawn(async move {
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let room = STDERR_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            String::from_utf8_lossy(&kept).into_owned()
        });
        Ok(Stream {
            site: self.site.site.to_string(),
            program: program.to_owned(),
            pid: child.id(),
            child,
            stdout: BufReader::with_capacity(64 * 1024, stdout),
            stderr,
            deadline,
        })
    }

    async fn exec(&self, argv: Vec<String>, timeout: Duration) -> Result<Output, BackendError> {
        let child = self.spawn(&argv)?;
        let pid = child.id();
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => Ok(Output {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }),
            Ok(Err(e)) => Err(BackendError::Unavailable(format!(
                "site {}: {:?} failed: {e}",
                self.site.site, argv[0]
            ))),
            Err(_) => {
                kill_group(pid);
                Err(BackendError::Timeout(format!(
                    "site {}: {} did not finish within {} ms",
                    self.site.site,
                    argv.join(" "),
                    timeout.as_millis()
                )))
            }
        }
    }

    /// Runs a program that must succeed.
    pub(crate) async fn bin_ok(
        &self,
        program: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<String, BackendError> {
        let out = self.bin(program, args, timeout).await?;
        self.succeeded(program, out)
    }

    /// Whether the server runs (`pg_ctl status`: 0 running, 3 stopped, 4 no data directory).
    pub(crate) async fn running(&self, data: &str) -> Result<bool, BackendError> {
        let out = self
            .bin(
                "pg_ctl",
                &["status".into(), "-D".into(), data.into()],
                Duration::from_secs(10),
            )
            .await?;
        match out.code {
            Some(0) => Ok(true),
            Some(3) => Ok(false),
            _ => Err(BackendError::Unavailable(format!(
                "site {}: pg_ctl status: {}{}",
                self.site.site,
                out.stdout.trim(),
                out.stderr.trim()
            ))),
        }
    }

    /// Starts the server on its port, with extra settings (`name`, `value`) on its command
    /// line.
    pub(crate) async fn start(
        &self,
        data: &str,
        port: u16,
        settings: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<(), BackendError> {
        // pg_ctl hands these to its own shell.
        let mut opts = format!("-p {port}");
        for (name, value) in settings {
            opts.push_str(" -c ");
            opts.push_str(&shell_quote(&format!("{name}={value}")));
        }
        self.bin_ok(
            "pg_ctl",
            &[
                "start".into(),
                "-D".into(),
                data.into(),
                "-w".into(),
                "-t".into(),
                timeout.as_secs().max(5).to_string(),
                "-l".into(),
                if data == self.data() {
                    self.log()
                } else {
                    format!("{data}.log")
                },
                "-o".into(),
                opts,
            ],
            timeout + Duration::from_secs(5),
        )
        .await
        .map(|_| ())
    }

    /// Stops the server (`fast` or `immediate`); a stopped server is fine.
    pub(crate) async fn stop(
        &self,
        data: &str,
        mode: &str,
        timeout: Duration,
    ) -> Result<(), BackendError> {
        if !self.running(data).await? {
            return Ok(());
        }
        self.bin_ok(
            "pg_ctl",
            &[
                "stop".into(),
                "-D".into(),
                data.into(),
                "-m".into(),
                mode.into(),
                "-w".into(),
                "-t".into(),
                timeout.as_secs().max(5).to_string(),
            ],
            timeout + Duration::from_secs(5),
        )
        .await
        .map(|_| ())
    }

    /// `pg_controldata` as a map.
    pub(crate) async fn controldata(&self) -> Result<BTreeMap<String, String>, BackendError> {
        let out = self
            .bin_ok(
                "pg_controldata",
                &["-D".into(), self.data()],
                Duration::from_secs(10),
            )
            .await?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect())
    }
}

/// How much of a streaming program's error output is kept.
const STDERR_KEPT: usize = 16 * 1024;

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// A running program whose standard output is read line by line, in constant memory. It is
/// killed (its whole process group) when its deadline passes or when it is dropped unfinished.
pub(crate) struct Stream {
    site: String,
    program: String,
    pid: Option<u32>,
    child: Child,
    stdout: BufReader<ChildStdout>,
    stderr: tokio::task::JoinHandle<String>,
    deadline: Instant,
}

impl Stream {
    /// Reads the next line into `line` (cleared first, without its newline); `false` at the
    /// end of the output.
    pub(crate) async fn next_line(&mut self, line: &mut Vec<u8>) -> Result<bool, BackendError> {
        line.clear();
        let read =
            tokio::time::timeout_at(self.deadline.into(), self.stdout.read_until(b'\n', line))
                .await;
        match read {
            Ok(Ok(0)) => Ok(false),
            Ok(Ok(_)) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                Ok(true)
            }
            Ok(Err(e)) => Err(BackendError::Unavailable(format!(
                "site {}: reading the output of {}: {e}",
                self.site, self.program
            ))),
            Err(_) => Err(self.timed_out()),
        }
    }

    fn timed_out(&self) -> BackendError {
        kill_group(self.pid);
        BackendError::Timeout(format!(
            "site {}: {} did not finish before the step's deadline",
            self.site, self.program
        ))
    }

    /// Waits for the program to exit; an error (with the start of its error output) unless it
    /// exited with 0.
    pub(crate) async fn finish(mut self) -> Result<(), BackendError> {
        let status = match tokio::time::timeout_at(self.deadline.into(), self.child.wait()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(BackendError::Unavailable(format!(
                    "site {}: {} failed: {e}",
                    self.site, self.program
                )));
            }
            Err(_) => return Err(self.timed_out()),
        };
        self.pid = None;
        let stderr = (&mut self.stderr).await.unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(BackendError::Unavailable(format!(
                "site {}: {} failed ({:?}): {}",
                self.site,
                self.program,
                status.code(),
                stderr.trim()
            )))
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // Unfinished: the program is not waited for, so its group is ended.
        kill_group(self.pid);
    }
}

/// Quotes a word for a POSIX shell: `'…'`, each `'` inside written as `'\''`.
pub(crate) fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// Parses an LSN (`16/B374D848`) into a byte position.
pub(crate) fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Formats a byte position as an LSN.
pub(crate) fn format_lsn(v: u64) -> String {
    format!("{:X}/{:X}", v >> 32, v & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_a_shell() {
        for word in [
            "plain",
            "two words",
            "it's",
            "$HOME `x` \\ \"q\" ;|&",
            "",
            "'",
        ] {
            let out = std::process::Command::new("sh")
                .args(["-c", &format!("printf %s {}", shell_quote(word))])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), word);
        }
    }

    #[test]
    fn lsn_round_trip() {
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
        assert_eq!(format_lsn(parse_lsn("0/3000028").unwrap_or(0)), "0/3000028");
        assert_eq!(parse_lsn("nonsense"), None);
    }
}
