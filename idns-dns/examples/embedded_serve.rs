//! Runs the embedded authoritative server until interrupted, for benchmarks and manual tests.
//!
//! ```text
//! cargo run --release -p idns-dns --example embedded_serve -- \
//!     --listen 127.0.0.1:5300 --threads 1 --zone example.com \
//!     --record www.example.com=192.0.2.1,2001:db8::1 --record app.example.com=cname:www.example.com
//! ```
//! Each `--record` is published at epoch 1 (site `bench`). Prints `listening <udp> <tcp>`
//! once it serves.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Duration;

use idns_core::{DnsBackend, DnsChange, DnsName, Epoch, RecordSet};
use idns_dns::embedded::{EmbeddedConfig, EmbeddedServer, EmbeddedSpec};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen = Vec::new();
    let mut threads = 1;
    let mut zone: Option<DnsName> = None;
    let mut records: Vec<(DnsName, RecordSet)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen.push(value.parse()?),
            "--threads" => threads = value.parse()?,
            "--zone" => zone = Some(value.parse()?),
            "--record" => {
                let (name, data) = value.split_once('=').ok_or("--record NAME=DATA")?;
                let set = match data.strip_prefix("cname:") {
                    Some(target) => RecordSet::Alias(target.parse()?),
                    None => RecordSet::Addresses(
                        data.split(',').map(str::parse).collect::<Result<_, _>>()?,
                    ),
                };
                records.push((name.parse()?, set));
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let zone = zone.ok_or("--zone is required")?;
    if listen.is_empty() {
        listen.push("127.0.0.1:5300".parse()?);
    }
    let mut spec = EmbeddedSpec::new(listen, std::slice::from_ref(&zone));
    spec.udp_threads = threads;
    let server = EmbeddedServer::start(EmbeddedConfig::try_from(spec)?).await?;
    let backend = server.backend();
    for (name, set) in records {
        backend
            .apply(&DnsChange {
                zone: zone.clone(),
                name,
                records: set,
                ttl: Duration::from_secs(300),
                epoch: Epoch::new(1),
                site: Some("bench".parse()?),
            })
            .await?;
    }
    println!(
        "listening {} {}",
        server.udp_addrs()[0],
        server.tcp_addrs()[0]
    );
    tokio::signal::ctrl_c().await.ok();
    server.shutdown();
    Ok(())
}
