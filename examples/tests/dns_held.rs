//! While the DNS step of a switch is held, the status does not show the new site as plainly
//! active: it shows the elected site and what DNS actually answers, side by side, through the
//! API and `idnsctl`, until the step is retried and DNS agrees.
//!
//! The real `idnsd` with its embedded DNS server; the DNS step fails because the server's state
//! file cannot be written (its directory is removed), as a full or read-only disk would.

mod common;

use std::net::SocketAddr;

use common::{Idnsd, PRIMARY, RECOVERY, TOKEN, free_port, site_toml};
use idns_examples::loopback::Sites;

const NAME: &str = "www.held.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_dns_step_shows_the_elected_site_beside_what_dns_answers() {
    let sites = Sites::start(None).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let api = SocketAddr::from((PRIMARY, free_port()));
    let dns = SocketAddr::from((PRIMARY, free_port()));
    let state_dir = dir.join("dns-state");
    std::fs::create_dir_all(&state_dir).unwrap();
    let config = format!(
        r#"
[daemon]
listen = "{api}"
token = "{TOKEN}"
journal_dir = "{journal}"
observers = ["east", "west"]

[[services]]
name = "{NAME}"
zone = "held.test"
ttl = "1s"
dns = {{ backend = "embedded", listen = ["{dns}"], state_file = "{state}" }}
[services.observers]
ids = ["east", "west"]
[services.policy]
min_dwell = "0s"
[services.runbook]
failover = [{{ step = "switch_dns", retries = 0, on_failure = "hold" }}, {{ step = "verify_dns" }}]
{primary}{recovery}"#,
        journal = dir.join("journal").display(),
        state = state_dir.join("dns.json").display(),
        primary = site_toml(NAME, "primary", 1, PRIMARY, sites.port),
        recovery = site_toml(NAME, "recovery", 2, RECOVERY, sites.port),
    );
    let cfg = dir.join("idnsd.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut d = Idnsd::started(&cfg, api, NAME).await;
    let s = d
        .wait_status("the primary published at epoch 1, both sites up", |s| {
            s.epoch == 1 && s.runbook.is_none() && s.sites.iter().all(|x| x.health == "up")
        })
        .await;
    let answer = s.dns.as_ref().expect("the status says what DNS answers");
    assert!(answer.agrees("primary", 1), "{answer:?}");
    assert_eq!(answer.records, ["127.0.0.1"]);
    let table = d.idnsctl_ok(&["status"]).await;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(NAME) && !l.contains("elected")),
        "{table}"
    );

    // The DNS server cannot write its state: the switch is decided, its DNS step held.
    std::fs::remove_dir_all(&state_dir).unwrap();
    let (code, body) = d.command("failover", r#"{"to": "recovery"}"#).await;
    assert_eq!(code, 202, "{body}");
    let s = d
        .wait_status("the DNS step held", |s| {
            s.runbook.as_ref().is_some_and(|r| r.held.is_some())
        })
        .await;
    assert_eq!((s.active.as_str(), s.epoch), ("recovery", 2));
    let answer = s.dns.as_ref().unwrap();
    assert_eq!(
        (answer.site.as_deref(), answer.epoch),
        (Some("primary"), Some(1)),
        "{answer:?}"
    );
    assert!(!answer.agrees(&s.active, s.epoch));
    let table = d.idnsctl_ok(&["status"]).await;
    assert!(
        table.contains("recovery (elected; DNS: primary at epoch 1 (127.0.0.1))"),
        "{table}"
    );
    let detail = d.idnsctl_ok(&["status", NAME]).await;
    assert!(
        detail.contains(
            "DNS answers: primary at epoch 1 (127.0.0.1) (elected: recovery at epoch 2; the \
             name does not answer it yet)"
        ),
        "{detail}"
    );
    let json = d.idnsctl_ok(&["status", NAME, "--json"]).await;
    assert!(json.contains("\"dns\""), "{json}");

    // The disk is back and the step retried: DNS answers the elected site.
    std::fs::create_dir_all(&state_dir).unwrap();
    let (code, body) = d.command("resume", r#"{"action": "retry"}"#).await;
    assert_eq!(code, 202, "{body}");
    let s = d
        .wait_status("the failover finished", |s| {
            s.runbook.is_none() && s.dns.as_ref().is_some_and(|a| a.agrees("recovery", 2))
        })
        .await;
    assert_eq!(s.dns.unwrap().records, ["127.0.0.2"]);
    let table = d.idnsctl_ok(&["status"]).await;
    assert!(!table.contains("elected"), "{table}");
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait().code(), Some(0), "log:\n{}", d.logs());
}
