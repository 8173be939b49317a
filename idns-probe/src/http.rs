//! The HTTP(S) page probe: the paper's "web page probing" with a search string.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZlibDecoder};
use async_trait::async_trait;
use futures::StreamExt;
use idns_core::{ConfigError, Probe, ProbeOutcome, ProbeStatus, RedactedMap};
use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncReadExt, BufReader};
use tokio::time::Instant;
use tokio_util::io::StreamReader;

use crate::matcher::Matcher;
use crate::spec::target::{
    AliasSpec, BuildContext, Endpoint, Target, check_window, default_window,
};
use idns_core::Problems;

/// An HTTP(S) page check, as written (`kind = "http"`).
///
/// The connection goes to the site's address (or `alias.address`), while the `Host` header and
/// the TLS SNI carry the URL's host — normally the service's name — so each site is probed
/// exactly as clients would reach it once DNS points there.
///
/// Its `Debug` shows the value of a secret header (`Authorization`, `Cookie`, `X-Api-Key`, …:
/// see [`is_secret_name`](idns_core::is_secret_name)) as `<redacted>`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// The page: an absolute `http://` or `https://` URL whose host is the name to send, or a
    /// path (`/health`), which means `http://<service name>/health`.
    pub url: String,
    /// The request method (default `GET`).
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A request body to send (the F5 "send string" of an HTTP monitor).
    #[serde(default)]
    pub body: Option<String>,
    /// Status codes that count as up: codes (`200`), ranges (`"200-299"`) or classes
    /// (`"2xx"`); default `["200-399"]`.
    #[serde(default = "default_status")]
    pub status: Vec<StatusSpec>,
    /// A substring the body must contain within the window.
    #[serde(default)]
    pub expect: Option<String>,
    /// A regex the body must match within the window (instead of `expect`).
    #[serde(default)]
    pub expect_regex: Option<String>,
    /// Compare `expect` / `expect_regex` ignoring case.
    #[serde(default)]
    pub case_insensitive: bool,
    /// How many bytes of the body are searched (default 64 KiB); reading stops there. A body
    /// sent compressed (`Content-Encoding` gzip, deflate or br) is decoded first, and the
    /// window counts decoded bytes, so a small body that expands without end costs no more.
    #[serde(default = "default_window")]
    pub body_window: usize,
    /// Redirects followed (default 0: a 3xx is judged by `status` like any other code).
    #[serde(default)]
    pub redirects: usize,
    /// Limit for the TCP connect (default: the probe's timeout).
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// A PEM bundle of the only CAs trusted for this probe (e.g. a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate, expired, self-signed or for another name. Dangerous: the probe
    /// then cannot tell the real site from anything that answers on its address.
    #[serde(default)]
    pub danger_accept_invalid_certs: bool,
    /// Connect to this address instead of the site's (its `port` is refused: the port is the
    /// URL's).
    #[serde(default)]
    pub alias: Option<AliasSpec>,
    /// Log this probe's details at `info` instead of `debug` (the paper's Debug knob).
    #[serde(default)]
    pub debug: bool,
}

impl fmt::Debug for HttpSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSpec")
            .field("url", &self.url)
            .field("method", &self.method)
            .field("headers", &RedactedMap(&self.headers))
            .field("body", &self.body)
            .field("status", &self.status)
            .field("expect", &self.expect)
            .field("expect_regex", &self.expect_regex)
            .field("case_insensitive", &self.case_insensitive)
            .field("body_window", &self.body_window)
            .field("redirects", &self.redirects)
            .field("connect_timeout", &self.connect_timeout)
            .field("ca_file", &self.ca_file)
            .field(
                "danger_accept_invalid_certs",
                &self.danger_accept_invalid_certs,
            )
            .field("alias", &self.alias)
            .field("debug", &self.debug)
            .finish()
    }
}

/// One entry of an HTTP probe's expected status codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StatusSpec {
    /// One code: `200`.
    Code(u16),
    /// A range `"200-299"` or a class `"2xx"`.
    Range(String),
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_status() -> Vec<StatusSpec> {
    vec![StatusSpec::Range("200-399".to_owned())]
}

