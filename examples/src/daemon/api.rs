//! The HTTP API and `/metrics`.
//!
//! Every request needs `Authorization: Bearer <token>` (or Basic credentials with the token
//! as the password, which is how a browser sends it to the status page) — reads too, since a
//! status shows the topology and the reasons of decisions. There are two roles: the operator's
//! token (`daemon.token`) may do everything; the read-only token (`daemon.read_token`, for
//! dashboards and scrapers) may read status, events, reports, plans and `/metrics` but gets 403
//! for every command. `/metrics` is served without a token only with `daemon.metrics_public =
//! true`. Tokens are compared in constant time (as blake3 hashes).
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/services` (also `GET /v1/status`) | `{"services": [status, …]}` |
//! | `GET /v1/services/{name}` | the service's status: active site, epoch, phase, sites with health, reasons and probe results, replication, last decision, runbook in progress with its steps, last switch and drill with RTO per phase and RPO |
//! | `POST /v1/services/{name}/failover` `{"to": "b", "force": false}` | 202 with the runbook to follow, or 409 with the election's reason |
//! | `POST /v1/services/{name}/failback` `{"force": false}` | same |
//! | `POST /v1/services/{name}/freeze`, `/unfreeze` | same |
//! | `POST /v1/services/{name}/drill` `{"to": "b"}`, `POST …/drill/stop` | same |
//! | `POST /v1/services/{name}/resume` `{"action": "retry" \| "skip" \| "abort"}` | same, for a held runbook |
//! | `GET /v1/services/{name}/events?after=N&wait=S&limit=L` | events after `N`; waits up to `S` seconds (at most 30) for one |
//! | the same with `Accept: text/event-stream` | Server-Sent Events: every event after `N` (or the `Last-Event-ID` header) still in the log, then each new one as it comes, as `id: <seq>`, `event: <kind>`, `data: <the event's JSON>`; first an `event: missed` when some were dropped from the log (an `event: reset` when `N` is from before a restart); a comment every 15 s; the stream ends when the daemon stops |
//! | `GET /v1/services/{name}/report?kind=drill&format=md` | the report of the last finished runbook of that kind (default `drill`) since the daemon started: `json` (default), `md` (Markdown) or `html` (a self-contained page with an SVG timeline) |
//! | `GET /v1/services/{name}/history` | the reports of finished runbooks kept in `<journal_dir>/reports/` (the last `daemon.reports_keep`), newest first |
//! | `GET /v1/services/{name}/reports/{id}?format=md` | one of them: `json` (default: the summary, the election's report and its context), `md` or `html` |
//! | `GET /v1/services/{name}/plan?to=b&force=false` (or `?failback=true`) | what that failover (or failback) would do now, and whether it would be allowed: the runbook's steps with their timeouts and failure policies, every guard with its value, the refusal's reason (an [`idns_core::Plan`]); nothing changes |
//! | `GET /` | the status page (HTML, no outside assets): services, sites, health per observer, active site and epoch, the runbook in progress, the last switches with their timelines, refreshed from the event streams; the token may also come as the password of Basic credentials, which a browser asks for |
//! | `GET /metrics` | Prometheus text format |
//!
//! Errors are JSON: `{"error": "unknown_service", "message": "…"}` with 400 (bad request,
//! unknown site), 401 (no token or a wrong one), 403 (a read-only token sent a command), 404
//! (unknown service or report), 409 (refused), 413 (body over 16 KiB), 500 (the reports
//! cannot be read), 503 (the controller is stopping or does not answer).
//!
//! A hostile client cannot hold the daemon: bodies are capped, request headers must arrive
//! within 10 s, a request is cut after 60 s, a response the client stops reading is dropped
//! after 10 s without progress, one client address holds at most
//! `daemon.max_connections_per_client` connections (default 16; more are closed at once), and
//! at most 256 connections are served at once.
//!
//! With `daemon.tls` the API speaks HTTPS only (HTTP/1.1, [`ApiTls`]): a client must finish its
//! TLS handshake within 10 s, and the limits above hold for TLS connections the same way. A
//! client that speaks plain HTTP to it gets a TLS alert and a closed connection, no answer.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path as FilePath, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use idns_core::{Command, Resume, RunbookKind, Secret, SiteId};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_io_timeout::TimeoutStream;

