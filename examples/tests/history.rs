//! The record of every switch and the live events, against the real `idnsd` and `idnsctl` on
//! loopback (embedded DNS, image replication in a temporary directory): reports written for
//! each failover and failback, listed by `idnsctl history` across a restart and pruned to
//! `daemon.reports_keep`; the event stream (`text/event-stream`) resumed with `Last-Event-ID`
//! without a gap or a duplicate; `idnsctl watch` printing a failover as it happens.
//!
//! Every wait has a deadline, so a broken daemon fails the test instead of hanging it; nothing
//! asserts on how long anything took.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::daemon::{NAME, Setup, image_replication};
use common::{Idnsd, LIMIT, TOKEN, text};
use idns_examples::daemon::wire::{EventRecord, History, StoredReport};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes the application's data at the primary, an empty volume at the recovery site and
/// the setup's configuration with `daemon` added to its `[daemon]` table, starts the daemon
/// and waits until both sites are up and the primary is published at epoch 1.
async fn steady_with(setup: &Setup, daemon: &str) -> Idnsd {
    let dir = setup.dir();
    std::fs::create_dir_all(dir.join("primary/live")).unwrap();
    std::fs::create_dir_all(dir.join("recovery")).unwrap();
    std::fs::write(dir.join("primary/live/orders.txt"), "order 1\n").unwrap();
    let replication = image_replication(setup.dir());
    let config = setup.config(&replication, "", "").replacen(
        "[daemon]\n",
        &format!("[daemon]\n{daemon}\n"),
        1,
    );
    std::fs::write(setup.cfg(), config).unwrap();
    let d = Idnsd::started(&setup.cfg(), setup.api, NAME).await;
    wait_steady(&d).await;
    d
}

/// Waits until no runbook runs and both sites are up and eligible.
async fn wait_steady(d: &Idnsd) {
    d.wait_status("no runbook, both sites up and eligible", |s| {
        s.runbook.is_none() && s.sites.iter().all(|x| x.health == "up" && x.eligible)
    })
    .await;
}

/// Runs `idnsctl ARGS… --wait` (a command followed to its end) and requires it to succeed
/// within [`LIMIT`].
async fn switch(d: &Idnsd, args: &[&str]) -> String {
    let mut args = args.to_vec();
    args.push("--wait");
    tokio::time::timeout(LIMIT, d.idnsctl_ok(&args))
        .await
        .unwrap_or_else(|_| panic!("idnsctl {args:?} did not end; log:\n{}", d.logs()))
}

/// `idnsctl --json history` as the daemon answers it.
async fn history(d: &Idnsd) -> History {
    let shown = d.idnsctl_ok(&["--json", "history", NAME]).await;
    serde_json::from_str(&shown).unwrap_or_else(|e| panic!("{e}: {shown}"))
}

