//! Where the scheduler sends its reports: a controller, a channel, or a closure.

use std::future::Future;

use async_trait::async_trait;
use idns_core::ProbeReport;
#[cfg(feature = "controller")]
use idns_core::runtime::Controller;
use tokio::sync::mpsc;

/// The receiving end of [`ProbeReport`]s. The scheduler stops when a sink says it is closed.
///
/// Implemented for `idns-core`'s `runtime::Controller` (feature `controller`, on by default),
/// so a scheduler reports straight into a controller and stops once the controller has
/// stopped ([`spawn_probes`](crate::spawn_probes) does the whole set-up); for tokio `mpsc` senders; and, for
/// anything else, async closures wrapped in [`sink_fn`]:
///
/// ```
/// use idns_core::ProbeReport;
///
/// let sink = idns_probe::sink_fn(|report: ProbeReport| async move {
///     tracing::info!(site = %report.site, status = ?report.outcome.status, "probe report");
///     Ok::<(), std::convert::Infallible>(())
/// });
/// # fn is_sink(_: &impl idns_probe::ReportSink) {}
/// # is_sink(&sink);
/// ```
#[async_trait]
pub trait ReportSink: Send + Sync + 'static {
    /// Delivers one report; an error means the receiver is gone for good.
    async fn report(&self, report: ProbeReport) -> Result<(), SinkClosed>;
}

/// The receiver of a [`ReportSink`] is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the report sink is closed: {0}")]
pub struct SinkClosed(pub String);

/// The paved path: `Scheduler::spawn(options, controller.clone(), probes)`, or
/// [`spawn_probes`](crate::spawn_probes).
#[cfg(feature = "controller")]
#[async_trait]
impl ReportSink for Controller {
    async fn report(&self, report: ProbeReport) -> Result<(), SinkClosed> {
        Controller::report(self, report)
            .await
            .map_err(|e| SinkClosed(e.to_string()))
    }
}

#[async_trait]
impl ReportSink for mpsc::Sender<ProbeReport> {
    async fn report(&self, report: ProbeReport) -> Result<(), SinkClosed> {
        self.send(report)
            .await
            .map_err(|_| SinkClosed("channel receiver dropped".to_owned()))
    }
}

#[async_trait]
impl ReportSink for mpsc::UnboundedSender<ProbeReport> {
    async fn report(&self, report: ProbeReport) -> Result<(), SinkClosed> {
        self.send(report)
            .map_err(|_| SinkClosed("channel receiver dropped".to_owned()))
    }
}

/// A [`ReportSink`] made of an async closure; see [`sink_fn`].
#[derive(Debug, Clone)]
pub struct FnSink<F>(F);

/// Makes a [`ReportSink`] of `f`, called once per report; an `Err` from it closes the sink.
pub fn sink_fn<F, Fut, E>(f: F) -> FnSink<F>
where
    F: Fn(ProbeReport) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display,
{
    FnSink(f)
}

#[async_trait]
impl<F, Fut, E> ReportSink for FnSink<F>
where
    F: Fn(ProbeReport) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display,
{
    async fn report(&self, report: ProbeReport) -> Result<(), SinkClosed> {
        (self.0)(report)
            .await
            .map_err(|e| SinkClosed(e.to_string()))
    }
}