use super::events::stopped;
use super::metrics;
use super::service::{ServiceRuntime, summary};
use super::wire::{
    ApiError, CommandAccepted, DrillRequest, EventRecord, EventsPage, EventsReset, FailbackRequest,
    FailoverRequest, History, MissedEvents, ResumeRequest, ServiceList,
};
use crate::report;

/// Largest request body accepted.
pub const MAX_BODY: usize = 16 * 1024;
/// Longest wait of an `/events` long-poll.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// Longest a request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Longest a response write may stall (the client does not read).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection may sit in a read: a long-poll and a request's time limit, and more.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for the controller to answer a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle event stream sends a comment, so proxies keep it open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Events an event stream takes from the log at once.
const STREAM_PAGE: usize = 500;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Status, events, reports and metrics.
    Reader,
    /// Everything, commands included.
    Operator,
}

/// Who may use the API.
#[derive(Debug)]
pub struct Access {
    /// The operator's token.
    pub operator: Secret,
    /// The read-only role's token, if one is configured.
    pub reader: Option<Secret>,
    /// Whether `/metrics` is served without a token.
    pub metrics_public: bool,
}

/// What the handlers share.
#[derive(Debug)]
pub struct ApiState {
    services: Vec<Arc<ServiceRuntime>>,
    operator: blake3::Hash,
    reader: Option<blake3::Hash>,
    metrics_public: bool,
    stop: watch::Receiver<bool>,
}

impl ApiState {
    /// The API over `services`, guarded by `access`; `stop` ends long-polls when it turns true.
    pub fn new(
        services: Vec<Arc<ServiceRuntime>>,
        access: &Access,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            services,
            operator: blake3::hash(access.operator.expose().as_bytes()),
            reader: access
                .reader
                .as_ref()
                .map(|t| blake3::hash(t.expose().as_bytes())),
            metrics_public: access.metrics_public,
            stop,
        }
    }

    /// The role of the request's bearer token; `None` without a token or with a wrong one.
    fn role(&self, headers: &HeaderMap) -> Option<Role> {
        let value = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())?;
        let (scheme, token) = value.trim().split_once(' ')?;
        // A browser showing the status page sends the token as Basic credentials' password
        // (any user name).
        let basic;
        let token = if scheme.eq_ignore_ascii_case("bearer") {
            token.trim()
        } else if scheme.eq_ignore_ascii_case("basic") {
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(token.trim())
                .ok()?;
            basic = String::from_utf8(decoded).ok()?;
            basic.split_once(':')?.1
        } else {
            return None;
        };
        // blake3::Hash compares in constant time.
        let hash = blake3::hash(token.as_bytes());
        if hash == self.operator {
            Some(Role::Operator)
        } else if self.reader.is_some_and(|r| r == hash) {
            Some(Role::Reader)
        } else {
            None
        }
    }

    fn service(&self, name: &str) -> Result<&Arc<ServiceRuntime>, Failure> {
        let wanted = name.trim_end_matches('.');
        self.services
            .iter()
            .find(|s| s.name().as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| {
                let known: Vec<String> =
                    self.services.iter().map(|s| s.name().to_string()).collect();
                Failure::new(
                    StatusCode::NOT_FOUND,
                    "unknown_service",
                    format!(
                        "no service named {name:?}; this daemon runs: {}",
                        known.join(", ")
                    ),
                )
            })
    }
}

/// An error answer.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(ApiError {
                error: self.code.to_owned(),
                message: self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

type Shared = State<Arc<ApiState>>;

