//! Where the scheduler sends its reports: a channel, a closure, or the core driver's handle.

use std::future::Future;

use async_trait::async_trait;
use idns_core::ProbeReport;
use tokio::sync::mpsc;

/// The receiving end of [`ProbeReport`]s. The scheduler stops when a sink says it is closed.
///
/// Implemented for tokio `mpsc` senders; wrap anything else — such as `idns-core`'s
/// `runtime::Handle::report` — in [`sink_fn`]:
///
/// ```
/// use idns_core::runtime::Handle;
///
/// fn sink_for(handle: Handle) -> impl idns_probe::ReportSink {
///     idns_probe::sink_fn(move |report| {
///         let handle = handle.clone();
///         async move { handle.report(report).await }
///     })
/// }
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