/// The set of accepted status codes.
#[derive(Debug, Clone)]
struct StatusSet(Vec<RangeInclusive<u16>>);

impl StatusSet {
    fn parse(p: &mut Problems, path: &str, specs: &[StatusSpec]) -> StatusSet {
        if specs.is_empty() {
            p.push(path, "[]", "must list at least one status code");
        }
        let mut ranges = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            let path = format!("{path}[{i}]");
            let range = match s {
                StatusSpec::Code(c) => Some(*c..=*c),
                StatusSpec::Range(text) => parse_range(text.trim()),
            };
            match range {
                Some(r) if *r.start() >= 100 && *r.end() <= 599 && r.start() <= r.end() => {
                    ranges.push(r)
                }
                Some(_) => p.push(
                    path,
                    show_status(s),
                    "must be status codes between 100 and 599, low to high",
                ),
                None => p.push(
                    path,
                    show_status(s),
                    "must be a code (200), a range (\"200-299\") or a class (\"2xx\")",
                ),
            }
        }
        StatusSet(ranges)
    }

    fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|r| r.contains(&code))
    }
}

fn show_status(s: &StatusSpec) -> String {
    match s {
        StatusSpec::Code(c) => c.to_string(),
        StatusSpec::Range(t) => t.clone(),
    }
}

fn parse_range(text: &str) -> Option<RangeInclusive<u16>> {
    if let Some((a, b)) = text.split_once('-') {
        let a: u16 = a.trim().parse().ok()?;
        let b: u16 = b.trim().parse().ok()?;
        return Some(a..=b);
    }
    let lower = text.to_ascii_lowercase();
    if let Some(class) = lower.strip_suffix("xx")
        && class.len() == 1
    {
        let d: u16 = class.parse().ok()?;
        return Some(d * 100..=d * 100 + 99);
    }
    let c: u16 = text.parse().ok()?;
    Some(c..=c)
}

impl std::fmt::Display for StatusSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

/// A built HTTP(S) page probe. Each attempt opens a fresh connection (no keep-alive), so a
/// server that stops accepting connections is seen at once.
#[derive(Debug)]
pub struct HttpProbe {
    label: String,
    client: reqwest::Client,
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<String>,
    status: StatusSet,
    matcher: Option<Matcher>,
    window: usize,
    timeout: Duration,
    connect_to: String,
    debug: bool,
}