/// The API's routes.
pub fn router(state: Arc<ApiState>) -> Router {
    let v1 = Router::new()
        .route("/v1/services", get(list))
        .route("/v1/status", get(list))
        .route("/v1/services/{name}", get(one))
        .route("/v1/services/{name}/failover", command(failover))
        .route("/v1/services/{name}/failback", command(failback))
        .route(
            "/v1/services/{name}/freeze",
            command(|_, Empty {}| Ok((Command::Freeze, "freeze".into()))),
        )
        .route(
            "/v1/services/{name}/unfreeze",
            command(|_, Empty {}| Ok((Command::Unfreeze, "unfreeze".into()))),
        )
        .route("/v1/services/{name}/drill", command(drill))
        .route(
            "/v1/services/{name}/drill/stop",
            command(|_, Empty {}| Ok((Command::StopDrill, "stop the drill".into()))),
        )
        .route("/v1/services/{name}/resume", command(resume))
        .route("/v1/services/{name}/events", get(events))
        .route("/v1/services/{name}/report", get(report))
        .route("/v1/services/{name}/plan", get(plan))
        .route("/v1/services/{name}/history", get(history))
        .route("/v1/services/{name}/reports/{id}", get(stored_report))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(v1)
        .route("/", get(status_page))
        .route("/metrics", get(metrics_page))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(time_limit))
        .with_state(state)
}

/// Reads (GET) need either role's token; everything else needs the operator's.
async fn require_token(State(state): Shared, req: Request, next: Next) -> Response {
    let needed = if req.method() == axum::http::Method::GET {
        Role::Reader
    } else {
        Role::Operator
    };
    match state.role(req.headers()) {
        Some(role) if role >= needed => next.run(req).await,
        Some(_) => Failure::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token may only read: commands need the operator's token (daemon.token)",
        )
        .into_response(),
        None => unauthorized().into_response(),
    }
}

fn unauthorized() -> Failure {
    Failure::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong token: send Authorization: Bearer <token>",
    )
}

async fn time_limit(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the request took too long",
        )
        .into_response(),
    }
}

async fn not_found() -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint (see GET /v1/services, /metrics)",
    )
}

async fn list(State(state): Shared) -> axum::Json<ServiceList> {
    let mut services = Vec::with_capacity(state.services.len());
    for s in &state.services {
        services.push(s.status().await);
    }
    axum::Json(ServiceList { services })
}

async fn one(State(state): Shared, Path(name): Path<String>) -> Result<Response, Failure> {
    let s = state.service(&name)?;
    Ok(axum::Json(s.status().await).into_response())
}

/// Parses a JSON body; an empty body is the default.
fn body<T: DeserializeOwned + Default>(raw: Result<Bytes, BytesRejection>) -> Result<T, Failure> {
    let bytes = raw.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the request body is over {MAX_BODY} bytes"),
            )
        } else {
            Failure::bad_request(format!("the request body could not be read: {e}"))
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| Failure::bad_request(format!("the request body is not valid: {e}")))
}

/// Query of `/plan`: the command to plan.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanQuery {
    /// A failover to this site (default: the best eligible one).
    #[serde(default)]
    to: Option<String>,
    /// A failback instead of a failover.
    #[serde(default)]
    failback: bool,
    /// Forced past the guards.
    #[serde(default)]
    force: bool,
}

/// `GET /v1/services/{name}/plan`: what a failover (or failback) would do now and whether it
/// would be allowed, from the election itself; nothing changes (either token).
async fn plan(
    State(state): Shared,
    Path(name): Path<String>,
    query: Result<Query<PlanQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let s = state.service(&name)?;
    let Query(q) = query.map_err(|e| Failure::bad_request(e.body_text()))?;
    let command = match (q.failback, q.to) {
        (true, Some(_)) => {
            return Err(Failure::bad_request(
                "a failback goes to the home site: give `to` only for a failover",
            ));
        }
        (true, None) => Command::Failback { force: q.force },
        (false, to) => Command::Failover {
            to: to.map(|t| site_of(s, &t)).transpose()?,
            force: q.force,
        },
    };
    let mut plan = s.controller.plan(command).await.map_err(|e| {
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the controller of {} did not answer: {e}", s.name()),
        )
    })?;
    // Drill freshness, from the reports kept on disk (the election keeps no drill history).
    let files = s.reports.clone();
    let history = read_reports(s, move |service| files.history(service)).await?;
    let value = match history.iter().find(|r| r.kind == "drill") {
        Some(d) => format!(
            "last drill {} at {} ({}, report {})",
            d.to.as_deref().unwrap_or("-"),
            d.finished_at,
            d.outcome,
            d.id
        ),
        None => format!(
            "no drill among the {} report(s) kept: rehearse with idnsctl drill",
            history.len()
        ),
    };
    plan.guards
        .push(idns_core::Guard::new("drill", value, true));
    Ok(axum::Json(plan).into_response())
}

