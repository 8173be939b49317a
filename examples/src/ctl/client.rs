//! The HTTP client of idnsd's API, and its errors.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use crate::daemon::wire::{
    ApiError, CommandAccepted, EventsPage, History, ServiceList, ServiceStatus,
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
    /// idnsd's TLS certificate did not verify (a self-signed one without `--ca-file`, a
    /// wrong CA, another host name).
    #[error(
        "idnsd's TLS certificate at {url} was not trusted: {detail}; pass --ca-file (or set \
         IDNS_CA_FILE) with the CA certificate that signed it, or the certificate itself if it \
         is self-signed"
    )]
    Untrusted {
        /// The URL asked.
        url: String,
        /// What the verifier said.
        detail: String,
    },
    /// The CA file given to trust idnsd's certificate cannot be used.
    #[error("the CA file {file}: {detail}")]
    CaFile {
        /// The file.
        file: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The token was missing or wrong.
    #[error("idnsd refused the token (HTTP 401): {0}; pass --token or set IDNS_TOKEN")]
    Unauthorized(String),
    /// The token may only read, and the request was a command.
    #[error("idnsd refused the command (HTTP 403): {0}")]
    Forbidden(String),
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
    /// unknown service or site), 2 when the CA file cannot be used, 3 when idnsd cannot be
    /// reached, its certificate is not trusted or it answers nonsense, 4 when the token is
    /// refused or may not send commands. (2 is also a usage error, from the argument parser.)
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::CaFile { .. } => 2,
            ClientError::Unreachable { .. }
            | ClientError::Untrusted { .. }
            | ClientError::Server { .. }
            | ClientError::Protocol(_)
            | ClientError::Output(_) => 3,
            ClientError::Unauthorized(_) | ClientError::Forbidden(_) => 4,
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
    /// A client of the API at `url` (e.g. `http://127.0.0.1:9480` or `https://idnsd:9480`).
    ///
    /// An `https` daemon's certificate is verified against the system's trusted CAs, or, with
    /// `ca_file`, against the CA certificates in that PEM file only (the daemon's own
    /// certificate when it is self-signed).
    pub fn new(
        url: &str,
        token: Option<String>,
        ca_file: Option<&Path>,
    ) -> Result<Client, ClientError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60));
        if let Some(file) = ca_file {
            builder = builder.tls_certs_only(ca_certificates(file)?);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Protocol(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client {
            base: url.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    /// Sends `request` with the token; a success's response, or the API's error.
    async fn response(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<reqwest::Response, ClientError> {
        let request = match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let response = request.send().await.map_err(|e| match untrusted(&e) {
            Some(detail) => ClientError::Untrusted {
                url: url.to_owned(),
                detail,
            },
            None => ClientError::Unreachable {
                url: url.to_owned(),
                detail: error_chain(&e),
            },
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: url.to_owned(),
                detail: error_chain(&e),
            })?;
        let message = match serde_json::from_slice::<ApiError>(&body) {
            Ok(e) => e.message,
            Err(_) => String::from_utf8_lossy(&body).trim().to_owned(),
        };
        Err(match status {
            StatusCode::UNAUTHORIZED => ClientError::Unauthorized(message),
            StatusCode::FORBIDDEN => ClientError::Forbidden(message),
            StatusCode::NOT_FOUND => ClientError::NotFound(message),
            StatusCode::BAD_REQUEST => ClientError::BadRequest(message),
            StatusCode::CONFLICT => ClientError::Refused(message),
            s => ClientError::Server {
                status: s.as_u16(),
                message,
            },
        })
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T, ClientError> {
        let body = read_all(self.response(request, url).await?, url).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(format!("{url}: {e}")))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.get(&url), &url).await
    }

    /// What a failover (to `to`, or the best eligible site) or, with `failback`, a failback
    /// would do now, and whether the election would allow it; nothing changes.
    pub async fn plan(
        &self,
        service: &str,
        to: Option<&str>,
        failback: bool,
        force: bool,
    ) -> Result<idns_core::Plan, ClientError> {
        let mut query = format!("failback={failback}&force={force}");
        if let Some(to) = to {
            query.push_str(&format!("&to={}", segment(to)));
        }
        self.get(&format!("/v1/services/{}/plan?{query}", segment(service)))
            .await
    }

    /// The reports of `service` kept by the daemon, newest first.
    pub async fn history(&self, service: &str) -> Result<History, ClientError> {
        self.get(&format!("/v1/services/{}/history", segment(service)))
            .await
    }

    /// Report `id` of `service` as the daemon keeps it, in `format` (`md`, `html`, `json`),
    /// as text. The id is sent as given: the daemon says what is wrong with it.
    pub async fn report(
        &self,
        service: &str,
        id: &str,
        format: &str,
    ) -> Result<String, ClientError> {
        let base = format!("{}/v1/services/{}/reports", self.base, segment(service));
        let mut url = reqwest::Url::parse(&base)
            .map_err(|e| ClientError::BadRequest(format!("{base}: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| ClientError::BadRequest(format!("{base} cannot take a path")))?
            .push(id);
        url.query_pairs_mut().append_pair("format", format);
        let shown = url.to_string();
        let body = read_all(self.response(self.http.get(url), &shown).await?, &shown).await?;
        String::from_utf8(body).map_err(|e| ClientError::Protocol(format!("{shown}: {e}")))
    }

    /// Opens the event stream of `service` (`text/event-stream`) from after event `after`
    /// (sent as `Last-Event-ID`).
    pub async fn event_stream(
        &self,
        service: &str,
        after: u64,
    ) -> Result<EventStream, ClientError> {
        let url = format!("{}/v1/services/{}/events", self.base, segment(service));
        let request = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .header("Last-Event-ID", after.to_string())
            // A stream lasts; silence is caught by `EventStream::next`'s idle limit instead.
            .timeout(STREAM_LIFETIME);
        let response = self.response(request, &url).await?;
        let streams = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !streams {
            return Err(ClientError::Protocol(format!(
                "{url} did not answer an event stream"
            )));
        }
        Ok(EventStream {
            response,
            buf: Vec::new(),
            url,
            heard: false,
        })
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

/// Longest one event stream request may last; the client then opens another.
const STREAM_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The whole body of a response.
async fn read_all(response: reqwest::Response, url: &str) -> Result<Vec<u8>, ClientError> {
    match response.bytes().await {
        Ok(b) => Ok(b.to_vec()),
        Err(e) => Err(ClientError::Unreachable {
            url: url.to_owned(),
            detail: error_chain(&e),
        }),
    }
}

/// One message of an event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMessage {
    /// Its `id:` (an event's sequence number), if it has one.
    pub id: Option<u64>,
    /// Its `event:` (`message` when it has none).
    pub event: String,
    /// Its `data:` lines, joined by newlines.
    pub data: String,
}

/// An open `text/event-stream` of idnsd ([`Client::event_stream`]).
#[derive(Debug)]
pub struct EventStream {
    response: reqwest::Response,
    buf: Vec<u8>,
    url: String,
    heard: bool,
}

impl EventStream {
    /// The URL it reads.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether anything (an event or a keep-alive comment) has arrived on it.
    pub fn heard(&self) -> bool {
        self.heard
    }

    /// The next message; `Ok(None)` when the daemon ended the stream. Nothing at all (not
    /// even a keep-alive comment) for `idle` is an error, as is a broken connection.
    pub async fn next(&mut self, idle: Duration) -> Result<Option<StreamMessage>, ClientError> {
        loop {
            if let Some(message) = self.parse() {
                return Ok(Some(message));
            }
            let chunk = tokio::time::timeout(idle, self.response.chunk())
                .await
                .map_err(|_| ClientError::Unreachable {
                    url: self.url.clone(),
                    detail: format!(
                        "nothing arrived for {}, not even a keep-alive",
                        humantime::format_duration(idle)
                    ),
                })?
                .map_err(|e| ClientError::Unreachable {
                    url: self.url.clone(),
                    detail: error_chain(&e),
                })?;
            let Some(chunk) = chunk else {
                return Ok(None);
            };
            self.heard = true;
            // Lines may end in CR LF: LF alone is kept.
            self.buf.extend(chunk.iter().filter(|&&b| b != b'\r'));
        }
    }

    /// Takes the first whole message out of the buffer, skipping comments.
    fn parse(&mut self) -> Option<StreamMessage> {
        loop {
            let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
            let block: Vec<u8> = self.buf.drain(..end + 2).collect();
            let block = String::from_utf8_lossy(&block[..end]);
            let mut id = None;
            let mut event = None;
            let mut data: Vec<&str> = Vec::new();
            for line in block.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => id = value.parse().ok(),
                    "event" => event = Some(value.to_owned()),
                    "data" => data.push(value),
                    // A comment (keep-alive) or a field this client does not use.
                    _ => {}
                }
            }
            if id.is_some() || event.is_some() || !data.is_empty() {
                return Some(StreamMessage {
                    id,
                    event: event.unwrap_or_else(|| "message".to_owned()),
                    data: data.join("\n"),
                });
            }
        }
    }
}

/// The certificates of a PEM file, as roots to trust.
fn ca_certificates(file: &Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let problem = |detail: String| ClientError::CaFile {
        file: file.display().to_string(),
        detail,
    };
    let pem = std::fs::read(file).map_err(|e| problem(format!("cannot be read: {e}")))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| problem(format!("is not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(problem(
            "holds no certificate (expected a PEM block BEGIN CERTIFICATE)".into(),
        ));
    }
    Ok(certs)
}

/// What the TLS verifier said, when a request failed because the server's certificate was
/// not trusted. I/O errors hide the error they wrap from `source()`: look inside them too.
fn untrusted(e: &reqwest::Error) -> Option<String> {
    let mut src: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(s) = src {
        let mut inner = Some(s);
        while let Some(i) = inner {
            if let Some(rustls::Error::InvalidCertificate(c)) = i.downcast_ref::<rustls::Error>() {
                return Some(format!("invalid certificate: {c}"));
            }
            inner = i
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .map(|x| x as &(dyn StdError + 'static));
        }
        src = s.source();
    }
    None
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
