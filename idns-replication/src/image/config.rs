//! Configuration of image and file-tree replication: what is written ([`ImageSpec`]) and what
//! is validated ([`ImageConfig`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use idns_core::{ConfigError, Problems, ResourceId, SiteId};
use serde::{Deserialize, Serialize};

/// The longest pause between two passes.
const DAY: Duration = Duration::from_secs(86_400);

/// Image replication as written in a configuration file (any serde format).
///
/// ```
/// # use idns_replication::image::{ImageConfig, ImageSpec};
/// let spec: ImageSpec = serde_json::from_str(r#"{
///   "resources": [{
///     "id": "vms",
///     "home": "primary",
///     "sites": [
///       { "site": "primary",  "root": "/srv/idns/primary" },
///       { "site": "recovery", "root": "/mnt/dr/idns/recovery" }
///     ],
///     "chunk_size": 65536,
///     "keep": 3,
///     "interval": "30s"
///   }]
/// }"#)?;
/// let cfg = ImageConfig::try_from(spec)?;
/// assert_eq!(cfg.resources[0].sites[1].live.to_str(), Some("/mnt/dr/idns/recovery/live"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// The replicated resources; each is one consistency group of files.
    pub resources: Vec<ImageResourceSpec>,
}

/// One resource: a set of files (VM disk images, or a directory tree) that is copied as one
/// point in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageResourceSpec {
    /// The resource id, as the service configuration's consistency group names it.
    pub id: String,
    /// The site whose live copy is primary when no site has state yet.
    pub home: String,
    /// Where the resource lives at each site (at least two).
    pub sites: Vec<ImageSiteSpec>,
    /// Bytes per chunk: a power of two from 4 KiB to 64 MiB (default 64 KiB, a qcow2
    /// cluster). Smaller chunks move less for scattered writes and keep longer hash lists.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: u64,
    /// Checkpoints kept per site (default 3, at least 1). Older ones are kept as reverse
    /// deltas of the newest, so each costs only what changed.
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// Time between passes in continuous mode (default 30 s).
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Skip hashing files whose size and modification time equal the previous checkpoint's
    /// (like rsync's quick check; default true). With false, every pass reads everything.
    #[serde(default = "default_true")]
    pub trust_mtime: bool,
    /// Limit on the changed bytes written per second (none by default).
    #[serde(default)]
    pub max_bytes_per_sec: Option<u64>,
    /// Threads that read and hash (default 0: one per core).
    #[serde(default)]
    pub threads: usize,
    /// Copy setuid, setgid and sticky bits to the other sites, with each file's owner and
    /// group (default false: copies get the read, write and execute bits only, and the
    /// replicating process's ownership). Ownership can be set only by root; where it cannot,
    /// the special bits are dropped with a warning.
    #[serde(default)]
    pub preserve_special_bits: bool,
}

/// Where a resource lives at one site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSiteSpec {
    /// The site id.
    pub site: String,
    /// The directory that holds the site's state, checkpoints and drill copies (a local path
    /// or a mounted volume).
    pub root: PathBuf,
    /// The live copy the application uses (default `<root>/live`); on the same file system
    /// as `root`, since promotion moves the newest checkpoint there by renaming it.
    #[serde(default)]
    pub live: Option<PathBuf>,
}

impl ImageSpec {
    /// Takes the relative paths (each site's `root` and `live`) relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        for s in self.resources.iter_mut().flat_map(|r| &mut r.sites) {
            if s.root.is_relative() {
                s.root = base.join(&s.root);
            }
            if let Some(l) = &mut s.live
                && l.is_relative()
            {
                *l = base.join(&*l);
            }
        }
    }
}

fn default_chunk_size() -> u64 {
    64 << 10
}
fn default_keep() -> usize {
    3
}
fn default_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_true() -> bool {
    true
}

/// Validated image replication settings. Built only from an [`ImageSpec`] (or
/// [`ImageConfig::two_sites`]), so every value in it has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImageConfig {
    /// The resources.
    pub resources: Vec<ResourceConfig>,
}