/// The status page: one self-contained HTML page (no outside assets) that reads the API with
/// the credentials the browser gave for it and follows each service's event stream.
const STATUS_PAGE: &str = include_str!("status_page.html");

/// `GET /`: the status page, behind either token. A browser has no way to send a bearer token
/// when it opens a page, so here the token is also taken as the password of Basic credentials
/// (any user name), and a missing or wrong one is answered with a Basic challenge, which makes
/// the browser ask for it; the page's own requests then carry the same credentials.
async fn status_page(State(state): Shared, headers: HeaderMap) -> Response {
    if state.role(&headers).is_none() {
        let mut response = unauthorized().into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static(
                "Basic realm=\"idnsd: the password is the API token\", charset=\"UTF-8\"",
            ),
        );
        return response;
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
                 frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        STATUS_PAGE,
    )
        .into_response()
}

fn site_of(s: &ServiceRuntime, name: &str) -> Result<SiteId, Failure> {
    let sites: Vec<String> = s.config.sites().iter().map(|x| x.id.to_string()).collect();
    SiteId::try_from(name)
        .ok()
        .filter(|id| s.config.site(id).is_some())
        .ok_or_else(|| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                "unknown_site",
                format!(
                    "{name:?} is not a site of {} (its sites: {})",
                    s.name(),
                    sites.join(", ")
                ),
            )
        })
}

/// What a command's body asks of a service: the command, and its words for the answer and the
/// log; or why it cannot be asked.
type Translate<B> = fn(&ServiceRuntime, B) -> Result<(Command, String), Failure>;

/// The handler of one command: finds the service, reads the JSON body `B` (empty is its
/// default), translates it, and hands the command to the controller.
fn command<B>(translate: Translate<B>) -> MethodRouter<Arc<ApiState>>
where
    B: DeserializeOwned + Default + Send + 'static,
{
    post(
        move |State(state): Shared,
              Path(name): Path<String>,
              raw: Result<Bytes, BytesRejection>| async move {
            let s = state.service(&name)?;
            let (command, words) = translate(s, body(raw)?)?;
            run(s, command, words).await
        },
    )
}

async fn run(s: &ServiceRuntime, command: Command, words: String) -> Result<Response, Failure> {
    let after = s.log.last();
    match tokio::time::timeout(COMMAND_TIMEOUT, s.controller.command(command)).await {
        Err(_) => Err(Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "the controller of {} did not answer within {}",
                s.name(),
                humantime::format_duration(COMMAND_TIMEOUT)
            ),
        )),
        Ok(Err(idns_core::Error::Refused(r))) => {
            Err(Failure::new(StatusCode::CONFLICT, "refused", r.to_string()))
        }
        Ok(Err(idns_core::Error::Stopped)) => Err(Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the controller of {} has stopped", s.name()),
        )),
        Ok(Err(e)) => Err(Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
        )),
        Ok(Ok(())) => {
            let view = s.controller.view();
            tracing::info!(service = %s.name(), command = %words, "command accepted");
            Ok((
                StatusCode::ACCEPTED,
                axum::Json(CommandAccepted {
                    service: s.name().to_string(),
                    command: words,
                    runbook: view.runbook.as_ref().map(|r| r.id),
                    epoch: view.epoch.get(),
                    after,
                }),
            )
                .into_response())
        }
    }
}

fn failover(s: &ServiceRuntime, req: FailoverRequest) -> Result<(Command, String), Failure> {
    let to = req.to.as_deref().map(|t| site_of(s, t)).transpose()?;
    let words = format!(
        "failover to {}{}",
        to.as_ref()
            .map_or("the best eligible site".to_owned(), ToString::to_string),
        if req.force { " (forced)" } else { "" }
    );
    Ok((
        Command::Failover {
            to,
            force: req.force,
        },
        words,
    ))
}

fn failback(s: &ServiceRuntime, req: FailbackRequest) -> Result<(Command, String), Failure> {
    let words = format!(
        "failback to {}{}",
        s.config.home().id,
        if req.force { " (forced)" } else { "" }
    );
    Ok((Command::Failback { force: req.force }, words))
}

