//! Running the daemon until a signal: SIGTERM or SIGINT stop it gracefully; a second signal
//! stops it at once.

use tokio::signal::unix::{SignalKind, signal};

use super::config::DaemonConfig;
use super::start::{Daemon, StartError};

/// How a run of the daemon ended badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// It could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// A service's controller stopped by itself, or could not save its journal when
    /// stopping.
    #[error("service {service}: {source}")]
    Controller {
        /// The service.
        service: String,
        /// What went wrong.
        #[source]
        source: idns_core::Error,
    },
    /// A second signal cut the graceful shutdown short.
    #[error("stopped at once by a second signal; the journals hold the state before the last step")]
    Interrupted,
}

/// Starts the daemon and runs it until SIGTERM or SIGINT (graceful shutdown, journals saved:
/// `Ok`) or until a service's controller stops on its own (an error). A second signal during the graceful
/// shutdown stops at once.
pub async fn run(cfg: DaemonConfig) -> Result<(), RunError> {
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let mut daemon = Daemon::start(cfg).await?;
    let failed = tokio::select! {
        _ = term.recv() => { tracing::info!("SIGTERM"); None }
        _ = int.recv() => { tracing::info!("SIGINT"); None }
        (service, result) = daemon.controller_stopped() => Some((service, result)),
    };
    let shutdown = daemon.shutdown();
    let result = tokio::select! {
        r = shutdown => r,
        _ = term.recv() => return Err(RunError::Interrupted),
        _ = int.recv() => return Err(RunError::Interrupted),
    };
    if let Some((service, end)) = failed {
        let source = match end {
            Err(e) => e,
            Ok(()) => idns_core::Error::Stopped,
        };
        return Err(RunError::Controller { service, source });
    }
    result.map_err(|source| RunError::Controller {
        service: "(shutdown)".into(),
        source,
    })
}
