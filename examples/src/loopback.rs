//! The loopback world the example binaries and the tests share: two sites of one service on
//! 127.0.0.1 (primary) and 127.0.0.2 (recovery), each a tiny web app on the same port; the
//! application's data replicated between two directories by the image backend; a resolver
//! that asks one DNS server without a cache, as a client of the service would; the service's
//! configuration; and a narrator that stamps each printed line with the time.
//!
//! ```no_run
//! # async fn demo() -> Result<(), idns_examples::loopback::Error> {
//! use idns_examples::loopback::{ServiceToml, Sites};
//!
//! let sites = Sites::start(None).await?;
//! let toml = ServiceToml::new("www.example.test", "example.test", sites.port).render();
//! let config = idns_core::ServiceConfig::from_toml(&toml)?;
//! sites.primary.kill().await; // from now on a connection to the primary is refused
//! # let _ = config; Ok(()) }
//! ```

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use idns_core::{ResourceId, SiteId};
use idns_dns::embedded::{EmbeddedConfig, EmbeddedServer};
use idns_replication::image::{ImageConfig, ImageReplication};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// The primary site's address.
pub const PRIMARY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// The recovery site's address.
pub const RECOVERY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// What can go wrong while setting up the loopback world.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

// ---------------------------------------------------------------------------------------------
// Web sites
// ---------------------------------------------------------------------------------------------