/// The files in the reports directory, sorted.
fn report_files(setup: &Setup) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(setup.dir().join("journal/reports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The six files (Markdown, HTML, JSON) of the reports `ids` of `kinds`.
fn expected_files(reports: &[(&str, u64)]) -> Vec<String> {
    let mut names: Vec<String> = reports
        .iter()
        .flat_map(|(kind, id)| {
            ["html", "json", "md"].map(|ext| format!("{NAME}-{kind}-{id}.{ext}"))
        })
        .collect();
    names.sort();
    names
}

/// A failover and a failback leave their reports on disk (Markdown, HTML, JSON); `idnsctl
/// history` lists them newest first with outcome, RTO and RPO; `idnsctl report` prints each
/// format (the HTML page self-contained); an unknown or malformed id is refused naming it; a
/// restart lists them still; with `reports_keep = 2` a third switch deletes the oldest; and an
/// event stream resumed from before the oldest event kept starts with a `missed` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_switch_leaves_a_report_that_history_lists_across_restarts() {
    let setup = Setup::new().await;
    let mut d = steady_with(&setup, "reports_keep = 2\nevent_log = 16").await;

    switch(&d, &["failover", NAME, "--to", "recovery"]).await;
    wait_steady(&d).await;
    switch(&d, &["failback", NAME]).await;

    // Listed newest first, as JSON and as a table.
    let h = history(&d).await;
    assert_eq!(h.service, NAME);
    let kinds: Vec<&str> = h.reports.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["failback", "failover"], "{h:#?}");
    assert!(h.reports[0].id > h.reports[1].id, "{h:#?}");
    for r in &h.reports {
        assert_eq!(r.outcome, "completed", "{r:#?}");
        assert!(r.rto_seconds > 0.0, "{r:#?}");
        assert!(
            r.rpo_seconds.is_some(),
            "an image switch measures its RPO: {r:#?}"
        );
    }
    assert_eq!(
        (h.reports[1].from.as_deref(), h.reports[1].to.as_deref()),
        (Some("primary"), Some("recovery"))
    );
    let table = d.idnsctl_ok(&["history", NAME]).await;
    eprintln!(
        "$ idnsctl history {NAME}\n{table}\n$ ls reports/\n{}",
        report_files(&setup).join("\n")
    );
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    for want in ["ID", "KIND", "OUTCOME", "RTO", "RPO", "FINISHED AT"] {
        assert!(rows[0].contains(want), "{table}");
    }
    assert!(
        rows[1].starts_with(&h.reports[0].id.to_string())
            && rows[1].contains("failback")
            && rows[1].contains("recovery → primary")
            && rows[1].contains("completed")
            && rows[1].contains(" ms"),
        "{table}"
    );
    assert!(
        rows[2].contains("failover") && rows[2].contains("primary → recovery"),
        "{table}"
    );

    let (failover, failback) = (h.reports[1].id, h.reports[0].id);
    assert_eq!(
        report_files(&setup),
        expected_files(&[("failover", failover), ("failback", failback)])
    );

    // Each report in each format; the page loads nothing from elsewhere.
    let page = d
        .idnsctl_ok(&["report", NAME, &failover.to_string(), "--format", "html"])
        .await;
    assert!(page.contains("<svg"), "{page}");
    for external in [
        "src=\"http",
        "href=\"http",
        "url(http",
        "@import",
        "<script",
    ] {
        assert!(!page.contains(external), "{external} in {page}");
    }
    let md = d.idnsctl_ok(&["report", NAME, &failover.to_string()]).await;
    let on_disk = std::fs::read_to_string(
        setup
            .dir()
            .join(format!("journal/reports/{NAME}-failover-{failover}.md")),
    )
    .unwrap();
    assert_eq!(md, on_disk);
    assert!(md.contains("RTO") && md.contains("RPO"), "{md}");
    let json = d
        .idnsctl_ok(&["--json", "report", NAME, &failback.to_string()])
        .await;
    let stored: StoredReport =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(stored.service, NAME);
    assert_eq!(
        (stored.summary.runbook, stored.report.runbook),
        (failback, failback)
    );
    assert_eq!(stored.summary.kind, "failback");
    assert!(!stored.context.sites.is_empty(), "{json}");

    // Refusals name what was wrong.
    for (id, named) in [("999", "999"), ("12x", "\"12x\"")] {
        let out = d.idnsctl(&["report", NAME, id]).await;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        assert!(text(&out.stderr).contains(named), "{}", text(&out.stderr));
    }
    let (code, body) = d
        .get(&format!(
            "/v1/services/{NAME}/reports/{failover}?format=pdf"
        ))
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("pdf"), "{body}");

    // Events were dropped from the small log: a stream from the start says how many first.
    let events = d.all_events().await;
    let first = events.first().unwrap().seq;
    assert!(first > 1, "the log of 16 dropped some: {events:#?}");
    let mut stream = Stream::open(&d, Some("0")).await;
    let (kind, data) = stream.next_message().await;
    assert_eq!(kind, "missed");
    let missed: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert!(missed["missed"].as_u64().unwrap() >= first - 1, "{data}");
    let (id, _) = stream.next_event().await;
    assert!(id >= first, "{id} after the missed event");
    drop(stream);

    // A restart reads them back from disk.
    assert!(d.terminate().success(), "{}", d.logs());
    let d = Idnsd::started(&setup.cfg(), setup.api, NAME).await;
    assert_eq!(history(&d).await, h);
    wait_steady(&d).await;

    // A third switch: only the newest two are kept.
    switch(&d, &["failover", NAME, "--to", "recovery"]).await;
    let after = history(&d).await;
    let kept: Vec<(&str, u64)> = after
        .reports
        .iter()
        .map(|r| (r.kind.as_str(), r.id))
        .collect();
    assert_eq!(kept.len(), 2, "{after:#?}");
    assert_eq!(kept[1], ("failback", failback), "{after:#?}");
    assert_eq!(kept[0].0, "failover");
    assert!(kept[0].1 > failback);
    assert_eq!(report_files(&setup), expected_files(&kept));
    let out = d.idnsctl(&["report", NAME, &failover.to_string()]).await;
    assert_eq!(out.status.code(), Some(1), "the oldest is gone");
}

