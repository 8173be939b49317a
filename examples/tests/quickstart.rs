//! The README's run command, as a test: `quickstart` must narrate a real failover and failback
//! on loopback and exit 0.

use std::process::Command;

#[test]
fn quickstart_fails_over_and_back_and_loses_nothing() {
    let out = Command::new(env!("CARGO_BIN_EXE_quickstart"))
        .output()
        .expect("quickstart runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "quickstart failed:\n{stdout}\n{stderr}"
    );
    // What the main flow prints, in its order. The narration of the driver's events runs in
    // its own task and interleaves with it, so those lines are only checked for presence.
    let expect_in_order = [
        "a client resolves www.quickstart.test -> 127.0.0.1",
        "*** killing the primary's web app",
        "a client resolves www.quickstart.test -> 127.0.0.2",
        "the same URL now serves: site recovery",
        "the recovery site takes an order",
        "*** the primary's web app is restored ***",
        "a client resolves www.quickstart.test -> 127.0.0.1 again",
        "integrity: the order taken during the outage is at the primary",
        "RTO (election's measure)",
        "kill -> a client resolves the recovery",
        "quickstart finished: failover and failback completed, nothing lost.",
    ];
    let mut rest: &str = &stdout;
    for needle in expect_in_order {
        match rest.find(needle) {
            Some(i) => rest = &rest[i + needle.len()..],
            None => panic!("{needle:?} missing (or out of order) in:\n{stdout}"),
        }
    }
    for needle in [
        "decision: bootstrap - -> primary at epoch 1",
        "site primary is down",
        "decision: failover primary -> recovery at epoch 2",
        "done     promote app-data at recovery",
        "done     point www.quickstart.test at 127.0.0.2 (epoch 2)",
        "failover finished: RTO",
        "decision: failback recovery -> primary at epoch 3",
        "done     wait until app-data has caught up with recovery",
        "done     verify 2 markers of app-data at primary",
        "done     point www.quickstart.test at 127.0.0.1 (epoch 3)",
        "failback finished: RTO",
    ] {
        assert!(stdout.contains(needle), "{needle:?} missing in:\n{stdout}");
    }
    assert!(!stdout.contains("ABORTED"), "{stdout}");
    assert!(!stdout.contains("HELD"), "{stdout}");
}
