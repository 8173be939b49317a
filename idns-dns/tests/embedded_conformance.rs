//! The core's `DnsBackend` conformance suite against the embedded server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use idns_core::DnsName;
use idns_core::test_util::conformance::DnsSuite;
use idns_dns::embedded::{EmbeddedConfig, EmbeddedServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes_twice() {
    let server = EmbeddedServer::start(
        EmbeddedConfig::new(vec!["127.0.0.1:0".parse().unwrap()], &[zone()]).unwrap(),
    )
    .await
    .unwrap();
    let suite = DnsSuite::new(zone()).unwrap();
    suite.run(&server.backend()).await;
    suite.run(&server.backend()).await;
    server.shutdown();
}

fn zone() -> DnsName {
    "example.com".parse().unwrap()
}
