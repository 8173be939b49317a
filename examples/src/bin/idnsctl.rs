//! `idnsctl`: the command-line client of idnsd's API.
//!
//! ```text
//! idnsctl status [SERVICE] [--json]
//! idnsctl plan SERVICE [--to SITE | --failback] [--force]
//! idnsctl failover SERVICE [--to SITE] [--force] [--wait]
//! idnsctl failback SERVICE [--force] [--wait]
//! idnsctl freeze SERVICE | unfreeze SERVICE
//! idnsctl drill SERVICE [--to SITE] [--wait] | drill SERVICE --stop
//! idnsctl resume SERVICE retry|skip|abort [--wait]
//! idnsctl history SERVICE
//! idnsctl report SERVICE ID [--format md|html|json]
//! idnsctl watch SERVICE [--after N]
//! idnsctl completions bash|zsh|fish|elvish|powershell
//! idnsctl man
//! ```
//!
//! `--json` (any command) prints the API's JSON instead of text: `status` one document; a
//! command its acceptance, and with `--wait` every event of its runbook and then its report,
//! one JSON document per line; `history` one document; `report` its JSON (unless `--format`
//! says otherwise); `watch` each event as a JSON line.
//!
//! `history` lists the reports the daemon keeps of a service's finished switches and drills
//! (they survive its restarts); `report` prints one of them to stdout. `watch` prints the
//! service's events as they come until interrupted (Ctrl-C), reconnecting after a disconnect
//! from the last event it printed; it exits 3 when the daemon stays unreachable.
//!
//! `--url` (or `IDNS_URL`, default `http://127.0.0.1:9480`) is idnsd's API, `https://…` when
//! the daemon has `daemon.tls`; `--ca-file` (or `IDNS_CA_FILE`) names the PEM certificate of
//! the CA that signed the daemon's certificate (or the certificate itself, self-signed), which
//! is then the only one trusted; without it the system's trusted CAs are. `--token` (or
//! `IDNS_TOKEN`, or `--token-file`) is its bearer token. `--wait` follows the runbook step by
//! step, with progress bars on a terminal, and exits non-zero when it aborts.
//!
//! Exit status: 0 success; 1 refused, aborted, unknown service or site; 2 bad usage or an
//! unusable `--ca-file`; 3 idnsd unreachable, its certificate not trusted, or its answer not
//! understood; 4 token refused, or a read-only token sending a command.

// A command-line program talks to its user on stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use idns_examples::cli::{self, Shell};
use idns_examples::ctl::{self, Client, ClientError, Progress};
use serde_json::json;

/// Exit codes, as `--help` and the man page show them.
const EXIT_STATUS: &str = "Exit status: 0 success; 1 refused, aborted, unknown service or site; \
2 bad usage or an unusable --ca-file; 3 idnsd unreachable, its certificate not trusted, or its \
answer not understood; 4 token refused, or a read-only token sending a command.";