/// A validated resource.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResourceConfig {
    /// The resource id.
    pub id: ResourceId,
    /// The site that is primary when no site has state yet.
    pub home: SiteId,
    /// The sites, in configuration order.
    pub sites: Vec<SiteConfig>,
    /// Bytes per chunk.
    pub chunk_size: u64,
    /// Checkpoints kept per site.
    pub keep: usize,
    /// Time between passes in continuous mode.
    pub interval: Duration,
    /// Whether unchanged size and modification time mean an unchanged file.
    pub trust_mtime: bool,
    /// Limit on the changed bytes written per second.
    pub max_bytes_per_sec: Option<u64>,
    /// Threads that read and hash.
    pub threads: usize,
    /// Whether copies keep setuid, setgid and sticky bits, with the source's ownership.
    pub preserve_special_bits: bool,
}

/// A validated site of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SiteConfig {
    /// The site id.
    pub site: SiteId,
    /// State, checkpoints and drill copies.
    pub root: PathBuf,
    /// The live copy.
    pub live: PathBuf,
}

impl ResourceConfig {
    /// The site's settings.
    pub fn site(&self, site: &SiteId) -> Option<&SiteConfig> {
        self.sites.iter().find(|s| &s.site == site)
    }
}

impl ImageConfig {
    /// One resource replicated between two sites on local paths, with default settings;
    /// `first` is the home site.
    pub fn two_sites(
        resource: &str,
        first: (&str, &Path),
        second: (&str, &Path),
    ) -> Result<Self, ConfigError> {
        ImageConfig::try_from(ImageSpec {
            resources: vec![ImageResourceSpec {
                id: resource.to_owned(),
                home: first.0.to_owned(),
                sites: [first, second]
                    .into_iter()
                    .map(|(site, root)| ImageSiteSpec {
                        site: site.to_owned(),
                        root: root.to_owned(),
                        live: None,
                    })
                    .collect(),
                chunk_size: default_chunk_size(),
                keep: default_keep(),
                interval: default_interval(),
                trust_mtime: true,
                max_bytes_per_sec: None,
                threads: 0,
                preserve_special_bits: false,
            }],
        })
    }

    /// The resource's settings.
    pub fn resource(&self, id: &ResourceId) -> Option<&ResourceConfig> {
        self.resources.iter().find(|r| &r.id == id)
    }
}

impl TryFrom<ImageSpec> for ImageConfig {
    type Error = ConfigError;