/// A body that must be empty or `{}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

fn drill(s: &ServiceRuntime, req: DrillRequest) -> Result<(Command, String), Failure> {
    let to = match req.to.as_deref() {
        Some(t) => site_of(s, t)?,
        None => {
            // The preferred site other than the active one.
            let active = s.controller.view().active;
            let mut others: Vec<_> = s.config.sites().iter().filter(|x| x.id != active).collect();
            others.sort_by_key(|x| x.priority);
            others
                .first()
                .map(|x| x.id.clone())
                .ok_or_else(|| Failure::bad_request("no site other than the active one"))?
        }
    };
    let words = format!("drill on {to}");
    Ok((Command::StartDrill { to }, words))
}

fn resume(_: &ServiceRuntime, req: Option<ResumeRequest>) -> Result<(Command, String), Failure> {
    let Some(req) = req else {
        return Err(Failure::bad_request(
            "the body must say {\"action\": \"retry\" | \"skip\" | \"abort\"}",
        ));
    };
    let how = match req.action.as_str() {
        "retry" => Resume::Retry,
        "skip" => Resume::Skip,
        "abort" => Resume::Abort,
        other => {
            return Err(Failure::bad_request(format!(
                "action {other:?} is not retry, skip or abort"
            )));
        }
    };
    Ok((Command::Resume(how), format!("resume ({})", req.action)))
}

/// Query of `/events`.
#[derive(Debug, Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait: f64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    500
}

async fn events(
    State(state): Shared,
    Path(name): Path<String>,
    headers: HeaderMap,
    streaming: Option<axum::Extension<Streaming>>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let s = state.service(&name)?;
    let Query(q) = query.map_err(|e| Failure::bad_request(e.body_text()))?;
    let streams = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    if streams {
        let after = match headers.get("last-event-id") {
            None => q.after,
            Some(v) => last_event_id(v)?,
        };
        let mut tail = Tail::new(s.clone(), after, state.stop.clone());
        tail.connection = streaming.map(|axum::Extension(flag)| flag.start());
        return Ok(Sse::new(tail.stream())
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
            .into_response());
    }
    if !q.wait.is_finite() || q.wait < 0.0 {
        return Err(Failure::bad_request(
            "wait must be a number of seconds >= 0",
        ));
    }
    let wait = Duration::from_secs_f64(q.wait.min(MAX_WAIT.as_secs_f64()));
    let limit = q.limit.clamp(1, 5000);
    let page = s
        .log
        .wait_after(q.after, limit, wait, state.stop.clone())
        .await;
    Ok(axum::Json(page).into_response())
}

/// The sequence number in a `Last-Event-ID` header.
fn last_event_id(v: &header::HeaderValue) -> Result<u64, Failure> {
    let text = String::from_utf8_lossy(v.as_bytes());
    text.trim().parse().map_err(|_| {
        let shown: String = text.chars().take(40).collect();
        Failure::bad_request(format!(
            "Last-Event-ID {shown:?} is not a number: send the id of the last event received"
        ))
    })
}

/// An event stream's position in a service's event log, and what it has still to send.
struct Tail {
    service: Arc<ServiceRuntime>,
    after: u64,
    pending: VecDeque<SseEvent>,
    stop: watch::Receiver<bool>,
    /// Its connection, marked as carrying a stream while the stream lives.
    connection: Option<StreamingGuard>,
}

impl Tail {
    /// A stream from after event `after`. An `after` this run has not reached is from a
    /// run before a restart: a `reset` event says so, and every event kept follows.
    fn new(service: Arc<ServiceRuntime>, after: u64, stop: watch::Receiver<bool>) -> Tail {
        let mut pending = VecDeque::new();
        let last = service.log.last();
        let after = if after > last {
            let reset = EventsReset { after, last };
            pending.push_back(
                SseEvent::default()
                    .event("reset")
                    .data(serde_json::to_string(&reset).unwrap_or_default()),
            );
            0
        } else {
            after
        };
        Tail {
            service,
            after,
            pending,
            stop,
            connection: None,
        }
    }

