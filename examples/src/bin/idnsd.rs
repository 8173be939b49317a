//! `idnsd`: the idns controller as a daemon, driven by one TOML file.
//!
//! ```text
//! idnsd --config /etc/idns/idnsd.toml   # run until SIGTERM/SIGINT
//! idnsd --check /etc/idns/idnsd.toml    # only check the file
//! idnsd --completions bash               # the shell completion script
//! idnsd --man                            # the man page (roff)
//! ```
//!
//! Exit status: 0 after a graceful shutdown (or a valid file with `--check`); 2 when the
//! configuration is refused (every problem is listed on stderr, nothing is started); 1 when
//! the daemon could not start or a service's controller failed.
//!
//! The API is plain HTTP unless `[daemon] tls = { cert_file = "…", key_file = "…" }` gives it
//! a certificate: then it is HTTPS only, and `--check` shows its `https://` address.
//!
//! Logs go to stderr; `IDNS_LOG` (or `RUST_LOG`) sets the filter, default `info`.

// A command-line program talks to its user on stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use idns_examples::cli::{self, Shell};
use idns_examples::daemon::{DaemonConfig, run};
use tracing_subscriber::EnvFilter;

/// The idns controller: health probes, the election, DNS and replication backends, an HTTP
/// API and Prometheus metrics, from one configuration file.
#[derive(Debug, Parser)]
#[command(name = "idnsd", version, after_long_help = EXIT_STATUS)]
struct Args {
    /// Run the daemon from this configuration file.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present_any = ["check", "completions", "man"],
        conflicts_with = "check"
    )]
    config: Option<PathBuf>,
    /// Only check this configuration file: exit 0 when it is valid, 2 with every problem.
    #[arg(long, value_name = "FILE")]
    check: Option<PathBuf>,
    /// Print the shell completion script of idnsd and exit.
    #[arg(long, value_name = "SHELL", exclusive = true)]
    completions: Option<Shell>,
    /// Print idnsd's man page (roff) and exit.
    #[arg(long, exclusive = true)]
    man: bool,
}

/// Exit codes, as `--help` and the man page show them.
const EXIT_STATUS: &str = "Exit status: 0 after a graceful shutdown (or a valid file with \
--check); 2 when the configuration is refused (every problem is listed, nothing is started); 1 \
when the daemon could not start or a service's controller failed. Logs go to stderr; IDNS_LOG \
(or RUST_LOG) sets the filter, default info.";

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(shell) = args.completions {
        cli::completions(Args::command(), shell, &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    if args.man {
        return match cli::man(Args::command(), &mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("idnsd: cannot write the man page: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let filter = std::env::var("IDNS_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("idnsd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (path, only_check) = match (args.config, args.check) {
        (_, Some(p)) => (p, true),
        (Some(p), None) => (p, false),
        (None, None) => return ExitCode::from(2),
    };
    let cfg = match runtime.block_on(async { DaemonConfig::load(&path) }) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if only_check {
        println!("{}: valid\n{}", path.display(), cfg.summary());
        for w in cfg.warnings() {
            eprintln!("warning: {w}");
        }
        return ExitCode::SUCCESS;
    }
    let result = runtime.block_on(run(cfg));
    // A replication pass on a blocking thread may still be reading: its copy is not the
    // journal, so do not wait long for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "idnsd stopped");
            eprintln!("idnsd: {e}");
            ExitCode::FAILURE
        }
    }
}
