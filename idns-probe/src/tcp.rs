//! The TCP port probe: the paper's "server port probing", with F5's send and receive strings.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use idns_core::{ConfigError, Probe, ProbeOutcome, ProbeStatus};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::matcher::Matcher;
use crate::spec::target::{
    AliasSpec, BuildContext, Endpoint, Target, check_window, default_window,
};
use idns_core::Problems;

/// A TCP port check, as written (`kind = "tcp"`): connect; optionally send bytes and expect a
/// reply, all within the probe's timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSpec {
    /// The port on the site's address (or `alias.port`).
    #[serde(default)]
    pub port: Option<u16>,
    /// Bytes sent once connected (the F5 "send string"; TOML/JSON escapes such as `\r\n` work).
    #[serde(default)]
    pub send: Option<String>,
    /// A substring the reply must contain (the F5 "receive string").
    #[serde(default)]
    pub expect: Option<String>,
    /// A regex the reply must match (instead of `expect`).
    #[serde(default)]
    pub expect_regex: Option<String>,
    /// Compare ignoring case.
    #[serde(default)]
    pub case_insensitive: bool,
    /// How many bytes of the reply are searched (default 64 KiB).
    #[serde(default = "default_window")]
    pub reply_window: usize,
    /// Probe another address and/or port on the site's behalf.
    #[serde(default)]
    pub alias: Option<AliasSpec>,
    /// Log this probe's details at `info` instead of `debug`.
    #[serde(default)]
    pub debug: bool,
}

/// A built TCP port probe.
#[derive(Debug)]
pub struct TcpProbe {
    label: String,
    endpoint: Endpoint,
    port: u16,
    send: Option<Vec<u8>>,
    matcher: Option<Matcher>,
    window: usize,
    timeout: Duration,
    debug: bool,
}

impl TcpProbe {
    pub(crate) fn new(
        ctx: &BuildContext,
        spec: &TcpSpec,
        target: &Target,
    ) -> Result<TcpProbe, ConfigError> {
        let path = ctx.path.as_str();
        let mut p = Problems::default();
        let port = spec.alias.as_ref().and_then(|a| a.port).or(spec.port);
        match (port, spec.alias.as_ref().and_then(|a| a.port)) {
            (None, _) => p.push(
                format!("{path}.port"),
                "",
                "is missing: which port to probe",
            ),
            (Some(0), Some(_)) => p.push(format!("{path}.alias.port"), 0, "must be 1-65535"),
            (Some(0), None) => p.push(format!("{path}.port"), 0, "must be 1-65535"),
            _ => {}
        }
        let matcher = Matcher::from_fields(
            &mut p,
            path,
            spec.expect.as_deref(),
            spec.expect_regex.as_deref(),
            spec.case_insensitive,
        );
        check_window(&mut p, &format!("{path}.reply_window"), spec.reply_window);
        if spec.send.as_deref() == Some("") {
            p.push(
                format!("{path}.send"),
                "\"\"",
                "must not be empty (leave it out)",
            );
        }
        let endpoint = Endpoint::choose(&mut p, path, spec.alias.as_ref(), target);
        p.finish()?;
        let (Some(port), Some(endpoint)) = (port, endpoint) else {
            return Err(ConfigError::single(path, "", "is invalid"));
        };
        Ok(TcpProbe {
            label: ctx.label.clone(),
            endpoint,
            port,
            send: spec.send.as_ref().map(|s| s.as_bytes().to_vec()),
            matcher,
            window: spec.reply_window,
            timeout: ctx.timeout,
            debug: spec.debug,
        })
    }

    fn shown(&self) -> String {
        match &self.endpoint {
            Endpoint::Addr(ip) => SocketAddr::new(*ip, self.port).to_string(),
            Endpoint::Host(h) => format!("{h}:{}", self.port),
        }
    }

    async fn attempt(&self, phase: &mut Phase, read: &mut usize) -> Result<(), String> {
        let mut stream = match &self.endpoint {
            Endpoint::Addr(ip) => TcpStream::connect(SocketAddr::new(*ip, self.port)).await,
            Endpoint::Host(h) => TcpStream::connect((h.as_str(), self.port)).await,
        }
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                format!("connection refused by {}", self.shown())
            }
            _ => format!("connect to {}: {e}", self.shown()),
        })?;
        // Close with a reset rather than a FIN: a health check has nothing left to say, and
        // thousands of checks a second would otherwise fill the port range with TIME_WAIT.
        // Best effort: a socket that refuses the option closes normally.
        let _ = stream.set_zero_linger();
        if let Some(send) = &self.send {
            *phase = Phase::Send;
            stream
                .write_all(send)
                .await
                .map_err(|e| format!("sending to {}: {e}", self.shown()))?;
        }
        let Some(matcher) = &self.matcher else {
            return Ok(());
        };
        *phase = Phase::Reply;
        let mut buf = vec![0u8; self.window.min(4096)];
        let mut len = 0;
        loop {
            if len == buf.len() {
                buf.resize((buf.len() * 2).min(self.window), 0);
            }
            let n = stream
                .read(&mut buf[len..])
                .await
                .map_err(|e| format!("reading the reply after {len} bytes: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "{} not found in the reply ({len} bytes, then the peer closed)",
                    matcher.shown()
                ));
            }
            len += n;
            *read = len;
            if matcher.is_match(&buf[..len]) {
                return Ok(());
            }
            if len >= self.window {
                return Err(format!(
                    "{} not found in the first {} bytes of the reply",
                    matcher.shown(),
                    self.window
                ));
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Connect,
    Send,
    Reply,
}

#[async_trait]
impl Probe for TcpProbe {
    async fn check(&self) -> ProbeOutcome {
        let start = Instant::now();
        let mut phase = Phase::Connect;
        let mut read = 0;
        let result = tokio::time::timeout(self.timeout, self.attempt(&mut phase, &mut read)).await;
        let latency = start.elapsed();
        let outcome = match result {
            Ok(Ok(())) => ProbeOutcome::up(latency),
            Ok(Err(reason)) => ProbeOutcome::down(latency, reason),
            Err(_) => {
                let limit = humantime::format_duration(self.timeout);
                let mut o = ProbeOutcome::timeout(latency);
                o.reason = match phase {
                    Phase::Connect => {
                        format!("connect to {} timed out after {limit}", self.shown())
                    }
                    Phase::Send => format!("sending to {} timed out after {limit}", self.shown()),
                    Phase::Reply => match &self.matcher {
                        Some(m) if read > 0 => format!(
                            "{} not received within {limit} ({read} bytes of reply so far)",
                            m.shown()
                        ),
                        _ => format!("no reply from {} within {limit}", self.shown()),
                    },
                };
                o
            }
        };
        debug_assert!(outcome.status != ProbeStatus::Timeout || !outcome.reason.is_empty());
        crate::probe_log!(
            self.debug,
            "idns_probe::tcp",
            probe = %self.label,
            target = %self.shown(),
            status = ?outcome.status,
            latency = ?outcome.latency,
            reason = %outcome.reason,
            "tcp check"
        );
        outcome
    }
}
