//! Unit tests of the configuration: parsing, validation, defaults and redaction.

use std::time::Duration;

use super::*;

const GOOD: &str = r#"
    name = "www.example.com"
    zone = "example.com"
    [[sites]]
    id = "a"
    priority = 1
    addresses = ["127.0.0.1"]
    probes = [{ id = "http" }]
    [[sites]]
    id = "b"
    priority = 2
    addresses = ["127.0.0.2"]
    probes = [{ id = "http" }]
"#;

#[test]
fn a_good_config_takes_the_paper_defaults() {
    let c = ServiceConfig::from_toml(GOOD).unwrap();
    let p = &c.sites()[0].probes[0];
    assert_eq!(p.interval, Duration::from_secs(30));
    assert_eq!(p.timeout, Duration::from_secs(10));
    assert_eq!((p.rise, p.fall), (2, 3));
    assert_eq!(c.observers().quorum, 1);
    assert_eq!(c.drill_name().as_str(), "drill.www.example.com");
    assert_eq!(c.home().id.as_str(), "a");
    assert_eq!(c.policy().failback, FailbackMode::Manual);
}

#[test]
fn every_problem_is_listed_with_its_path() {
    let text = r#"
        name = "www.other.org"
        zone = "example.com"
        [observers]
        ids = ["x", "x"]
        quorum = 5
        [[sites]]
        id = "a b"
        priority = 1
        probes = [{ id = "p", fall = 0, ignore_down_response = true }]
        [[sites]]
        id = "c"
        priority = 1
        addresses = ["127.0.0.1"]
    "#;
    let err = ServiceConfig::from_toml(text).unwrap_err();
    let msg = err.to_string();
    for needle in [
        "name = www.other.org: is not inside zone example.com",
        "sites[0].id = a b",
        "sites[0].addresses",
        "sites[0].probes[0].fall = 0",
        "sites[0].probes[0].ignore_down_response",
        "sites[1].priority = 1",
        "sites[1].probes",
        "observers.ids[1] = x",
        "observers.quorum = 5",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
    }
}

#[test]
fn unknown_keys_and_wrong_types_are_refused() {
    let err = ServiceConfig::from_toml(&format!("{GOOD}\nbogus = 1")).unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
    assert!(err.to_string().contains("line 15"), "{err}");
    let err =
        ServiceConfig::from_toml(&GOOD.replace("priority = 2", "priority = \"x\"")).unwrap_err();
    assert!(err.to_string().contains("invalid type"), "{err}");
}

#[test]
fn huge_durations_are_refused_not_overflowed() {
    let text = GOOD.replacen(
        r#"{ id = "http" }"#,
        r#"{ id = "http", interval = "18446744073709551615s" }"#,
        1,
    ) + "\n[policy]\nmin_dwell = \"7000000000000000000s\"\n";
    let err = ServiceConfig::from_toml(&text).unwrap_err().to_string();
    assert!(err.contains("sites[0].probes[0].interval"), "{err}");
    assert!(err.contains("policy.min_dwell"), "{err}");
    assert!(err.contains("observers.stale_after"), "{err}");
}

#[test]
fn rise_and_fall_are_bounded() {
    let text = GOOD.replacen(
        r#"{ id = "http" }"#,
        r#"{ id = "http", rise = 65536, fall = 1001 }"#,
        1,
    );
    let err = ServiceConfig::from_toml(&text).unwrap_err();
    let got: Vec<String> = err.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        got,
        [
            "sites[0].probes[0].rise = 65536: must be from 1 to 1000",
            "sites[0].probes[0].fall = 1001: must be from 1 to 1000",
        ]
    );
    let most = GOOD.replacen(r#"{ id = "http" }"#, r#"{ id = "http", fall = 1000 }"#, 1);
    assert!(ServiceConfig::from_toml(&most).is_ok());
}

#[test]
fn debug_output_hides_secrets_in_checks() {
    let text = GOOD.replacen(
        r#"{ id = "http" }"#,
        r#"{ id = "http", check = { kind = "postgres", password = "hunter2", password_env = "PGPASS", nested = { api_key = "k3y" } } }"#,
        1,
    );
    let cfg = ServiceConfig::from_toml(&text).unwrap();
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("k3y"), "{shown}");
    assert!(shown.contains("PGPASS"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert_eq!(cfg.sites()[0].probes[0].check["password"], "hunter2");
}

#[test]
fn runbooks_need_exactly_one_dns_switch() {
    let text = format!("{GOOD}\n[runbook]\nfailover = [{{ step = \"fence\" }}]\n");
    let err = ServiceConfig::from_toml(&text).unwrap_err();
    assert!(err.to_string().contains("runbook.failover = 0"), "{err}");
}

#[test]
fn round_trips_through_serde() {
    let c = ServiceConfig::from_toml(GOOD).unwrap();
    let json = serde_json::to_string(&c).unwrap();
    let back: ServiceConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(c, back);
}

#[test]
fn a_probe_timeout_longer_than_its_interval_is_refused_unless_meant() {
    let with = |probe: &str| GOOD.replacen(r#"probes = [{ id = "http" }]"#, probe, 1);
    let err = ServiceConfig::from_toml(&with(
        r#"probes = [{ id = "http", interval = "1s", timeout = "5s" }]"#,
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(
            "sites[0].probes[0].timeout = 5s: is longer than the interval (1s): the attempts due \
             while one runs would be skipped"
        ),
        "{err}"
    );
    let c = ServiceConfig::from_toml(&with(
        r#"probes = [{ id = "http", interval = "1s", timeout = "5s", allow_timeout_over_interval = true }]"#,
    ))
    .unwrap();
    assert_eq!(c.sites()[0].probes[0].timeout, Duration::from_secs(5));
    // Without a timeout, a short interval is its own limit; observers go silent no sooner.
    let c =
        ServiceConfig::from_toml(&with(r#"probes = [{ id = "http", interval = "1s" }]"#)).unwrap();
    assert_eq!(c.sites()[0].probes[0].timeout, Duration::from_secs(1));
    assert_eq!(c.sites()[1].probes[0].timeout, Duration::from_secs(10));
}