/// A raw event stream over HTTP/1.0 (so that the body comes as it is, without chunks): the
/// request, then the body as it arrives.
struct Stream {
    lines: tokio::io::Lines<tokio::io::BufReader<TcpStream>>,
    deadline: Instant,
}

impl Stream {
    /// Opens `/events` of the service with `Accept: text/event-stream`, and `Last-Event-ID`
    /// when given; requires a 200 with the event-stream content type.
    async fn open(d: &Idnsd, last_event_id: Option<&str>) -> Stream {
        let (status, headers, lines) = request(d, last_event_id).await;
        assert_eq!(status, 200, "{headers}");
        assert!(
            headers
                .to_ascii_lowercase()
                .contains("content-type: text/event-stream"),
            "{headers}"
        );
        Stream {
            lines,
            deadline: Instant::now() + LIMIT,
        }
    }

    /// The next line of the body.
    async fn line(&mut self) -> String {
        let left = self.deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => panic!("the event stream ended or stalled: {other:?}"),
        }
    }

    /// The next message with an `event:` (comments skipped): its kind, its data, and its id.
    async fn message(&mut self) -> (Option<u64>, String, String) {
        let (mut id, mut kind, mut data) = (None, None, String::new());
        loop {
            let line = self.line().await;
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.parse().unwrap());
            } else if let Some(v) = line.strip_prefix("event: ") {
                kind = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            } else if line.is_empty()
                && let Some(kind) = kind.take()
            {
                return (id, kind, data);
            }
        }
    }

    /// The next message: its kind and data.
    async fn next_message(&mut self) -> (String, String) {
        let (_, kind, data) = self.message().await;
        (kind, data)
    }

    /// The next event of the log: its id and record (whose sequence number is the id).
    async fn next_event(&mut self) -> (u64, EventRecord) {
        let (id, kind, data) = self.message().await;
        let id = id.unwrap_or_else(|| panic!("a {kind} event without an id: {data}"));
        let record: EventRecord = serde_json::from_str(&data).unwrap();
        assert_eq!(record.seq, id);
        assert_ne!(kind, "missed");
        (id, record)
    }
}

