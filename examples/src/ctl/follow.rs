//! Following a runbook to its end, with a progress bar per step (through the long-poll of
//! `/events`, which also tells how a runbook ended when its events were dropped), and
//! watching a service's events as they come (through its event stream).

use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

use idns_core::Event;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::client::{Client, ClientError, StreamMessage};
use super::render::{ms, switch_line};
use crate::daemon::service::summary;
use crate::daemon::wire::{CommandAccepted, EventRecord, EventsReset, MissedEvents, ReportSummary};

/// How to show a runbook's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Progress bars on the terminal (stderr), the summary on the output.
    Bars,
    /// One line per step and progress report on the output.
    Lines,
    /// The runbook's events as the API gives them, then its report: one JSON document per
    /// line on the output.
    Json,
}

/// Follows the runbook a command started until it ends. Returns its report when it
/// completes and [`ClientError::Aborted`] when it does not.
pub async fn follow(
    client: &Client,
    service: &str,
    accepted: &CommandAccepted,
    out: &mut (dyn Write + Send),
    mode: Progress,
) -> Result<Option<ReportSummary>, ClientError> {
    let Some(runbook) = accepted.runbook else {
        return Ok(None);
    };
    let mut view = Follower::new(runbook, mode);
    let mut after = accepted.after;
    loop {
        let page = client
            .events(service, after, Duration::from_secs(20))
            .await?;
        for record in &page.events {
            if mode == Progress::Json && concerns(record, runbook) {
                writeln!(out, "{}", json_line(record)?)?;
            }
            if let Some(done) = view.on(record, out)? {
                view.finish();
                return finished(done, out, mode);
            }
        }
        if page.missed || page.events.is_empty() {
            // Events may have been dropped: the status knows how the runbook ended.
            let status = client.service(service).await?;
            let ended = [&status.last_switch, &status.last_drill]
                .into_iter()
                .flatten()
                .find(|r| r.runbook == runbook)
                .cloned();
            if let Some(r) = ended {
                view.finish();
                return finished(r, out, mode);
            }
        }
        after = page.next;
    }
}

/// Whether an event record belongs to `runbook` (its decision, steps, progress or end).
fn concerns(record: &EventRecord, runbook: u64) -> bool {
    if record.progress.is_some() {
        return true;
    }
    match &record.event {
        Some(
            Event::Decision { runbook: r, .. }
            | Event::StepFinished { runbook: r, .. }
            | Event::Held { runbook: r, .. },
        ) => *r == runbook,
        Some(Event::StepStarted { id, .. } | Event::StepRetry { id, .. }) => id.runbook == runbook,
        Some(Event::Finished(r)) => r.runbook == runbook,
        _ => false,
    }
}

fn json_line<T: serde::Serialize>(v: &T) -> Result<String, ClientError> {
    serde_json::to_string(v).map_err(|e| ClientError::Protocol(e.to_string()))
}

fn finished(
    r: ReportSummary,
    out: &mut (dyn Write + Send),
    mode: Progress,
) -> Result<Option<ReportSummary>, ClientError> {
    if mode == Progress::Json {
        writeln!(out, "{}", json_line(&r)?)?;
    } else {
        writeln!(out, "{}", switch_line(&r))?;
        for p in &r.phases {
            writeln!(out, "  {:<12} {:>10}", p.phase, ms(p.seconds))?;
        }
    }
    if r.outcome == "completed" {
        Ok(Some(r))
    } else {
        let detail: Vec<String> = r
            .steps
            .iter()
            .filter(|s| s.status != "done")
            .map(|s| format!("{} {}: {}", s.status, s.description, s.detail))
            .collect();
        Err(ClientError::Aborted {
            kind: r.kind,
            detail: detail.join("; "),
        })
    }
}

/// Draws one runbook's steps.
struct Follower {
    runbook: u64,
    mode: Progress,
    bars: MultiProgress,
    current: Option<ProgressBar>,
    bytes: bool,
}

impl Follower {
    fn new(runbook: u64, mode: Progress) -> Self {
        let bars = MultiProgress::with_draw_target(match mode {
            Progress::Bars => ProgressDrawTarget::stderr(),
            Progress::Lines | Progress::Json => ProgressDrawTarget::hidden(),
        });
        Self {
            runbook,
            mode,
            bars,
            current: None,
            bytes: false,
        }
    }

    fn line(&self, out: &mut (dyn Write + Send), text: &str) -> std::io::Result<()> {
        match self.mode {
            Progress::Lines => writeln!(out, "{text}"),
            Progress::Bars => self.bars.println(text),
            // The records themselves are printed instead.
            Progress::Json => Ok(()),
        }
    }