    /// Every event after the position, then each new one, until the daemon stops.
    fn stream(self) -> impl futures::Stream<Item = Result<SseEvent, Infallible>> + Send {
        futures::stream::unfold(self, |mut tail| async move {
            loop {
                if let Some(e) = tail.pending.pop_front() {
                    return Some((Ok(e), tail));
                }
                if *tail.stop.borrow() {
                    return None;
                }
                let page = tail
                    .service
                    .log
                    .wait_after(tail.after, STREAM_PAGE, READ_TIMEOUT, tail.stop.clone())
                    .await;
                tail.take(page);
            }
        })
    }

    /// Queues a page of the log: a `missed` event first when events after the position were
    /// dropped from it.
    fn take(&mut self, page: EventsPage) {
        if let (true, Some(first)) = (page.missed, page.events.first()) {
            let missed = MissedEvents {
                missed: first.seq - self.after - 1,
                after: self.after,
                first: first.seq,
            };
            self.pending.push_back(
                SseEvent::default()
                    .event("missed")
                    .data(serde_json::to_string(&missed).unwrap_or_default()),
            );
        }
        for record in &page.events {
            self.pending.push_back(
                SseEvent::default()
                    .id(record.seq.to_string())
                    .event(event_kind(record))
                    .data(serde_json::to_string(record).unwrap_or_default()),
            );
        }
        self.after = page.next;
    }
}

/// The `event:` of a record in an event stream: the election event's name (`decision`,
/// `step_finished`, …), `progress`, or `note` for the daemon's own remarks.
fn event_kind(record: &EventRecord) -> String {
    match (&record.event, &record.progress) {
        (Some(e), _) => match serde_json::to_value(e) {
            Ok(serde_json::Value::String(name)) => name,
            Ok(serde_json::Value::Object(m)) => m.keys().next().cloned().unwrap_or_default(),
            _ => "event".to_owned(),
        },
        (None, Some(_)) => "progress".to_owned(),
        (None, None) => "note".to_owned(),
    }
}

/// Query of `/report`.
#[derive(Debug, Deserialize)]
struct ReportQuery {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    format: Option<String>,
}

async fn report(
    State(state): Shared,
    Path(name): Path<String>,
    query: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let s = state.service(&name)?;
    let Query(q) = query.map_err(|e| Failure::bad_request(e.body_text()))?;
    let kind = match q.kind.as_deref().unwrap_or("drill") {
        "drill" => RunbookKind::Drill,
        "failover" => RunbookKind::Failover,
        "failback" => RunbookKind::Failback,
        other => {
            return Err(Failure::bad_request(format!(
                "kind {other:?} is not drill, failover or failback"
            )));
        }
    };
    let Some((r, ctx)) = s.last_report(kind) else {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no {kind} of {} has finished since the daemon started",
                s.name()
            ),
        ));
    };
    let format = ReportFormat::parse(q.format.as_deref())?;
    let body = match format {
        ReportFormat::Json => return Ok(axum::Json(summary(&r)).into_response()),
        ReportFormat::Markdown => report::markdown(&r, &ctx),
        ReportFormat::Html => report::html(&r, &ctx),
    };
    Ok(page(format.content_type(), body))
}

/// How a report is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReportFormat {
    Json,
    Markdown,
    Html,
}

impl ReportFormat {
    /// The `format` of a query (default JSON).
    fn parse(format: Option<&str>) -> Result<ReportFormat, Failure> {
        match format.unwrap_or("json") {
            "json" => Ok(ReportFormat::Json),
            "md" | "markdown" => Ok(ReportFormat::Markdown),
            "html" => Ok(ReportFormat::Html),
            other => Err(Failure::bad_request(format!(
                "format {other:?} is not json, md or html"
            ))),
        }
    }

    /// The extension of its file.
    fn ext(self) -> &'static str {
        match self {
            ReportFormat::Json => "json",
            ReportFormat::Markdown => "md",
            ReportFormat::Html => "html",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            ReportFormat::Json => "application/json",
            ReportFormat::Markdown => "text/markdown; charset=utf-8",
            ReportFormat::Html => "text/html; charset=utf-8",
        }
    }
}

/// A report's page, which may load nothing (its HTML is self-contained).
fn page(content_type: &'static str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ],
        body,
    )
        .into_response()
}