/// A tiny web app for one site: `/health` answers `OK <site>`; any other path names the site
/// and lists the files of its data directory, if it has one. Every response closes its
/// connection, so a killed site refuses new connections at once and none linger.
#[derive(Debug)]
pub struct WebSite {
    addr: SocketAddr,
    kill: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl WebSite {
    /// Serves `site` on `addr` until killed or dropped.
    pub async fn start(
        site: &'static str,
        addr: SocketAddr,
        data: Option<PathBuf>,
    ) -> std::io::Result<WebSite> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (kill, mut killed) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    biased;
                    _ = &mut killed => break,
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            conns.spawn(serve(stream, site, data.clone()));
                        }
                    }
                }
                while conns.try_join_next().is_some() {}
            }
            drop(listener);
            conns.abort_all();
            while conns.join_next().await.is_some() {}
        });
        Ok(WebSite {
            addr,
            kill: Some(kill),
            task,
        })
    }

    /// Serves `site` on `addr` again, waiting up to `limit` while the port is still held
    /// (just after a kill, say).
    pub async fn restart(
        site: &'static str,
        addr: SocketAddr,
        data: Option<PathBuf>,
        limit: Duration,
    ) -> std::io::Result<WebSite> {
        let deadline = Instant::now() + limit;
        loop {
            match WebSite::start(site, addr, data.clone()).await {
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listener and every connection, and returns once they are closed: from then
    /// on a connection is refused at once.
    pub async fn kill(mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for WebSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, site: &str, data: Option<PathBuf>) {
    let mut buf = [0u8; 4096];
    let mut n = 0;
    let read = tokio::time::timeout(Duration::from_secs(2), async {
        while n < buf.len() {
            match stream.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    if read.is_err() {
        return;
    }
    let request = String::from_utf8_lossy(&buf[..n]);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let body = if path.starts_with("/health") {
        format!("OK {site}\n")
    } else {
        let mut page = format!("site {site}\n");
        if let Some(data) = &data
            && let Ok(mut entries) = tokio::fs::read_dir(data).await
        {
            while let Ok(Some(e)) = entries.next_entry().await {
                let _ = writeln!(page, "{}", e.file_name().to_string_lossy());
            }
        }
        page
    };
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Both sites' web apps, on one port of [`PRIMARY`] and [`RECOVERY`].
#[derive(Debug)]
pub struct Sites {
    /// The port both listen on.
    pub port: u16,
    /// The primary's web app.
    pub primary: WebSite,
    /// The recovery site's web app.
    pub recovery: WebSite,
}

impl Sites {
    /// Starts both web apps on a port free on both addresses; `data` gives each its data
    /// directory (primary, recovery) to list on `/`.
    pub async fn start(data: Option<(PathBuf, PathBuf)>) -> Result<Sites, Error> {
        let (pd, rd) = data.map_or((None, None), |(p, r)| (Some(p), Some(r)));
        let mut last = None;
        for _ in 0..20 {
            let port = TcpListener::bind((PRIMARY, 0)).await?.local_addr()?.port();
            let p = WebSite::start("primary", SocketAddr::from((PRIMARY, port)), pd.clone()).await;
            let r =
                WebSite::start("recovery", SocketAddr::from((RECOVERY, port)), rd.clone()).await;
            match (p, r) {
                (Ok(primary), Ok(recovery)) => {
                    return Ok(Sites {
                        port,
                        primary,
                        recovery,
                    });
                }
                (p, r) => last = p.err().or(r.err()),
            }
        }
        Err(last.map_or_else(
            || "no port free on both loopback addresses".into(),
            Into::into,
        ))
    }

    /// The primary's address and port.
    pub fn primary_addr(&self) -> SocketAddr {
        SocketAddr::from((PRIMARY, self.port))
    }

    /// The recovery site's address and port.
    pub fn recovery_addr(&self) -> SocketAddr {
        SocketAddr::from((RECOVERY, self.port))
    }
}

// ---------------------------------------------------------------------------------------------
// Replicated data
// ---------------------------------------------------------------------------------------------

/// The application's data at both sites, replicated from the primary's store to the
/// recovery's by the image backend, under `root`.
#[derive(Debug, Clone)]
pub struct ImagePair {
    /// The backend; hand a clone to the controller.
    pub replication: ImageReplication,
    /// The replicated resource.
    pub resource: ResourceId,
    /// The primary's live copy.
    pub primary_live: PathBuf,
    /// The recovery site's live copy.
    pub recovery_live: PathBuf,
}

impl ImagePair {
    /// Lays out two stores under `root` (`primary-store`, `recovery-store`) for `resource`,
    /// replicated every `interval`, with an empty live copy at the primary.
    pub async fn new(root: &Path, resource: &str, interval: Duration) -> Result<ImagePair, Error> {
        let stores = (root.join("primary-store"), root.join("recovery-store"));
        tokio::fs::create_dir_all(&stores.0).await?;
        tokio::fs::create_dir_all(&stores.1).await?;
        let mut image =
            ImageConfig::two_sites(resource, ("primary", &stores.0), ("recovery", &stores.1))?;
        for r in &mut image.resources {
            r.interval = interval;
        }
        let replication = ImageReplication::new(image);
        let resource: ResourceId = resource.parse()?;
        let live = |site: &str| -> Result<PathBuf, Error> {
            let site: SiteId = site.parse()?;
            replication
                .paths(&resource, &site)
                .map(|p| p.live)
                .ok_or_else(|| format!("the image backend has no site {site}").into())
        };
        let (primary_live, recovery_live) = (live("primary")?, live("recovery")?);
        tokio::fs::create_dir_all(&primary_live).await?;
        Ok(ImagePair {
            replication,
            resource,
            primary_live,
            recovery_live,
        })
    }

    /// Runs one replication pass now; returns the bytes it sent.
    pub async fn sync(&self) -> Result<u64, Error> {
        let passes = self.replication.sync(&self.resource).await?;
        Ok(passes.iter().map(|p| p.bytes_transferred).sum())
    }
}

// ---------------------------------------------------------------------------------------------
// A client's view of DNS
// ---------------------------------------------------------------------------------------------

/// A stub resolver that asks only `server`, without a cache, one attempt with a 500 ms
/// timeout: what a client of the service sees (one behind a caching resolver would also wait
/// out the TTL).
pub fn resolver(server: SocketAddr) -> Result<Resolver<TokioRuntimeProvider>, Error> {
    let mut ns = NameServerConfig::udp(server.ip());
    for c in &mut ns.connections {
        c.port = server.port();
    }
    let mut builder = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    );
    let opts = builder.options_mut();
    opts.cache_size = 0;
    opts.attempts = 1;
    opts.timeout = Duration::from_millis(500);
    opts.use_hosts_file = ResolveHosts::Never;
    Ok(builder.build()?)
}

/// The first address `name` resolves to, if any.
pub async fn resolve(r: &Resolver<TokioRuntimeProvider>, name: &str) -> Option<IpAddr> {
    r.lookup_ip(format!("{name}."))
        .await
        .ok()
        .and_then(|a| a.iter().next())
}

/// Asks for `name` every 20 ms, as a client retrying would, until it resolves to `want`;
/// returns the time since `since`. Fails after `limit` with the last answer.
pub async fn wait_resolves(
    r: &Resolver<TokioRuntimeProvider>,
    name: &str,
    want: IpAddr,
    since: Instant,
    limit: Duration,
) -> Result<Duration, Error> {
    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    loop {
        ticks.tick().await;
        let got = resolve(r, name).await;
        if got == Some(want) {
            return Ok(since.elapsed());
        }
        if since.elapsed() > limit {
            return Err(format!(
                "{name} did not resolve to {want} within {limit:?}; last answer {got:?}"
            )
            .into());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------------

/// The service's configuration for the two loopback sites, as TOML: each site probed over
/// HTTP (`GET /health`, expecting `OK`) by every observer.
#[derive(Debug, Clone)]
pub struct ServiceToml {
    /// The service's DNS name.
    pub name: String,
    /// Its zone.
    pub zone: String,
    /// The web apps' port.
    pub port: u16,
    /// The TTL of the published records.
    pub ttl: Duration,
    /// The observers (quorum: all of them, the default).
    pub observers: Vec<String>,
    /// The probes' interval.
    pub interval: Duration,
    /// The probes' per-attempt timeout.
    pub timeout: Duration,
    /// Successes in a row before a probe is up.
    pub rise: u32,
    /// Failures in a row before a probe is down.
    pub fall: u32,
    /// The replicated resource, if any.
    pub resource: Option<String>,
    /// The minimum time between two switches.
    pub min_dwell: Duration,
    /// The RPO budget.
    pub rpo_budget: Duration,
    /// TOML added as it is after the `[policy]` table's keys: more policy keys (`failback =
    /// "automatic"`), or whole tables such as `[runbook]`.
    pub extra: String,
}

impl ServiceToml {
    /// Two observers (`east`, `west`), HTTP probes every 100 ms with a 300 ms timeout, rise 2,
    /// fall 3, TTL 1 s, a 2 s minimum dwell, a 5 s RPO budget, no resource.
    pub fn new(name: &str, zone: &str, port: u16) -> Self {
        ServiceToml {
            name: name.to_owned(),
            zone: zone.to_owned(),
            port,
            ttl: Duration::from_secs(1),
            observers: vec!["east".to_owned(), "west".to_owned()],
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(300),
            rise: 2,
            fall: 3,
            resource: None,
            min_dwell: Duration::from_secs(2),
            rpo_budget: Duration::from_secs(5),
            extra: String::new(),
        }
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        let quoted = |v: &[String]| {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = format!(
            "name = {:?}\nzone = {:?}\nttl = {:?}\n",
            self.name,
            self.zone,
            d(self.ttl)
        );
        if let Some(r) = &self.resource {
            let _ = writeln!(out, "resources = [{r:?}]");
        }
        let _ = write!(
            out,
            "\n[observers]\nids = [{}]\n\n[policy]\nmin_dwell = {:?}\nrpo_budget = {:?}\n{}\n",
            quoted(&self.observers),
            d(self.min_dwell),
            d(self.rpo_budget),
            self.extra
        );
        for (id, priority, addr) in [("primary", 1, PRIMARY), ("recovery", 2, RECOVERY)] {
            let _ = write!(
                out,
                r#"
[[sites]]
id = "{id}"
priority = {priority}
addresses = ["{addr}"]
[[sites.probes]]
id = "http"
interval = {interval:?}
timeout = {timeout:?}{overlap}
rise = {rise}
fall = {fall}
check = {{ kind = "http", url = "http://{name}:{port}/health", expect = "OK" }}
"#,
                interval = d(self.interval),
                timeout = d(self.timeout),
                overlap = if self.timeout > self.interval {
                    // A killed site answers at once; the timeout covers a slow one.
                    "\nallow_timeout_over_interval = true"
                } else {
                    ""
                },
                rise = self.rise,
                fall = self.fall,
                name = self.name,
                port = self.port,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_toml_parses_with_every_knob_in_place() -> Result<(), Error> {
        let mut t = ServiceToml::new("www.example.test", "example.test", 8080);
        t.resource = Some("app-data".to_owned());
        t.fall = 5;
        t.extra = "failback = \"automatic\"".to_owned();
        let cfg = idns_core::ServiceConfig::from_toml(&t.render())?;
        assert_eq!(cfg.name().to_string(), "www.example.test");
        assert_eq!(cfg.sites().len(), 2);
        Ok(())
    }

    #[tokio::test]
    async fn a_killed_site_refuses_connections_and_the_other_serves() -> Result<(), Error> {
        let sites = Sites::start(None).await?;
        let recovery = sites.recovery_addr();
        let primary = sites.primary_addr();
        sites.primary.kill().await;
        assert!(TcpStream::connect(primary).await.is_err());
        let mut s = TcpStream::connect(recovery).await?;
        s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        assert!(out.ends_with("OK recovery\n"), "{out}");
        Ok(())
    }
}

/// Starts the embedded authoritative DNS server for `zone` on the primary's address (a free
/// port, UDP and TCP); returns it and its UDP address, for [`resolver`].
pub async fn dns_server(zone: &str) -> Result<(EmbeddedServer, SocketAddr), Error> {
    let listen = vec![SocketAddr::from((PRIMARY, 0))];
    let server = EmbeddedServer::start(EmbeddedConfig::new(listen, &[zone.parse()?])?).await?;
    let addr = *server
        .udp_addrs()
        .first()
        .ok_or("the DNS server has no UDP socket")?;
    Ok((server, addr))
}

/// Prints lines to standard output, each stamped with the seconds since it was started: the
/// narration of `quickstart` and `drill`.
#[derive(Debug, Clone, Copy)]
pub struct Narrator {
    start: Instant,
}

impl Narrator {
    /// Starts the clock.
    pub fn start() -> Narrator {
        Narrator {
            start: Instant::now(),
        }
    }

    /// Prints one line.
    #[allow(clippy::print_stdout)] // A narration is what the example binaries print.
    pub fn say(&self, line: impl fmt::Display) {
        let t = self.start.elapsed().as_secs_f64();
        println!("[{t:7.3}s] {line}");
    }
}