    /// Handles one event; returns the report when the runbook has ended.
    fn on(
        &mut self,
        record: &EventRecord,
        out: &mut (dyn Write + Send),
    ) -> Result<Option<ReportSummary>, ClientError> {
        if let Some(p) = &record.progress {
            if self.current.is_none() {
                return Ok(None);
            }
            match self.mode {
                Progress::Json => {}
                Progress::Lines => self.line(out, &format!("    {}", record.text))?,
                Progress::Bars => {
                    if let Some(bar) = &self.current {
                        if !self.bytes {
                            bar.set_style(
                                ProgressStyle::with_template(
                                    "  {spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {elapsed}",
                                )
                                .unwrap_or_else(|_| ProgressStyle::default_bar()),
                            );
                            self.bytes = true;
                        }
                        bar.set_length(p.bytes_total);
                        bar.set_position(p.bytes_done);
                    }
                }
            }
            return Ok(None);
        }
        let Some(event) = &record.event else {
            return Ok(None);
        };
        match event {
            // The daemon's wording of an event is its text.
            Event::Decision { runbook, .. } if *runbook == self.runbook => {
                self.line(out, &record.text)?;
            }
            Event::StepStarted {
                id, description, ..
            } if id.runbook == self.runbook => {
                self.bytes = false;
                match self.mode {
                    Progress::Json => {}
                    Progress::Lines => self.line(out, &format!("  started  {description}"))?,
                    Progress::Bars => {
                        let bar = self.bars.add(ProgressBar::new_spinner());
                        bar.set_style(
                            ProgressStyle::with_template("  {spinner} {msg} {elapsed}")
                                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        );
                        bar.set_message(description.clone());
                        bar.enable_steady_tick(Duration::from_millis(100));
                        if let Some(old) = self.current.replace(bar) {
                            old.finish_and_clear();
                        }
                    }
                }
            }
            Event::StepRetry { id, .. } if id.runbook == self.runbook => {
                self.line(out, &format!("  {}", record.text))?;
            }
            Event::StepFinished { runbook, record } if *runbook == self.runbook => {
                let mut text = format!(
                    "  {:<8} {} ({})",
                    format!("{:?}", record.status).to_lowercase(),
                    record.description,
                    ms(record.duration.as_secs_f64())
                );
                if !record.detail.is_empty() {
                    let _ = write!(text, ": {}", record.detail);
                }
                // The bar gives way to a permanent line.
                if let Some(bar) = self.current.take() {
                    bar.finish_and_clear();
                }
                self.line(out, &text)?;
            }
            Event::Held { runbook, .. } if *runbook == self.runbook => {
                self.line(out, &format!("  {}", record.text))?;
            }
            Event::Finished(r) if r.runbook == self.runbook => {
                return Ok(Some(summary(r)));
            }
            _ => {}
        }
        Ok(None)
    }

    fn finish(&mut self) {
        if let Some(bar) = self.current.take() {
            bar.finish_and_clear();
        }
        let _ = self.bars.clear();
    }
}

/// Reconnections `watch` tries in a row before it gives up.
pub const WATCH_RETRIES: u32 = 6;
/// Longest an event stream may stay silent (the daemon sends a keep-alive every 15 s).
const WATCH_IDLE: Duration = Duration::from_secs(45);

/// Prints the events of `service` after event `after` as they come, from the daemon's event
/// stream: each as the daemon words it (`<time>  <text>`), or with `json` as its JSON, one per
/// line. After a disconnect it reconnects from the last event it printed (`Last-Event-ID`),
/// waiting longer each time; after [`WATCH_RETRIES`] failed attempts in a row it returns
/// [`ClientError::Unreachable`] naming the URL. Refusals (token, unknown service) end it at
/// once. It runs until the process is interrupted.
pub async fn watch(
    client: &Client,
    service: &str,
    after: u64,
    out: &mut (dyn Write + Send),
    json: bool,
) -> Result<(), ClientError> {
    let mut last = after;
    let mut failures = 0u32;
    loop {
        let lost = match client.event_stream(service, last).await {
            Ok(mut stream) => {
                let end = loop {
                    match stream.next(WATCH_IDLE).await {
                        Ok(Some(message)) => {
                            print_message(&message, out, json)?;
                            if let Some(id) = message.id {
                                last = id;
                            }
                        }
                        Ok(None) => {
                            break ClientError::Unreachable {
                                url: stream.url().to_owned(),
                                detail: "the daemon ended the event stream".into(),
                            };
                        }
                        Err(e) => break e,
                    }
                };
                // A stream that carried something was a good connection: count anew.
                if stream.heard() {
                    failures = 0;
                }
                end
            }
            Err(
                e @ (ClientError::Unreachable { .. }
                | ClientError::Server { .. }
                | ClientError::Protocol(_)),
            ) => e,
            Err(e) => return Err(e),
        };
        failures += 1;
        if failures > WATCH_RETRIES {
            return Err(match lost {
                ClientError::Unreachable { url, detail } => ClientError::Unreachable {
                    url,
                    detail: format!("{detail}; gave up after {WATCH_RETRIES} reconnections"),
                },
                other => other,
            });
        }
        let backoff = Duration::from_millis(250 << failures.min(6));
        tracing::debug!(error = %lost, ?backoff, "event stream lost; reconnecting");
        tokio::time::sleep(backoff).await;
    }
}

/// Prints one message of the event stream.
fn print_message(
    message: &StreamMessage,
    out: &mut (dyn Write + Send),
    json: bool,
) -> Result<(), ClientError> {
    if json {
        writeln!(out, "{}", message.data)?;
    } else if message.event == "reset" {
        let reset: EventsReset = serde_json::from_str(&message.data)
            .map_err(|e| ClientError::Protocol(format!("a reset event: {e}")))?;
        writeln!(
            out,
            "(the daemon restarted: its events are numbered anew, up to {} so far)",
            reset.last
        )?;
    } else if message.event == "missed" {
        let missed: MissedEvents = serde_json::from_str(&message.data)
            .map_err(|e| ClientError::Protocol(format!("a missed event: {e}")))?;
        writeln!(
            out,
            "({} events missed: the daemon no longer keeps them)",
            missed.missed
        )?;
    } else {
        let record: EventRecord = serde_json::from_str(&message.data)
            .map_err(|e| ClientError::Protocol(format!("event {:?}: {e}", message.id)))?;
        writeln!(out, "{}  {}", record.at, record.text)?;
    }
    out.flush()?;
    Ok(())
}
