//! Configuration of one service: its name, sites, probes, observers, policies and runbooks.
//!
//! A person writes a [`ServiceSpec`] (serde, TOML in the daemon, or built in code with the
//! specs' constructors and setters); it is validated once by [`ServiceConfig::new`], which
//! lists *every* problem with its field path and the bad value. Everything downstream takes
//! the validated [`ServiceConfig`] and never checks again.
//!
//! The rules the election applies to these knobs are documented where the knobs are: when a
//! probe is up or down on [`ProbeSpec`], how probes combine on [`HealthRule`], how observers
//! combine (the quorum) on [`ObserversSpec`], and when the election switches on [`PolicySpec`].
//!
//! ```
//! let cfg = idns_core::ServiceConfig::from_toml(r#"
//!     name = "www.example.com"
//!     zone = "example.com"
//!     [[sites]]
//!     id = "primary"
//!     priority = 1
//!     addresses = ["192.0.2.10"]
//!     probes = [{ id = "http", interval = "1s", fall = 3 }]
//!     [[sites]]
//!     id = "recovery"
//!     priority = 2
//!     addresses = ["198.51.100.10"]
//!     probes = [{ id = "http", interval = "1s", fall = 3 }]
//! "#).unwrap();
//! assert_eq!(cfg.home().id.as_str(), "primary");
//! ```

mod bounds;
mod observers;
mod policy;
mod probe;
mod service;
mod site;
mod steps;
#[cfg(test)]
mod tests;

pub use observers::{Observers, ObserversSpec};
pub use policy::{AllDownPolicy, FailbackMode, FailoverMode, Policy, PolicySpec};
pub use probe::{Counting, ProbeSettings, ProbeSpec, redacted};
pub use service::{ServiceConfig, ServiceSpec};
pub use site::{HealthRule, RecordMode, Site, SiteSpec};
pub use steps::{
    RunbookSpec, StepSpec, default_drill_steps, default_failback_steps, default_failover_steps,
};