impl HttpProbe {
    /// Builds the probe of `spec` for `target`, every field checked.
    pub(crate) fn new(
        ctx: &BuildContext,
        spec: &HttpSpec,
        target: &Target,
    ) -> Result<HttpProbe, ConfigError> {
        let path = ctx.path.as_str();
        let mut p = Problems::default();

        let url = if spec.url.starts_with('/') {
            Url::parse(&format!("http://{}{}", target.service, spec.url))
        } else {
            Url::parse(&spec.url)
        };
        let url = match url {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                p.push(
                    format!("{path}.url"),
                    &spec.url,
                    "must be an http:// or https:// URL",
                );
                None
            }
            Ok(u) => match u.host_str() {
                Some(h) if !(h.starts_with('[') || h.parse::<std::net::IpAddr>().is_ok()) => {
                    Some(u)
                }
                Some(_) => {
                    p.push(
                        format!("{path}.url"),
                        &spec.url,
                        "must name a host (normally the service's name), not an address: \
                         the site's address is where the connection goes (use alias.address \
                         to choose another)",
                    );
                    None
                }
                None => {
                    p.push(format!("{path}.url"), &spec.url, "has no host");
                    None
                }
            },
            Err(e) => {
                p.push(
                    format!("{path}.url"),
                    &spec.url,
                    format!("is not a valid URL: {e}"),
                );
                None
            }
        };
        let method = Method::from_bytes(spec.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                p.push(
                    format!("{path}.method"),
                    &spec.method,
                    "is not an HTTP method",
                )
            })
            .ok();
        let mut headers = HeaderMap::new();
        for (name, value) in &spec.headers {
            let hp = format!("{path}.headers.{name}");
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                (Ok(n), Ok(mut v)) => {
                    // Its `Debug` (and the probe's) then shows `Sensitive`, not the value.
                    v.set_sensitive(idns_core::is_secret_name(name));
                    headers.insert(n, v);
                }
                (Err(_), _) => p.push(hp, name, "is not a valid header name"),
                (_, Err(_)) => p.push(hp, value, "is not a valid header value"),
            }
        }
        if !headers.contains_key(ACCEPT_ENCODING) {
            // As browsers do; any answer in these codings is decoded before the search.
            headers.insert(
                ACCEPT_ENCODING,
                HeaderValue::from_static(ContentCoding::ACCEPT),
            );
        }
        let status = StatusSet::parse(&mut p, &format!("{path}.status"), &spec.status);
        let matcher = Matcher::from_fields(
            &mut p,
            path,
            spec.expect.as_deref(),
            spec.expect_regex.as_deref(),
            spec.case_insensitive,
        );
        check_window(&mut p, &format!("{path}.body_window"), spec.body_window);
        if spec.redirects > 20 {
            p.push(
                format!("{path}.redirects"),
                spec.redirects,
                "must be at most 20",
            );
        }
        if let Some(port) = spec.alias.as_ref().and_then(|a| a.port) {
            p.push(
                format!("{path}.alias.port"),
                port,
                "is not used by an HTTP probe: put the port in the URL",
            );
        }
        let connect_timeout = match spec.connect_timeout {
            Some(d) if d.is_zero() => {
                p.push(
                    format!("{path}.connect_timeout"),
                    "0s",
                    "must be more than zero",
                );
                ctx.timeout
            }
            Some(d) => d.min(ctx.timeout),
            None => ctx.timeout,
        };
        let needs_tls = url.as_ref().is_some_and(|u| u.scheme() == "https") || spec.redirects > 0;
        let tls = if let Some(file) = &spec.ca_file {
            crate::tls::with_ca_file(file)
                .map_err(|e| p.push(format!("{path}.ca_file"), file.display(), e))
                .ok()
        } else if spec.danger_accept_invalid_certs {
            crate::tls::insecure()
                .map_err(|e| p.push(format!("{path}.danger_accept_invalid_certs"), true, e))
                .ok()
        } else {
            match crate::tls::system() {
                Ok(c) => Some(c),
                Err(e) if needs_tls => {
                    p.push(
                        format!("{path}.ca_file"),
                        "",
                        format!("{e}: give the CAs to trust"),
                    );
                    None
                }
                Err(_) => crate::tls::refuse_all()
                    .map_err(|e| p.push(path, "", e))
                    .ok(),
            }
        };
        if spec.danger_accept_invalid_certs && spec.ca_file.is_some() {
            p.push(
                format!("{path}.danger_accept_invalid_certs"),
                true,
                "contradicts ca_file: either verify against the CA or not at all",
            );
        }
        let endpoint = Endpoint::choose(&mut p, path, spec.alias.as_ref(), target);
        p.finish()?;
        let (Some(url), Some(method), Some(endpoint), Some(tls)) = (url, method, endpoint, tls)
        else {
            // Unreachable: each missing piece pushed a problem above.
            return Err(ConfigError::single(path, "", "is invalid"));
        };
        let host = url.host_str().unwrap_or_default().to_owned();

        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(if spec.redirects == 0 {
                reqwest::redirect::Policy::none()
            } else {
                reqwest::redirect::Policy::limited(spec.redirects)
            })
            .connect_timeout(connect_timeout)
            .pool_max_idle_per_host(0)
            .user_agent(concat!("idns-probe/", env!("CARGO_PKG_VERSION")));
        let connect_to = match &endpoint {
            Endpoint::Addr(ip) => {
                builder = builder.resolve(&host, SocketAddr::new(*ip, 0));
                ip.to_string()
            }
            Endpoint::Host(h) => {
                builder = builder.dns_resolver(Arc::new(SiteResolver {
                    service: host.to_ascii_lowercase(),
                    site: h.to_string(),
                }));
                h.to_string()
            }
        };
        if spec.danger_accept_invalid_certs {
            tracing::warn!(
                target: "idns_probe::http",
                probe = %ctx.label,
                "TLS certificate verification is off for this probe (danger_accept_invalid_certs)"
            );
        }
        builder = builder.tls_backend_preconfigured(tls);
        let client = builder.build().map_err(|e| {
            ConfigError::single(path, "", format!("cannot build the HTTP client: {e}"))
        })?;
        Ok(HttpProbe {
            label: ctx.label.clone(),
            client,
            method,
            url,
            headers,
            body: spec.body.clone(),
            status,
            matcher,
            window: spec.body_window,
            timeout: ctx.timeout,
            connect_to,
            debug: spec.debug,
        })
    }

    async fn attempt(&self, phase: &mut Phase, read: &mut usize) -> Result<(), Fail> {
        let mut req = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(self.headers.clone());
        if let Some(body) = &self.body {
            req = req.body(body.clone());
        }
        let resp = req.send().await.map_err(|e| self.classify(&e))?;
        let code = resp.status();
        if !self.status.contains(code.as_u16()) {
            return Err(Fail::down(format!(
                "HTTP {code} (expected {})",
                self.status
            )));
        }
        let Some(matcher) = &self.matcher else {
            return Ok(());
        };
        *phase = Phase::Body;
        let codings = match ContentCoding::of(resp.headers()) {
            Ok(c) => c,
            Err(why) => return Err(Fail::down(format!("HTTP {}: {why}", code.as_u16()))),
        };
        let decoded = if codings.is_empty() {
            String::new()
        } else {
            format!(" (decoded from {})", ContentCoding::list(&codings))
        };
        let raw = StreamReader::new(resp.bytes_stream().map(|r| r.map_err(io::Error::other)));
        let mut body = ContentCoding::decoder(raw, &codings);
        let mut buf: Vec<u8> = Vec::with_capacity(self.window.min(16 * 1024));
        let mut scratch = [0u8; 16 * 1024];
        loop {
            let room = scratch.len().min(self.window - buf.len());
            match body.read(&mut scratch[..room]).await {
                Ok(0) => {
                    return Err(Fail::down(format!(
                        "HTTP {}: {} not found in the body ({} bytes{decoded})",
                        code.as_u16(),
                        matcher.shown(),
                        buf.len()
                    )));
                }
                Ok(n) => {
                    buf.extend_from_slice(&scratch[..n]);
                    *read = buf.len();
                    if matcher.is_match(&buf) {
                        return Ok(());
                    }
                    if buf.len() >= self.window {
                        // Stop reading (and decoding) here: dropping the response closes the
                        // connection, so a small compressed body that expands without end
                        // costs no more than the window.
                        return Err(Fail::down(format!(
                            "HTTP {}: {} not found in the first {} bytes{decoded}",
                            code.as_u16(),
                            matcher.shown(),
                            self.window
                        )));
                    }
                }
                Err(e) => {
                    let transport = e
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<reqwest::Error>());
                    let reason = match transport {
                        Some(t) => {
                            let f = self.classify(t);
                            return Err(Fail {
                                status: f.status,
                                reason: format!(
                                    "reading the body after {} bytes{decoded}: {}",
                                    buf.len(),
                                    f.reason
                                ),
                            });
                        }
                        None if codings.is_empty() => {
                            format!("reading the body after {} bytes: {e}", buf.len())
                        }
                        None => format!(
                            "HTTP {}: the body is compressed ({}) and could not be decoded \
                             after {} decoded bytes: {e}",
                            code.as_u16(),
                            ContentCoding::list(&codings),
                            buf.len()
                        ),
                    };
                    return Err(Fail::down(reason));
                }
            }
        }
    }

    fn classify(&self, e: &reqwest::Error) -> Fail {
        let chain = error_chain(e);
        if e.is_timeout() {
            let what = if e.is_connect() {
                format!("connect to {} timed out", self.connect_to)
            } else {
                "timed out".to_owned()
            };
            return Fail {
                status: ProbeStatus::Timeout,
                reason: what,
            };
        }
        if e.is_redirect() {
            return Fail::down(format!("redirects: {chain}"));
        }
        let mut src: Option<&(dyn StdError + 'static)> = Some(e);
        let mut refused = false;
        while let Some(s) = src {
            if let Some(t) = s.downcast_ref::<rustls::Error>() {
                return Fail::down(format!("TLS error: {t}"));
            }
            // I/O errors nest (an `Other` around an `InvalidData` around the TLS error), and
            // `source()` skips the error an I/O error wraps: look inside by hand.
            let mut io = s.downcast_ref::<std::io::Error>();
            while let Some(e) = io {
                refused |= e.kind() == std::io::ErrorKind::ConnectionRefused;
                let inner = e.get_ref();
                if let Some(t) = inner.and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    return Fail::down(format!("TLS error: {t}"));
                }
                io = inner.and_then(|i| i.downcast_ref::<std::io::Error>());
            }
            src = s.source();
        }
        if refused {
            return Fail::down(format!("connection refused by {}", self.connect_to));
        }
        Fail::down(chain)
    }
}