/// Sends the event-stream request; its status, its headers and the body's lines.
async fn request(
    d: &Idnsd,
    last_event_id: Option<&str>,
) -> (
    u16,
    String,
    tokio::io::Lines<tokio::io::BufReader<TcpStream>>,
) {
    let mut tcp = TcpStream::connect(d.api).await.unwrap();
    let resume = last_event_id
        .map(|id| format!("Last-Event-ID: {id}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET /v1/services/{NAME}/events HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Accept: text/event-stream\r\n{resume}\r\n",
        d.api
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut lines = tokio::io::BufReader::new(tcp).lines();
    let mut head = String::new();
    loop {
        let line = tokio::time::timeout(LIMIT, lines.next_line())
            .await
            .expect("the daemon answers")
            .unwrap()
            .expect("a whole head");
        if line.is_empty() {
            break;
        }
        head.push_str(&line);
        head.push('\n');
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    (status, head, lines)
}

/// An event stream read partway, dropped, and resumed with `Last-Event-ID` after a failover
/// happened meanwhile, receives exactly the events after the last one read: no gap, no
/// duplicate, ids strictly increasing. A `Last-Event-ID` that is not a number is refused.
/// `idnsctl watch` prints the failover's decision, steps and end as they happen. An open
/// stream does not hold the daemon's shutdown: it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_resumes_after_the_last_event_id() {
    let setup = Setup::new().await;
    let mut d = steady_with(&setup, "").await;
    let before = d.status().await.last_event;

    // `idnsctl watch` from now on, as a user runs it.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_idnsctl"))
        .args(["--url", &format!("http://{}", d.api), "watch", NAME])
        .args(["--after", &before.to_string()])
        .env("IDNS_TOKEN", TOKEN)
        .env_remove("IDNS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });

    // A few events read from the start, then the connection dropped.
    let mut stream = Stream::open(&d, None).await;
    let mut read = Vec::new();
    for _ in 0..3 {
        read.push(stream.next_event().await.0);
    }
    assert!(read.windows(2).all(|w| w[0] < w[1]), "{read:?}");
    let last_read = *read.last().unwrap();
    drop(stream);

    // Meanwhile, a failover.
    switch(&d, &["failover", NAME, "--to", "recovery"]).await;
    let missed: Vec<u64> = d
        .all_events()
        .await
        .iter()
        .map(|e| e.seq)
        .filter(|&s| s > last_read)
        .collect();
    assert!(missed.len() > 5, "{missed:?}");

    // Resumed: exactly those, in order (newer ones may follow).
    let mut stream = Stream::open(&d, Some(&last_read.to_string())).await;
    let mut got = Vec::new();
    while got.last() != missed.last() {
        got.push(stream.next_event().await.0);
        assert!(got.len() <= missed.len() * 2, "{got:?} for {missed:?}");
    }
    assert_eq!(got, missed);
    drop(stream);

    // A Last-Event-ID that is not a number.
    let (status, head, mut body) = request(&d, Some("seven")).await;
    assert_eq!(status, 400, "{head}");
    let mut text_of_body = String::new();
    while let Ok(Ok(Some(line))) = tokio::time::timeout(LIMIT, body.next_line()).await {
        text_of_body.push_str(&line);
    }
    assert!(
        text_of_body.contains("Last-Event-ID") && text_of_body.contains("seven"),
        "{text_of_body}"
    );

    // What `idnsctl watch` printed: the decision, the steps and the end, in that order.
    let deadline = Instant::now() + LIMIT;
    let mut shown = Vec::new();
    while !shown
        .iter()
        .any(|l: &String| l.contains("failover finished"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => shown.push(line),
            Err(e) => {
                let _ = watch.kill();
                let _ = watch.wait();
                panic!("idnsctl watch: {e}; it printed:\n{}", shown.join("\n"));
            }
        }
    }
    watch.kill().unwrap();
    let status = watch.wait().unwrap();
    assert!(!status.success(), "killed");
    let position = |what: &str| {
        shown
            .iter()
            .position(|l| l.contains(what))
            .unwrap_or_else(|| panic!("{what} not in:\n{}", shown.join("\n")))
    };
    let decision = position("decision: failover primary -> recovery");
    let promote = position("done     promote app-data at recovery");
    let end = position("failover finished");
    assert!(decision < promote && promote < end, "{}", shown.join("\n"));

    // SIGTERM with a stream open: the daemon stops, and the stream ends.
    let mut stream = Stream::open(&d, None).await;
    stream.next_event().await;
    assert!(d.terminate().success(), "{}", d.logs());
    let rest = tokio::time::timeout(LIMIT, async {
        while let Ok(Some(_)) = stream.lines.next_line().await {}
    })
    .await;
    assert!(rest.is_ok(), "the stream outlived the daemon");
}