/// Runs a read of the report files off the async workers.
async fn read_reports<T: Send + 'static>(
    s: &ServiceRuntime,
    read: impl FnOnce(&str) -> std::io::Result<T> + Send + 'static,
) -> Result<T, Failure> {
    let service = s.name().to_string();
    let dir = s.reports.dir().display().to_string();
    let failed = |e: String| {
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the reports in {dir} cannot be read: {e}"),
        )
    };
    tokio::task::spawn_blocking(move || read(&service))
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(e.to_string()))
}

async fn history(State(state): Shared, Path(name): Path<String>) -> Result<Response, Failure> {
    let s = state.service(&name)?;
    let files = s.reports.clone();
    let reports = read_reports(s, move |service| files.history(service)).await?;
    Ok(axum::Json(History {
        service: s.name().to_string(),
        reports,
    })
    .into_response())
}

/// Query of `/reports/{id}`.
#[derive(Debug, Deserialize)]
struct StoredReportQuery {
    #[serde(default)]
    format: Option<String>,
}

async fn stored_report(
    State(state): Shared,
    Path((name, id)): Path<(String, String)>,
    query: Result<Query<StoredReportQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let s = state.service(&name)?;
    let Query(q) = query.map_err(|e| Failure::bad_request(e.body_text()))?;
    let format = ReportFormat::parse(q.format.as_deref())?;
    let shown: String = id.chars().take(40).collect();
    let Ok(number) = id.parse::<u64>() else {
        return Err(Failure::bad_request(format!(
            "report id {shown:?} is not a number (the ids are in GET /v1/services/{}/history)",
            s.name()
        )));
    };
    let files = s.reports.clone();
    let found = read_reports(s, move |service| files.read(service, number, format.ext())).await?;
    let Some(body) = found else {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no report {number} of {} is kept (see GET /v1/services/{}/history)",
                s.name(),
                s.name()
            ),
        ));
    };
    Ok(page(format.content_type(), body))
}

async fn metrics_page(State(state): Shared, headers: HeaderMap) -> Result<Response, Failure> {
    if !state.metrics_public && state.role(&headers).is_none() {
        return Err(unauthorized());
    }
    let text = metrics::render(&state.services);
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}

/// The API's TLS: a certificate chain and its private key, loaded and checked.
///
/// Its `Debug` shows the files only, never the key.
#[derive(Clone)]
pub struct ApiTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    server: Arc<ServerConfig>,
}

/// Why [`ApiTls::load`] refused the files: which one (the certificate's or the key's) and
/// what is wrong with it. It never quotes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFileError {
    /// The certificate file.
    Cert(String),
    /// The key file.
    Key(String),
}

impl fmt::Debug for ApiTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiTls")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl ApiTls {
    /// Loads the PEM certificate chain in `cert_file` (the server's certificate first) and the
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) in `key_file`, and checks that the key is the
    /// certificate's. The files are read as they are: whether the key file is private is the
    /// caller's check.
    pub fn load(cert_file: &FilePath, key_file: &FilePath) -> Result<ApiTls, TlsFileError> {
        let pem = std::fs::read(cert_file)
            .map_err(|e| TlsFileError::Cert(format!("cannot be read: {e}")))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsFileError::Cert(format!("is not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(TlsFileError::Cert(
                "holds no certificate (expected a PEM block BEGIN CERTIFICATE)".into(),
            ));
        }
        let pem = std::fs::read(key_file)
            .map_err(|e| TlsFileError::Key(format!("cannot be read: {e}")))?;
        // The PEM parser's errors may quote the file: say only what kind of trouble it is.
        let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            TlsFileError::Key(match e {
                rustls::pki_types::pem::Error::NoItemsFound => "holds no private key (expected \
                     a PEM block BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
                    .into(),
                _ => "is not valid PEM".into(),
            })
        })?;
        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let builder = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsFileError::Cert(format!("no usable TLS version: {e}")))?
            .with_no_client_auth();
        let mut server = builder.with_single_cert(certs, key).map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsFileError::Key(format!(
                    "is not the key of the certificate in {}",
                    cert_file.display()
                ))
            }
            rustls::Error::General(_) => {
                TlsFileError::Key("is not a private key this daemon can use".into())
            }
            other => TlsFileError::Cert(format!("is not a usable X.509 certificate: {other}")),
        })?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ApiTls {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            server: Arc::new(server),
        })
    }

    /// The certificate file.
    pub fn cert_file(&self) -> &FilePath {
        &self.cert_file
    }

    /// The key file.
    pub fn key_file(&self) -> &FilePath {
        &self.key_file
    }
}