/// A content coding the probe undoes before the search (RFC 9110, section 8.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentCoding {
    /// `gzip` (also `x-gzip`).
    Gzip,
    /// `deflate`: the zlib format.
    Deflate,
    /// `br`: Brotli.
    Brotli,
}

impl ContentCoding {
    /// The `Accept-Encoding` the probe sends unless its headers set one.
    const ACCEPT: &'static str = "gzip, deflate, br";

    /// At most this many codings are undone on one body.
    const MAX_LAYERS: usize = 2;

    /// The codings of a response in the order they were applied (none for an identity body);
    /// the error says which coding the probe cannot undo.
    fn of(headers: &HeaderMap) -> Result<Vec<ContentCoding>, String> {
        let mut codings = Vec::new();
        for value in headers.get_all(CONTENT_ENCODING) {
            let text = String::from_utf8_lossy(value.as_bytes());
            for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                let coding = match token.to_ascii_lowercase().as_str() {
                    "identity" => continue,
                    "gzip" | "x-gzip" => ContentCoding::Gzip,
                    "deflate" => ContentCoding::Deflate,
                    "br" => ContentCoding::Brotli,
                    _ => {
                        let shown: String = token.chars().take(40).collect();
                        return Err(format!(
                            "the body is compressed with {shown:?} (Content-Encoding), which \
                             the probe cannot decode: it decodes {}",
                            ContentCoding::ACCEPT
                        ));
                    }
                };
                codings.push(coding);
            }
        }
        if codings.len() > Self::MAX_LAYERS {
            return Err(format!(
                "the body is compressed {} times over ({}); the probe undoes at most {}",
                codings.len(),
                ContentCoding::list(&codings),
                Self::MAX_LAYERS
            ));
        }
        Ok(codings)
    }

    /// The coding's name in `Content-Encoding`.
    fn name(self) -> &'static str {
        match self {
            ContentCoding::Gzip => "gzip",
            ContentCoding::Deflate => "deflate",
            ContentCoding::Brotli => "br",
        }
    }

    /// `gzip`, or `gzip, br` for several.
    fn list(codings: &[ContentCoding]) -> String {
        let names: Vec<&str> = codings.iter().map(|c| c.name()).collect();
        names.join(", ")
    }

    /// `raw` with `codings` undone, last applied first. Decoding is lazy: it goes no further
    /// than what is read from the result.
    fn decoder(
        raw: impl AsyncBufRead + Send + Unpin + 'static,
        codings: &[ContentCoding],
    ) -> Box<dyn AsyncBufRead + Send + Unpin> {
        let mut reader: Box<dyn AsyncBufRead + Send + Unpin> = Box::new(raw);
        for coding in codings.iter().rev() {
            reader = match coding {
                ContentCoding::Gzip => Box::new(BufReader::new(GzipDecoder::new(reader))),
                ContentCoding::Deflate => Box::new(BufReader::new(ZlibDecoder::new(reader))),
                ContentCoding::Brotli => Box::new(BufReader::new(BrotliDecoder::new(reader))),
            };
        }
        reader
    }
}

