//! What `idnsctl` does: talk to idnsd's API, print readable tables, and follow a runbook to
//! its end with a progress bar per step.

use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

use idns_core::Event;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use super::service::{describe, summary};
use super::wire::{
    ApiError, CommandAccepted, EventRecord, EventsPage, ReportSummary, ServiceList, ServiceStatus,
};

/// Why a request to idnsd failed. [`exit_code`](Self::exit_code) maps it to `idnsctl`'s exit
/// status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing answered at the URL.
    #[error("cannot reach idnsd at {url}: {detail}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// The token was missing or wrong.
    #[error("idnsd refused the token (HTTP 401): {0}; pass --token or set IDNS_TOKEN")]
    Unauthorized(String),
    /// No such service (or endpoint).
    #[error("{0}")]
    NotFound(String),
    /// The request was wrong (unknown site, bad body).
    #[error("{0}")]
    BadRequest(String),
    /// The election refused the command; the message holds its reason.
    #[error("{0}")]
    Refused(String),
    /// The runbook ended without completing.
    #[error("the {kind} was aborted: {detail}")]
    Aborted {
        /// The runbook's kind.
        kind: String,
        /// Its failed steps.
        detail: String,
    },
    /// idnsd answered with another error.
    #[error("idnsd answered HTTP {status}: {message}")]
    Server {
        /// The status code.
        status: u16,
        /// Its message.
        message: String,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer from idnsd: {0}")]
    Protocol(String),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl ClientError {
    /// `idnsctl`'s exit status: 1 when the request or the runbook failed (refused, aborted,
    /// unknown service or site), 3 when idnsd cannot be reached or answers nonsense, 4 when
    /// the token is refused. (2 is a usage error, from the argument parser.)
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unreachable { .. }
            | ClientError::Server { .. }
            | ClientError::Protocol(_)
            | ClientError::Output(_) => 3,
            ClientError::Unauthorized(_) => 4,
            _ => 1,
        }
    }
}

/// A client of one idnsd.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client of the API at `url` (e.g. `http://127.0.0.1:9480`).
    pub fn new(url: &str, token: Option<String>) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ClientError::Protocol(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client {
            base: url.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T, ClientError> {
        let request = match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            url: url.to_owned(),
            detail: error_chain(&e),
        })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: url.to_owned(),
                detail: error_chain(&e),
            })?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| ClientError::Protocol(format!("{url}: {e}")));
        }
        let message = match serde_json::from_slice::<ApiError>(&body) {
            Ok(e) => e.message,
            Err(_) => String::from_utf8_lossy(&body).trim().to_owned(),
        };
        Err(match status {
            StatusCode::UNAUTHORIZED => ClientError::Unauthorized(message),
            StatusCode::NOT_FOUND => ClientError::NotFound(message),
            StatusCode::BAD_REQUEST => ClientError::BadRequest(message),
            StatusCode::CONFLICT => ClientError::Refused(message),
            s => ClientError::Server {
                status: s.as_u16(),
                message,
            },
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.get(&url), &url).await
    }

    /// Every service's status.
    pub async fn services(&self) -> Result<Vec<ServiceStatus>, ClientError> {
        Ok(self.get::<ServiceList>("/v1/services").await?.services)
    }

    /// One service's status.
    pub async fn service(&self, name: &str) -> Result<ServiceStatus, ClientError> {
        self.get(&format!("/v1/services/{}", segment(name))).await
    }

    /// Sends a command (`failover`, `failback`, `freeze`, `unfreeze`, `drill`, `drill/stop`,
    /// `resume`) with its JSON body.
    pub async fn command(
        &self,
        service: &str,
        action: &str,
        body: serde_json::Value,
    ) -> Result<CommandAccepted, ClientError> {
        let url = format!("{}/v1/services/{}/{action}", self.base, segment(service));
        self.send(self.http.post(&url).json(&body), &url).await
    }

    /// The events after `after`, waiting up to `wait` for one.
    pub async fn events(
        &self,
        service: &str,
        after: u64,
        wait: Duration,
    ) -> Result<EventsPage, ClientError> {
        self.get(&format!(
            "/v1/services/{}/events?after={after}&wait={}",
            segment(service),
            wait.as_secs_f64()
        ))
        .await
    }
}

/// A service name as one path segment.
fn segment(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            let _ = write!(s, ": {text}");
        }
        source = inner.source();
    }
    s
}

fn ms(seconds: f64) -> String {
    format!("{:.0} ms", seconds * 1000.0)
}

fn lag(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "-".to_owned(), |s| format!("{:.1} s", s))
}

/// Lays out rows in columns two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let pad = widths[c].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn switch_line(r: &ReportSummary) -> String {
    let mut s = format!(
        "{} {} -> {} {}: RTO {}",
        r.kind,
        r.from.as_deref().unwrap_or("-"),
        r.to.as_deref().unwrap_or("-"),
        r.outcome,
        ms(r.rto_seconds)
    );
    if let Some(rpo) = r.rpo_seconds {
        let _ = write!(s, ", RPO {}", ms(rpo));
    }
    s
}

