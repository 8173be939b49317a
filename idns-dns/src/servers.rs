//! Built DNS backends, and the embedded servers they share.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use idns_core::DnsBackend;

use crate::config::DnsConfig;
use crate::embedded::{EmbeddedConfig, EmbeddedServer};
use crate::error::Error;
#[cfg(feature = "powerdns")]
use crate::powerdns::PowerDnsBackend;
#[cfg(feature = "rfc2136")]
use crate::rfc2136::Rfc2136Backend;

/// A DNS backend built from a [`DnsConfig`], with the embedded server it publishes to when it
/// has one. The server serves as long as a `Dns` built for it (or the [`DnsServers`] that
/// started it) is kept; the backend itself keeps working without it (answering no one).
#[derive(Clone)]
pub struct Dns {
    backend: Arc<dyn DnsBackend>,
    server: Option<Arc<EmbeddedServer>>,
}

impl Dns {
    /// The backend, to hand to a controller.
    pub fn backend(&self) -> Arc<dyn DnsBackend> {
        Arc::clone(&self.backend)
    }

    /// The embedded server this backend publishes to, if it has one.
    pub fn server(&self) -> Option<&EmbeddedServer> {
        self.server.as_deref()
    }

    /// The UDP addresses of the embedded server (with the ports the system picked for port
    /// 0); empty for backends that change a server elsewhere.
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        self.server
            .as_deref()
            .map_or(&[], EmbeddedServer::udp_addrs)
    }
}

impl fmt::Debug for Dns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dns")
            .field("backend", &self.backend)
            .field("udp_addrs", &self.udp_addrs())
            .finish()
    }
}

impl DnsConfig {
    /// Builds the backend; an embedded server is started and lives as long as the returned
    /// [`Dns`]. Use [`DnsServers::build`] to let several services share one embedded server.
    pub async fn build(&self) -> Result<Dns, Error> {
        DnsServers::new().build(self).await
    }
}

/// Builds DNS backends for several services, starting one embedded server per distinct
/// embedded configuration: services whose embedded settings are equal share its server (each
/// publishes its own names in it), as a daemon serving several services on one address needs.
///
/// ```
/// use idns_dns::{DnsConfig, DnsServers};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config: DnsConfig = toml::from_str(r#"
///     backend = "embedded"
///     listen = ["127.0.0.1:0"]
///     zones = [{ name = "example.com" }]
/// "#)?;
/// let mut servers = DnsServers::new();
/// let www = servers.build(&config).await?;
/// let api = servers.build(&config).await?;
/// assert_eq!(www.udp_addrs(), api.udp_addrs()); // one server, two services
/// servers.shutdown(); // the ports are free again
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct DnsServers {
    embedded: Vec<(EmbeddedConfig, Arc<EmbeddedServer>)>,
}

impl DnsServers {
    /// No server started yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the backend `config` describes; an embedded server is started on first use of
    /// its configuration and shared by later ones.
    pub async fn build(&mut self, config: &DnsConfig) -> Result<Dns, Error> {
        match config {
            DnsConfig::Embedded(c) => {
                let server = match self.embedded.iter().find(|(k, _)| k == c) {
                    Some((_, s)) => Arc::clone(s),
                    None => {
                        let s = Arc::new(EmbeddedServer::start(c.clone()).await?);
                        self.embedded.push((c.clone(), Arc::clone(&s)));
                        s
                    }
                };
                Ok(Dns {
                    backend: Arc::new(server.backend()),
                    server: Some(server),
                })
            }
            #[cfg(feature = "rfc2136")]
            DnsConfig::Rfc2136(c) => Ok(Dns {
                backend: Arc::new(Rfc2136Backend::new(c.clone())),
                server: None,
            }),
            #[cfg(feature = "powerdns")]
            DnsConfig::PowerDns(c) => Ok(Dns {
                backend: Arc::new(PowerDnsBackend::new(c.clone())?),
                server: None,
            }),
        }
    }

    /// The embedded servers started, each once.
    pub fn servers(&self) -> impl Iterator<Item = &EmbeddedServer> {
        self.embedded.iter().map(|(_, s)| &**s)
    }

    /// Stops every embedded server started here and waits for its threads, so the ports are
    /// free when it returns (the backends built keep working, answering no one).
    pub fn shutdown(self) {
        for (_, s) in &self.embedded {
            s.shutdown();
        }
    }
}