/// What the attempt was doing when the time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Response,
    Body,
}

/// A failed attempt: down or timeout, and why.
#[derive(Debug)]
struct Fail {
    status: ProbeStatus,
    reason: String,
}

impl Fail {
    fn down(reason: impl Into<String>) -> Fail {
        Fail {
            status: ProbeStatus::Down,
            reason: reason.into(),
        }
    }
}

/// `outer: inner: innermost`, skipping repeats.
fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut src = Some(e);
    while let Some(s) = src {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        src = s.source();
    }
    parts.join(": ")
}

#[async_trait]
impl Probe for HttpProbe {
    async fn check(&self) -> ProbeOutcome {
        let start = Instant::now();
        let mut phase = Phase::Response;
        let mut read = 0;
        let result = tokio::time::timeout(self.timeout, self.attempt(&mut phase, &mut read)).await;
        let latency = start.elapsed();
        let outcome = match result {
            Ok(Ok(())) => ProbeOutcome::up(latency),
            Ok(Err(f)) => ProbeOutcome {
                status: f.status,
                latency,
                reason: f.reason,
            },
            Err(_) => {
                let mut o = ProbeOutcome::timeout(latency);
                let limit = humantime::format_duration(self.timeout);
                o.reason = match phase {
                    Phase::Response => {
                        format!("no response from {} within {limit}", self.connect_to)
                    }
                    Phase::Body => format!(
                        "body stalled: {read} bytes read within {limit}, search string not yet found"
                    ),
                };
                o
            }
        };
        crate::probe_log!(
            self.debug,
            "idns_probe::http",
            probe = %self.label,
            url = %self.url,
            connect_to = %self.connect_to,
            status = ?outcome.status,
            latency = ?outcome.latency,
            reason = %outcome.reason,
            "http check"
        );
        outcome
    }
}