/// Talk to idnsd: status, failover, failback, freeze, drills.
#[derive(Debug, Parser)]
#[command(name = "idnsctl", version, after_long_help = EXIT_STATUS)]
struct Args {
    /// idnsd's API.
    #[arg(
        long,
        env = "IDNS_URL",
        default_value = "http://127.0.0.1:9480",
        global = true
    )]
    url: String,
    /// The API token.
    #[arg(long, env = "IDNS_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// A file holding the API token.
    #[arg(long, value_name = "FILE", global = true, conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// Trust only the CA certificates in this PEM file for an https:// URL (for a
    /// self-signed daemon certificate: the certificate itself).
    #[arg(long, env = "IDNS_CA_FILE", value_name = "FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// Print the API's JSON instead of text (with --wait: one JSON document per line).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Show every service (or one in detail).
    Status {
        /// The service's DNS name.
        service: Option<String>,
    },
    /// Fail over to another site.
    Failover {
        /// The service's DNS name.
        service: String,
        /// The target site (default: the best eligible one).
        #[arg(long)]
        to: Option<String>,
        /// Go past the health, RPO and dwell guards.
        #[arg(long)]
        force: bool,
        /// Follow the runbook until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// Return to the home site (reverse replication first).
    Failback {
        /// The service's DNS name.
        service: String,
        /// Go past the health and dwell guards.
        #[arg(long)]
        force: bool,
        /// Follow the runbook until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// Stop automatic decisions (commands still work).
    Freeze {
        /// The service's DNS name.
        service: String,
    },
    /// Resume automatic decisions.
    Unfreeze {
        /// The service's DNS name.
        service: String,
    },
    /// Rehearse a failover on the drill name, or stop a drill.
    Drill {
        /// The service's DNS name.
        service: String,
        /// The site to rehearse on (default: the preferred site other than the active one).
        #[arg(long, conflicts_with = "stop")]
        to: Option<String>,
        /// Stop the drill in progress (it cleans up).
        #[arg(long)]
        stop: bool,
        /// Follow the runbook until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// Continue a runbook held for an operator.
    Resume {
        /// The service's DNS name.
        service: String,
        /// What to do with the held step.
        #[arg(value_parser = ["retry", "skip", "abort"])]
        action: String,
        /// Follow the runbook until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// List the reports of a service's finished switches and drills, newest first.
    /// What a failover (or failback) would do now, and whether it would be allowed: the
    /// runbook's steps and every guard's value; nothing changes. Exits 1 when it would be
    /// refused.
    Plan {
        /// The service's DNS name.
        service: String,
        /// A failover to this site (default: the best eligible one).
        #[arg(long, conflicts_with = "failback")]
        to: Option<String>,
        /// Plan a failback instead.
        #[arg(long)]
        failback: bool,
        /// As if forced past the health, RPO and dwell guards.
        #[arg(long)]
        force: bool,
    },
    History {
        /// The service's DNS name.
        service: String,
    },
    /// Print one report (an id from `history`).
    Report {
        /// The service's DNS name.
        service: String,
        /// The report's id.
        id: String,
        /// Markdown, a self-contained HTML page, or JSON (default: md; json with --json).
        #[arg(long, value_parser = ["md", "html", "json"])]
        format: Option<String>,
    },
    /// Print a service's events as they come, until interrupted.
    Watch {
        /// The service's DNS name.
        service: String,
        /// Start after this event (0: every event the daemon still keeps; default: from now).
        #[arg(long, value_name = "N")]
        after: Option<u64>,
    },
    /// Print the shell completion script of idnsctl.
    Completions {
        /// The shell.
        shell: Shell,
    },
    /// Print idnsctl's man page (roff).
    Man,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idnsctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(args: Args) -> Result<(), ClientError> {
    match args.command {
        Cmd::Completions { shell } => {
            cli::completions(Args::command(), shell, &mut std::io::stdout());
            return Ok(());
        }
        Cmd::Man => return Ok(cli::man(Args::command(), &mut std::io::stdout())?),
        _ => {}
    }
    let json = args.json;
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| {
                    ClientError::BadRequest(format!(
                        "cannot read the token file {}: {e}",
                        f.display()
                    ))
                })?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    let c = Client::new(&args.url, token, args.ca_file.as_deref())?;
    let mut out = std::io::stdout();
    let (service, action, body, wait) = match args.command {
        Cmd::Completions { .. } | Cmd::Man => return Ok(()),
        Cmd::Status { service } => {
            match service {
                Some(name) => {
                    let s = c.service(&name).await?;
                    if json {
                        println!("{}", to_json(&s)?);
                    } else {
                        print!("{}", ctl::render_detail(&s));
                    }
                }
                None => {
                    let all = c.services().await?;
                    if json {
                        println!("{}", to_json(&json!({ "services": all }))?);
                    } else {
                        print!("{}", ctl::render_table(&all));
                    }
                }
            }
            return Ok(());
        }
        Cmd::Plan {
            service,
            to,
            failback,
            force,
        } => {
            let p = c.plan(&service, to.as_deref(), failback, force).await?;
            if json {
                println!("{}", to_json(&p)?);
            } else {
                print!("{}", ctl::render_plan(&service, &p));
            }
            if p.allowed {
                return Ok(());
            }
            return Err(ClientError::Refused(format!(
                "{} would be refused: {}",
                p.command,
                p.refused.unwrap_or_default()
            )));
        }
        Cmd::History { service } => {
            let h = c.history(&service).await?;
            if json {
                println!("{}", to_json(&h)?);
            } else {
                print!("{}", ctl::render_history(&h));
            }
            return Ok(());
        }
        Cmd::Report {
            service,
            id,
            format,
        } => {
            let format = format.unwrap_or_else(|| if json { "json" } else { "md" }.to_owned());
            let text = c.report(&service, &id, &format).await?;
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            return Ok(());
        }
        Cmd::Watch { service, after } => {
            let after = match after {
                Some(n) => n,
                None => c.service(&service).await?.last_event,
            };
            return ctl::watch(&c, &service, after, &mut out, json).await;
        }
        Cmd::Failover {
            service,
            to,
            force,
            wait,
        } => (
            service,
            "failover",
            json!({ "to": to, "force": force }),
            wait,
        ),
        Cmd::Failback {
            service,
            force,
            wait,
        } => (service, "failback", json!({ "force": force }), wait),
        Cmd::Freeze { service } => (service, "freeze", json!({}), false),
        Cmd::Unfreeze { service } => (service, "unfreeze", json!({}), false),
        Cmd::Drill {
            service,
            stop: true,
            wait,
            ..
        } => (service, "drill/stop", json!({}), wait),
        Cmd::Drill {
            service, to, wait, ..
        } => (service, "drill", json!({ "to": to }), wait),
        Cmd::Resume {
            service,
            action,
            wait,
        } => (service, "resume", json!({ "action": action }), wait),
    };
    let accepted = c.command(&service, action, body).await?;
    if json {
        println!("{}", to_json_line(&accepted)?);
    } else {
        println!(
            "accepted: {} for {} (epoch {}{})",
            accepted.command,
            accepted.service,
            accepted.epoch,
            accepted
                .runbook
                .map(|r| format!(", runbook {r}"))
                .unwrap_or_default()
        );
    }
    if wait {
        let mode = if json {
            Progress::Json
        } else if std::io::stderr().is_terminal() {
            Progress::Bars
        } else {
            Progress::Lines
        };
        ctl::follow(&c, &service, &accepted, &mut out, mode).await?;
    }
    Ok(())
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, ClientError> {
    serde_json::to_string_pretty(v).map_err(|e| ClientError::Protocol(e.to_string()))
}

fn to_json_line<T: serde::Serialize>(v: &T) -> Result<String, ClientError> {
    serde_json::to_string(v).map_err(|e| ClientError::Protocol(e.to_string()))
}