    /// Checks every field; the error lists every problem with its path.
    fn try_from(spec: ImageSpec) -> Result<Self, ConfigError> {
        let mut p = Problems::new();
        if spec.resources.is_empty() {
            p.push("resources", "", "lists no resource");
        }
        let mut resources = Vec::new();
        let mut all_roots: Vec<(String, PathBuf)> = Vec::new();
        for (ri, r) in spec.resources.iter().enumerate() {
            let at = |f: &str| format!("resources[{ri}].{f}");
            let id = ResourceId::try_from(r.id.as_str())
                .map_err(|e| p.push(at("id"), r.id.clone(), e.problem))
                .ok();
            if let Some(id) = &id
                && resources.iter().any(|x: &ResourceConfig| &x.id == id)
            {
                p.push(at("id"), r.id.clone(), "is used by another resource");
            }
            if !(4096..=(64 << 20)).contains(&r.chunk_size) || !r.chunk_size.is_power_of_two() {
                p.push(
                    at("chunk_size"),
                    r.chunk_size.to_string(),
                    "must be a power of two from 4096 to 67108864",
                );
            }
            if r.keep == 0 {
                p.push(at("keep"), "0", "must keep at least one checkpoint");
            }
            p.duration(at("interval"), r.interval, Duration::from_millis(10), DAY);
            if r.max_bytes_per_sec == Some(0) {
                p.push(at("max_bytes_per_sec"), "0", "must be above zero");
            }
            if r.sites.len() < 2 {
                p.push(
                    at("sites"),
                    r.sites.len().to_string(),
                    "needs at least two sites",
                );
            }
            let mut sites: Vec<SiteConfig> = Vec::new();
            for (si, s) in r.sites.iter().enumerate() {
                let at = |f: &str| format!("resources[{ri}].sites[{si}].{f}");
                let site = SiteId::try_from(s.site.as_str())
                    .map_err(|e| p.push(at("site"), s.site.clone(), e.problem))
                    .ok();
                if let Some(site) = &site
                    && sites.iter().any(|x| &x.site == site)
                {
                    p.push(at("site"), s.site.clone(), "is listed twice");
                }
                if !s.root.is_absolute() {
                    p.push(
                        at("root"),
                        s.root.display().to_string(),
                        "must be an absolute path",
                    );
                }
                let live = s.live.clone().unwrap_or_else(|| s.root.join("live"));
                if !live.is_absolute() {
                    p.push(
                        at("live"),
                        live.display().to_string(),
                        "must be an absolute path",
                    );
                }
                if s.live.is_some() && (live.starts_with(&s.root) && live != s.root.join("live")) {
                    p.push(
                        at("live"),
                        live.display().to_string(),
                        "may not lie inside root except as root/live",
                    );
                }
                if s.live.is_some() && s.root.starts_with(&live) {
                    p.push(
                        at("live"),
                        live.display().to_string(),
                        "may not contain root",
                    );
                }
                for (other, root) in &all_roots {
                    if root.starts_with(&s.root) || s.root.starts_with(root) {
                        p.push(
                            at("root"),
                            s.root.display().to_string(),
                            format!("overlaps {other} ({})", root.display()),
                        );
                    }
                }
                all_roots.push((at("root"), s.root.clone()));
                if let Some(site) = site {
                    sites.push(SiteConfig {
                        site,
                        root: s.root.clone(),
                        live,
                    });
                }
            }
            let home = SiteId::try_from(r.home.as_str())
                .map_err(|e| p.push(at("home"), r.home.clone(), e.problem))
                .ok();
            if let Some(h) = &home
                && !sites.iter().any(|s| &s.site == h)
            {
                p.push(at("home"), r.home.clone(), "is not one of the sites");
            }
            if let (Some(id), Some(home)) = (id, home) {
                resources.push(ResourceConfig {
                    id,
                    home,
                    sites,
                    chunk_size: r.chunk_size,
                    keep: r.keep,
                    interval: r.interval,
                    trust_mtime: r.trust_mtime,
                    max_bytes_per_sec: r.max_bytes_per_sec,
                    threads: if r.threads == 0 {
                        std::thread::available_parallelism().map_or(2, usize::from)
                    } else {
                        r.threads
                    },
                    preserve_special_bits: r.preserve_special_bits,
                });
            }
        }
        p.finish_with(ImageConfig { resources })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_problem_is_named_by_its_field() {
        let spec: ImageSpec = serde_json::from_str(
            r#"{"resources":[{"id":"a b","home":"x","chunk_size":1000,"keep":0,
                "sites":[{"site":"p","root":"relative"},{"site":"p","root":"/r/p/sub"},
                         {"site":"q","root":"/r/p"}]}]}"#,
        )
        .unwrap();
        let err = ImageConfig::try_from(spec).unwrap_err();
        let paths: Vec<&str> = err.errors.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "resources[0].id",
            "resources[0].chunk_size",
            "resources[0].keep",
            "resources[0].sites[0].root",
            "resources[0].sites[1].site",
            "resources[0].sites[2].root",
            "resources[0].home",
        ] {
            assert!(paths.contains(&want), "{want} missing from {err}");
        }
        assert!(err.to_string().contains("chunk_size = 1000"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<ImageSpec, _> = serde_json::from_str(r#"{"resources":[],"extra":1}"#);
        assert!(r.is_err());
    }

    #[test]
    fn two_sites_defaults() {
        let c = ImageConfig::two_sites("vm", ("a", Path::new("/x/a")), ("b", Path::new("/x/b")))
            .unwrap();
        let r = &c.resources[0];
        assert_eq!(r.chunk_size, 65536);
        assert_eq!(r.sites[0].live, Path::new("/x/a/live"));
        assert_eq!(r.home.as_str(), "a");
        assert!(!r.preserve_special_bits);
    }
}