/// Resolves the service's name to the site's own host name (a site in alias mode), and any other
/// name (a redirect elsewhere) normally.
struct SiteResolver {
    service: String,
    site: String,
}

impl reqwest::dns::Resolve for SiteResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = if name.as_str().eq_ignore_ascii_case(&self.service) {
            self.site.clone()
        } else {
            name.as_str().to_owned()
        };
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let list: Vec<SocketAddr> = addrs.collect();
            Ok(Box::new(list.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges_classes_and_codes() {
        let mut p = Problems::default();
        let s = StatusSet::parse(
            &mut p,
            "check.status",
            &[
                StatusSpec::Code(204),
                StatusSpec::Range("2xx".into()),
                StatusSpec::Range("301-302".into()),
            ],
        );
        p.finish().unwrap();
        assert!(s.contains(204) && s.contains(250) && s.contains(302));
        assert!(!s.contains(303) && !s.contains(404));
        assert_eq!(s.to_string(), "204, 200-299, 301-302");
    }

    #[test]
    fn content_codings_are_read_in_order_without_identity() {
        let of = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
            }
            ContentCoding::of(&h)
        };
        assert_eq!(of(&[]).unwrap(), []);
        assert_eq!(of(&["identity"]).unwrap(), []);
        assert_eq!(of(&["X-GZip"]).unwrap(), [ContentCoding::Gzip]);
        assert_eq!(
            of(&["deflate, identity", "br"]).unwrap(),
            [ContentCoding::Deflate, ContentCoding::Brotli]
        );
        let e = of(&["compress"]).unwrap_err();
        assert!(
            e.contains("\"compress\"") && e.contains("gzip, deflate, br"),
            "{e}"
        );
        let e = of(&["gzip, gzip, gzip"]).unwrap_err();
        assert!(e.contains("3 times over (gzip, gzip, gzip)"), "{e}");
    }

    #[test]
    fn bad_status_entries_are_named() {
        let mut p = Problems::default();
        StatusSet::parse(
            &mut p,
            "check.status",
            &[
                StatusSpec::Code(99),
                StatusSpec::Range("300-200".into()),
                StatusSpec::Range("nope".into()),
                StatusSpec::Range("6xx".into()),
            ],
        );
        let e = p.finish().unwrap_err().to_string();
        for needle in [
            "check.status[0] = 99",
            "check.status[1] = 300-200",
            "check.status[2] = nope",
            "check.status[3] = 6xx",
        ] {
            assert!(e.contains(needle), "missing {needle} in {e}");
        }
    }
}