/// Whether a connection carries an event stream: its client then only listens, so its reads
/// may wait past [`READ_TIMEOUT`] (the write timeout still drops a client that stops reading).
#[derive(Debug, Clone, Default)]
struct Streaming(Arc<AtomicBool>);

impl Streaming {
    /// Marks the connection as streaming until the guard is dropped.
    fn start(&self) -> StreamingGuard {
        self.0.store(true, Ordering::Relaxed);
        StreamingGuard(self.clone())
    }
}

/// Keeps a connection marked as streaming.
struct StreamingGuard(Streaming);

impl Drop for StreamingGuard {
    fn drop(&mut self) {
        self.0.0.store(false, Ordering::Relaxed);
    }
}

/// A connection's I/O, with its read and write timeouts; a read timeout while it carries an
/// event stream only starts the next wait.
struct ConnectionIo<I> {
    inner: Pin<Box<TimeoutStream<I>>>,
    streaming: Streaming,
}

impl<I: AsyncRead + AsyncWrite> AsyncRead for ConnectionIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            match self.inner.as_mut().poll_read(cx, buf) {
                Poll::Ready(Err(e))
                    if e.kind() == std::io::ErrorKind::TimedOut
                        && self.streaming.0.load(Ordering::Relaxed) => {}
                other => return other,
            }
        }
    }
}

impl<I: AsyncRead + AsyncWrite> AsyncWrite for ConnectionIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.inner.as_mut().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.inner.as_mut().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.inner.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.inner.as_mut().poll_shutdown(cx)
    }
}

/// Counts the connections each client address holds.
#[derive(Debug, Default)]
struct PerClient {
    open: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// One connection counted against its client address; uncounted when dropped.
struct ClientSlot {
    table: Arc<PerClient>,
    ip: IpAddr,
}

impl PerClient {
    /// Counts a connection from `ip`, unless it already holds `limit`.
    fn take(table: &Arc<PerClient>, ip: IpAddr, limit: usize) -> Option<ClientSlot> {
        let mut open = table.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Serves `router` on `listener` until `stop` turns true, then lets requests in progress end
/// (long-polls return at once) for up to 5 s. One client address holds at most `per_client`
/// connections; more are closed as soon as they are accepted. With `tls`, every connection
/// is HTTPS: its handshake must end within 10 s.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    per_client: usize,
    tls: Option<ApiTls>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let clients = Arc::new(PerClient::default());
    let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.server));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stopped(&mut stop) => break,
        };
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        while connections.try_join_next().is_some() {}
        let Some(client) = PerClient::take(&clients, peer.ip(), per_client) else {
            tracing::debug!(%peer, limit = per_client, "connection refused: the client holds too many");
            drop(stream);
            continue;
        };
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(WRITE_TIMEOUT));
        stream.set_read_timeout(Some(READ_TIMEOUT));
        let streaming = Streaming::default();
        let stream = ConnectionIo {
            inner: Box::pin(stream),
            streaming: streaming.clone(),
        };
        let service = TowerToHyperService::new(router.clone().layer(axum::Extension(streaming)));
        let mut stop = stop.clone();
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            let _permit = permit;
            let _client = client;
            let Some(acceptor) = acceptor else {
                return serve_connection(stream, service, peer, stop).await;
            };
            let handshake = tokio::select! {
                h = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => h,
                () = stopped(&mut stop) => return,
            };
            match handshake {
                Ok(Ok(tls)) => serve_connection(tls, service, peer, stop).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake not finished in time"),
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(6), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// Serves HTTP/1.1 on one connection until it ends, or until `stop` turns true and its
/// requests in progress end (for up to 5 s).
async fn serve_connection<I>(
    io: I,
    service: TowerToHyperService<Router>,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}