/// The services as a table: service, active site, epoch, phase, each site's health, last
/// RTO and RPO.
pub fn render_table(services: &[ServiceStatus]) -> String {
    let mut rows = vec![
        [
            "SERVICE",
            "ACTIVE",
            "EPOCH",
            "PHASE",
            "SITES",
            "LAST SWITCH",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for s in services {
        let sites: Vec<String> = s
            .sites
            .iter()
            .map(|x| format!("{}{} {}", x.id, if x.active { "*" } else { "" }, x.health))
            .collect();
        let mut phase = s.phase.clone();
        if s.frozen {
            phase.push_str(" (frozen)");
        }
        if !s.running {
            phase = "STOPPED".into();
        }
        rows.push(vec![
            s.name.clone(),
            s.active.clone(),
            s.epoch.to_string(),
            phase,
            sites.join(", "),
            s.last_switch.as_ref().map_or("-".to_owned(), switch_line),
        ]);
    }
    table(&rows)
}

/// One service in detail: sites with probes and reasons, replication, the last decision, the
/// runbook in progress and the last switch and drill, phase by phase.
pub fn render_detail(s: &ServiceStatus) -> String {
    let mut out = render_table(std::slice::from_ref(s));
    out.push('\n');
    let mut rows = vec![
        ["SITE", "PRIORITY", "HEALTH", "ELIGIBLE", "LAG", "WHY"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for x in &s.sites {
        rows.push(vec![
            format!("{}{}", x.id, if x.active { " (active)" } else { "" }),
            x.priority.to_string(),
            x.health.clone(),
            if x.eligible { "yes" } else { "no" }.to_owned(),
            lag(x.lag_seconds),
            x.reasons.join("; "),
        ]);
    }
    out.push_str(&table(&rows));
    let probes: Vec<Vec<String>> = s
        .sites
        .iter()
        .flat_map(|x| {
            x.probes.iter().map(move |p| {
                vec![
                    x.id.clone(),
                    p.probe.clone(),
                    p.observer.clone(),
                    p.status.clone(),
                    ms(p.latency_seconds),
                    p.reason.clone(),
                ]
            })
        })
        .collect();
    if !probes.is_empty() {
        out.push('\n');
        let mut rows = vec![
            ["SITE", "PROBE", "OBSERVER", "LAST", "LATENCY", "REASON"]
                .map(str::to_owned)
                .to_vec(),
        ];
        rows.extend(probes);
        out.push_str(&table(&rows));
    }
    if !s.replication.is_empty() {
        out.push('\n');
        let mut rows = vec![
            ["RESOURCE", "SITE", "ROLE", "LAG"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for r in &s.replication {
            rows.push(vec![
                r.resource.clone(),
                r.site.clone(),
                r.role.clone(),
                lag(r.lag_seconds),
            ]);
        }
        out.push_str(&table(&rows));
    }
    if let Some(d) = &s.decision {
        let _ = write!(
            out,
            "\nlast decision: {} {} -> {} at epoch {}{} ({})\n",
            d.kind,
            d.from.as_deref().unwrap_or("-"),
            d.to.as_deref().unwrap_or("-"),
            d.epoch,
            if d.forced { ", forced" } else { "" },
            d.at
        );
        for r in &d.reasons {
            let _ = writeln!(out, "  because {r}");
        }
    }
    if let Some(r) = &s.runbook {
        let _ = writeln!(
            out,
            "\nrunbook {} in progress: {} -> {} at epoch {}",
            r.kind,
            r.from.as_deref().unwrap_or("-"),
            r.to.as_deref().unwrap_or("-"),
            r.epoch
        );
        if let Some(h) = &r.held {
            let _ = writeln!(
                out,
                "  HELD: {h} (idnsctl resume {} retry|skip|abort)",
                s.name
            );
        }
        for st in &r.steps {
            let _ = writeln!(
                out,
                "  {:<8} {}{}",
                st.status,
                st.description,
                st.seconds
                    .map(|x| format!(" ({})", ms(x)))
                    .unwrap_or_default()
            );
        }
    }
    for (label, r) in [
        ("last switch", &s.last_switch),
        ("last drill", &s.last_drill),
    ] {
        if let Some(r) = r {
            let _ = writeln!(
                out,
                "\n{label}: {} (finished {})",
                switch_line(r),
                r.finished_at
            );
            for p in &r.phases {
                let _ = writeln!(out, "  {:<12} {:>10}", p.phase, ms(p.seconds));
            }
        }
    }
    out
}

/// How to show a runbook's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Progress bars on the terminal (stderr), the summary on the output.
    Bars,
    /// One line per step and progress report on the output.
    Lines,
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
            if let Some(done) = view.on(record, out)? {
                view.finish();
                return finished(done, out);
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
                return finished(r, out);
            }
        }
        after = page.next;
    }
}

fn finished(
    r: ReportSummary,
    out: &mut (dyn Write + Send),
) -> Result<Option<ReportSummary>, ClientError> {
    writeln!(out, "{}", switch_line(&r))?;
    for p in &r.phases {
        writeln!(out, "  {:<12} {:>10}", p.phase, ms(p.seconds))?;
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
            Progress::Lines => ProgressDrawTarget::hidden(),
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
            Event::Decision { runbook, .. } if *runbook == self.runbook => {
                self.line(out, &describe(event))?;
            }
            Event::StepStarted {
                id, description, ..
            } if id.runbook == self.runbook => {
                self.bytes = false;
                match self.mode {
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
                self.line(out, &format!("  {}", describe(event)))?;
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
                self.line(out, &format!("  {}", describe(event)))?;
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
