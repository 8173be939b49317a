//! Local control of one site's cluster: `pg_ctl`, `pg_rewind`, `psql` and friends, run through
//! the site's command prefix and as its OS user.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use idns_core::BackendError;

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

    fn argv(&self, program: String, args: &[String]) -> Vec<String> {
        let mut v: Vec<String> = self.site.command_prefix.clone();
        if self.site.command_prefix.is_empty() && rustix::process::geteuid().is_root() {
            v.extend(["runuser", "-u", &self.site.os_user, "--"].map(String::from));
        }
        v.push(program);
        v.extend(args.iter().cloned());
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

    async fn exec(&self, argv: Vec<String>, timeout: Duration) -> Result<Output, BackendError> {
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        tracing::debug!(site = %self.site.site, command = ?argv, "running");
        let child = cmd.spawn().map_err(|e| {
            BackendError::Unavailable(format!(
                "site {}: cannot run {:?}: {e}",
                self.site.site, argv[0]
            ))
        })?;
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
                if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
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

    /// Starts the server on its port, with extra server options.
    pub(crate) async fn start(
        &self,
        data: &str,
        port: u16,
        extra: &str,
        timeout: Duration,
    ) -> Result<(), BackendError> {
        let opts = format!("-p {port} {extra}");
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
    fn lsn_round_trip() {
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
        assert_eq!(format_lsn(parse_lsn("0/3000028").unwrap_or(0)), "0/3000028");
        assert_eq!(parse_lsn("nonsense"), None);
    }
}
