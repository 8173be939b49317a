//! Real servers: postgres with `ssl = on`
//!
//! The PostgreSQL backend's own connections honour `sslmode` and `sslrootcert` from a site's
//! conninfo: `verify-full` against a CA of the test's own making, a wrong CA refused with a
//! reason that names the site, and `require` refused by a server without TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use idns_core::{ReplicationBackend, ResourceId, Role, Secret, SiteId};
use idns_replication::postgres::{PgConfig, PostgresReplication};
use idns_replication::testing::PgPair;

/// A CA's PEM, and a server certificate and key for 127.0.0.1 and localhost signed by it.
fn pki() -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "idns test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// The backend with `conninfo` on site `a` only.
fn backend(pair: &PgPair, conninfo: &str) -> PostgresReplication {
    let mut spec = pair.spec("db", ["a", "b"], &[], "stop");
    spec.resources[0].sites[0].conninfo = Some(Secret::new(conninfo));
    PostgresReplication::new(PgConfig::try_from(spec).unwrap())
}

fn rid() -> ResourceId {
    ResourceId::try_from("db").unwrap()
}

async fn role_of_a(b: &PostgresReplication) -> Role {
    let status = b.status(&rid()).await.unwrap();
    let a = SiteId::try_from("a").unwrap();
    status.sites.iter().find(|s| s.site == a).unwrap().role
}

/// The error of a call that must connect to site `a`.
async fn connect_error(b: &PostgresReplication) -> String {
    b.compare_tables(&rid(), Duration::from_secs(10))
        .await
        .expect_err("connecting to site a fails")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_connects_and_a_wrong_ca_is_named() {
    let Some(pair) = PgPair::start() else { return };
    let (ca, cert, key) = pki();
    let (other_ca, _, _) = pki();
    pair.a.set_ssl(Some((&cert, &key))).await;
    let dir = pair.dir();
    std::fs::write(dir.join("ca.pem"), &ca).unwrap();
    std::fs::write(dir.join("other-ca.pem"), &other_ca).unwrap();

    let good = backend(
        &pair,
        &format!(
            "sslmode=verify-full sslrootcert={}",
            dir.join("ca.pem").display()
        ),
    );
    assert_eq!(role_of_a(&good).await, Role::Primary);
    good.compare_tables(&rid(), Duration::from_secs(30))
        .await
        .unwrap();

    let wrong = backend(
        &pair,
        &format!(
            "sslmode=verify-full sslrootcert={}",
            dir.join("other-ca.pem").display()
        ),
    );
    assert_ne!(role_of_a(&wrong).await, Role::Primary);
    let e = connect_error(&wrong).await;
    assert!(
        e.contains("site a") && e.contains("sslmode=verify-full") && e.contains("not trusted"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_needs_a_server_that_speaks_tls() {
    let Some(pair) = PgPair::start() else { return };
    let b = backend(&pair, "sslmode=require");
    assert_ne!(role_of_a(&b).await, Role::Primary);
    let e = connect_error(&b).await;
    assert!(
        e.contains("site a") && e.contains("sslmode=require") && e.contains("does not speak TLS"),
        "{e}"
    );
    // `require` encrypts without checking the certificate, as libpq does.
    let (_, cert, key) = pki();
    pair.a.set_ssl(Some((&cert, &key))).await;
    assert_eq!(role_of_a(&b).await, Role::Primary);
}
