//! Real servers: chromium and chromedriver (Debian's `chromium`, `chromium-driver`), for the
//! status page as a person sees it; the rest of the file (`idnsctl plan`, the page's HTTP answers) runs the real
//! `idnsd` on loopback like `idnsd.rs`.
//!
//! Waits have generous deadlines; nothing asserts on how long anything took.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use common::daemon::{NAME, READ_TOKEN, Setup, command_replication};
use common::{Idnsd, LIMIT, text};
use idns_core::test_util::servers::require;

/// `GET path` with `authorization` (none: no header); the status and the body.
async fn get(d: &Idnsd, path: &str, authorization: Option<String>) -> (u16, String, String) {
    let client = reqwest::Client::new();
    let mut req = client.get(format!("http://{}{path}", d.api));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, challenge, resp.text().await.unwrap())
}

fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// A daemon in steady state with command-hook replication (its hook reports the primary
/// fenced once fenced).
async fn steady(setup: &Setup) -> Idnsd {
    let (_hooks, replication) = command_replication(setup.dir(), "echo '{}'");
    setup.steady(&replication, "", "").await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idnsctl_plan_shows_the_steps_and_guards_and_exits_by_the_verdict() {
    let setup = Setup::new().await;
    let d = steady(&setup).await;

    // Healthy: a failover to recovery would be allowed, at epoch 2, fence first.
    let out = d.idnsctl(&["plan", NAME, "--to", "recovery"]).await;
    let shown = text(&out.stdout);
    eprintln!("$ idnsctl plan {NAME} --to recovery\n{shown}");
    assert_eq!(out.status.code(), Some(0), "{shown}{}", text(&out.stderr));
    assert!(
        shown.starts_with(&format!(
            "failover to recovery of {NAME}: allowed now (primary -> recovery at epoch 2)"
        )),
        "{shown}"
    );
    for want in [
        "ok  eligibility of recovery",
        "ok  health of primary",
        "ok  minimum dwell",
        "ok  fence of primary",
        "no drill among the 0 report(s) kept",
        "1. fence app-data at primary",
        "promote app-data at recovery",
        "on failure",
    ] {
        assert!(shown.contains(want), "{want:?} missing:\n{shown}");
    }
    // Nothing changed.
    let s = d.status().await;
    assert_eq!((s.active.as_str(), s.epoch), ("primary", 1));

    // Refused: a failback while the home site is active, and a failover to an unknown site.
    let out = d.idnsctl(&["plan", NAME, "--failback"]).await;
    let shown = text(&out.stdout);
    eprintln!("$ idnsctl plan {NAME} --failback\n{shown}");
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.starts_with(&format!(
            "failback of {NAME}: REFUSED: home site primary is already active"
        )),
        "{shown}"
    );
    assert!(
        shown.contains("NO  target") && shown.contains("primary is already active"),
        "the refusing guard is marked: {shown}"
    );
    assert!(
        !shown.contains("eligibility of recovery"),
        "a failback's only target is home: {shown}"
    );
    assert!(
        text(&out.stderr).contains("failback would be refused"),
        "{}",
        text(&out.stderr)
    );
    let out = d.idnsctl(&["plan", NAME, "--to", "nowhere"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("\"nowhere\" is not a site"),
        "{}",
        text(&out.stderr)
    );
    // As JSON, through the read-only token too.
    let out = d
        .idnsctl_as(
            &["--json", "plan", NAME, "--to", "recovery"],
            Some(READ_TOKEN),
        )
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan: idns_core::Plan = serde_json::from_slice(&out.stdout).unwrap();
    assert!(plan.allowed && plan.epoch == Some(idns_core::Epoch::new(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_needs_a_token_and_loads_nothing_from_elsewhere() {
    let setup = Setup::new().await;
    let d = steady(&setup).await;
    let (status, challenge, _) = get(&d, "/", None).await;
    assert_eq!(status, 401);
    assert!(challenge.starts_with("Basic realm="), "{challenge}");
    let (status, _, _) = get(&d, "/", Some(basic("anyone", "wrong-token"))).await;
    assert_eq!(status, 401);
    let (status, _, page) = get(&d, "/", Some(basic("viewer", READ_TOKEN))).await;
    assert_eq!(status, 200);
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    // Self-contained: the only absolute URL is the SVG namespace, which loads nothing.
    let outside: Vec<&str> = page
        .match_indices("http")
        .map(|(i, _)| &page[i..(i + 40).min(page.len())])
        .filter(|s| !s.starts_with("http://www.w3.org/2000/svg"))
        .collect();
    assert!(outside.is_empty(), "{outside:?}");
    for tag in ["<link", "<img", "<iframe", "src="] {
        assert!(!page.contains(tag), "{tag} in the page");
    }
    // The API answers the page's own requests with the same Basic credentials.
    let (status, _, body) = get(&d, "/v1/services", Some(basic("viewer", READ_TOKEN))).await;
    assert_eq!(status, 200, "{body}");
    // A read-only token still cannot command, however it is sent.
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("http://{}/v1/services/{NAME}/freeze", d.api))
        .header("authorization", basic("viewer", READ_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
}

/// Opens the page in headless Chromium (driven over WebDriver by chromedriver) and reads what
/// a person would see: the primary active at epoch 1; then, without reloading, a failover
/// reaches the page through its event stream: the recovery site active at epoch 2 and the
/// failover with its timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_in_headless_chromium_follows_a_failover_live() {
    let Some(chromium) = require(
        "chromium",
        &[],
        "the status page is checked in a headless browser",
    ) else {
        return;
    };
    let Some(driver) = require("chromedriver", &[], "it drives the headless browser") else {
        return;
    };
    let setup = Setup::new().await;
    let d = steady(&setup).await;
    let browser = Browser::start(&driver, &chromium, &setup.dir().join("profile")).await;
    browser
        .open(&format!("http://viewer:{READ_TOKEN}@{}/", d.api))
        .await;
    let before = browser
        .text_until("the page shows the steady service", |t| {
            t.contains("primary (active)") && t.contains("activeprimary\nepoch1")
        })
        .await;
    assert!(
        before.contains("last switch: bootstrap - → primary completed"),
        "{before}"
    );

    let out = tokio::time::timeout(
        LIMIT,
        d.idnsctl(&["failover", NAME, "--to", "recovery", "--wait"]),
    )
    .await
    .expect("the failover ends");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The page's own reading is once a minute: within 20 s only the event stream can have
    // told it.
    let after = browser
        .text_until_within(
            "the page shows the failover",
            Duration::from_secs(20),
            |t| {
                t.contains("recovery (active)")
                    && t.contains("activerecovery\nepoch2")
                    && t.contains("last switch: failover primary → recovery completed")
            },
        )
        .await;
    for want in ["from east", "from west", "RTO", "switch_dns"] {
        assert!(after.contains(want), "{want:?} not on the page:\n{after}");
    }
    assert!(!after.contains("cannot read"), "{after}");
    let svg: bool = browser
        .script("return document.querySelectorAll('svg.timeline rect').length > 0")
        .await
        .as_bool()
        .unwrap();
    assert!(svg, "the failover's timeline is drawn");
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    // Kept for a person to look at when IDNS_STATUS_PAGE_SCREENSHOT names a file.
    if let Ok(keep) = std::env::var("IDNS_STATUS_PAGE_SCREENSHOT") {
        std::fs::write(keep, &png).unwrap();
    }
}

/// Headless Chromium driven by chromedriver over the WebDriver protocol (JSON over HTTP on a
/// loopback port); chromedriver is killed by its PID when dropped, and takes its browser
/// with it.
struct Browser {
    driver: tokio::process::Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Browser {
    async fn start(driver: &Path, chromium: &Path, profile: &Path) -> Browser {
        let port = common::free_port();
        let child = tokio::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000",
                         "--no-first-run", "--disable-extensions",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let mut browser = Browser {
            driver: child,
            base,
            session: String::new(),
            http,
        };
        let v = browser.call("POST", "/session", caps).await;
        browser.session = v["sessionId"].as_str().unwrap().to_owned();
        browser
    }

    async fn call(&self, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "POST" => self.http.post(&url).json(&body),
            "DELETE" => self.http.delete(&url),
            _ => self.http.get(&url),
        };
        let resp = tokio::time::timeout(LIMIT, req.send())
            .await
            .expect("chromedriver answers")
            .unwrap();
        let status = resp.status();
        let v: serde_json::Value = resp.json().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v["value"].clone()
    }

    async fn open(&self, url: &str) {
        let path = format!("/session/{}/url", self.session);
        self.call("POST", &path, serde_json::json!({ "url": url }))
            .await;
    }

    async fn script(&self, script: &str) -> serde_json::Value {
        let path = format!("/session/{}/execute/sync", self.session);
        self.call(
            "POST",
            &path,
            serde_json::json!({"script": script, "args": []}),
        )
        .await
    }

    async fn text_until(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        self.text_until_within(what, LIMIT, ok).await
    }

    /// The page's visible text, read again until `ok` says it shows what is wanted.
    async fn text_until_within(
        &self,
        what: &str,
        within: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let text = self
                .script("return document.body.innerText")
                .await
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if ok(&text) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {within:?}; the page shows:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn screenshot(&self) -> Vec<u8> {
        let path = format!("/session/{}/screenshot", self.session);
        let v = self.call("GET", &path, serde_json::Value::Null).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Stops chromedriver (and so its browser) by its PID.
        let _ = self.driver.start_kill();
    }
}
