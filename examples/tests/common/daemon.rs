//! The daemon on loopback that `idnsd.rs` and the status page's test share: both web sites, a
//! generated configuration with the embedded DNS server, and image or command-hook
//! replication in a temporary directory.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use idns_examples::daemon::wire::ServiceStatus;
use idns_examples::loopback::Sites;

use super::{Idnsd, PRIMARY, RECOVERY, TOKEN, free_port, site_toml};

pub const NAME: &str = "www.daemon.test";
/// The read-only role's token in [`Setup::config`].
pub const READ_TOKEN: &str = "reader-token-0123456789abcdef";

/// What a daemon on loopback needs: both web sites, a temporary directory for its files, and
/// free ports for its API and its embedded DNS server.
pub struct Setup {
    pub tmp: tempfile::TempDir,
    pub _sites: Sites,
    pub web: u16,
    pub api: SocketAddr,
    pub dns: SocketAddr,
}

impl Setup {
    pub async fn new() -> Setup {
        let sites = Sites::start(None).await.unwrap();
        Setup {
            tmp: tempfile::tempdir().unwrap(),
            web: sites.port,
            _sites: sites,
            api: SocketAddr::from((PRIMARY, free_port())),
            dns: SocketAddr::from((PRIMARY, free_port())),
        }
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// The service on loopback with the embedded DNS server, `replication` (the body of
    /// `[services.replication]`) and `policy` inside `[services.policy]`; `tail` is appended
    /// (e.g. a `[services.runbook]`).
    pub fn config(&self, replication: &str, policy: &str, tail: &str) -> String {
        format!(
            r#"
[daemon]
listen = "{api}"
token = "{TOKEN}"
read_token = "{READ_TOKEN}"
journal_dir = "{dir}/journal"
observers = ["east", "west"]
replication_poll = "200ms"

[[services]]
name = "{NAME}"
zone = "daemon.test"
ttl = "1s"
resources = ["app-data"]
dns = {{ backend = "embedded", listen = ["{dns}"] }}
[services.observers]
ids = ["east", "west"]
[services.policy]
min_dwell = "0s"
{policy}
[services.replication]
{replication}
{primary}{recovery}{tail}"#,
            api = self.api,
            dns = self.dns,
            dir = self.dir().display(),
            primary = site_toml(NAME, "primary", 1, PRIMARY, self.web),
            recovery = site_toml(NAME, "recovery", 2, RECOVERY, self.web),
        )
    }

    /// Where [`steady`](Self::steady) writes the configuration.
    pub fn cfg(&self) -> PathBuf {
        self.dir().join("idnsd.toml")
    }

    /// Writes the [`config`](Self::config), starts the daemon on it and waits until both sites
    /// are up and eligible and the primary is published at epoch 1.
    pub async fn steady(
        &self,
        replication: &str,
        policy: &str,
        tail: &str,
    ) -> (Idnsd, ServiceStatus) {
        std::fs::write(self.cfg(), self.config(replication, policy, tail)).unwrap();
        let d = Idnsd::started(&self.cfg(), self.api, NAME).await;
        let s = d
            .wait_status("both sites up and eligible at epoch 1", |s| {
                s.epoch == 1
                    && s.runbook.is_none()
                    && s.sites.iter().all(|x| x.health == "up" && x.eligible)
            })
            .await;
        (d, s)
    }

    /// The controller's journal of the service, as the daemon saved it.
    pub fn journal(&self) -> serde_json::Value {
        let path = self.dir().join(format!("journal/{NAME}.json"));
        let stored: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        stored["journal"].clone()
    }
}

pub fn image_replication(dir: &Path) -> String {
    format!(
        r#"backend = "image"
[[services.replication.resources]]
id = "app-data"
home = "primary"
interval = "300ms"
sites = [{{ site = "primary", root = "{d}/primary" }}, {{ site = "recovery", root = "{d}/recovery" }}]
"#,
        d = dir.display()
    )
}

/// Command-hook replication of `app-data`: the hook logs each operation to
/// `<hooks>/hook.log` and reports `primary` fenced once it was; `promote` also writes its line to the named pipe `<hooks>/promotes`
/// when there is one, then runs `promote_body` (shell, `$i` starts at 0). Returns the hooks'
/// directory and the replication table.
pub fn command_replication(dir: &Path, promote_body: &str) -> (PathBuf, String) {
    let hooks = dir.join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let hook = hooks.join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            r#"#!/bin/sh
log="$HOOK_DIR/hook.log"
case "$IDNS_OPERATION" in
status)
    role=primary
    [ -e "$HOOK_DIR/primary.fenced" ] && role=fenced
    echo '{{"sites":[{{"site":"primary","role":"'$role'","lag_ms":0}},{{"site":"recovery","role":"replica","lag_ms":0}}]}}'
    ;;
fence)
    echo "fence $IDNS_SITE epoch=$IDNS_EPOCH" >> "$log"
    touch "$HOOK_DIR/$IDNS_SITE.fenced"
    echo '{{}}'
    ;;
promote)
    line="promote $IDNS_SITE epoch=$IDNS_EPOCH"
    echo "$line" >> "$log"
    if [ -p "$HOOK_DIR/promotes" ]; then
        LINE="$line" timeout 30 sh -c 'echo "$LINE" > "$HOOK_DIR/promotes"'
    fi
    i=0
    {promote_body}
    ;;
*)
    echo "$IDNS_OPERATION ${{IDNS_SITE:-$IDNS_PRIMARY}} epoch=$IDNS_EPOCH" >> "$log"
    echo '{{}}'
    ;;
esac
"#
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let replication = format!(
        r#"backend = "command"
[[services.replication.resources]]
id = "app-data"
sites = ["primary", "recovery"]
command = ["{hook}"]
env = {{ HOOK_DIR = "{hooks}" }}
"#,
        hook = hook.display(),
        hooks = hooks.display()
    );
    (hooks, replication)
}
