//! Any bytes, as a DNS request over UDP and over TCP, into the embedded server's request
//! handling (fast path and complete path): no panic, no answer shorter than a header, the ID
//! echoed, and no UDP answer larger than the client allowed (512 bytes without EDNS, the
//! server's EDNS limit with it).
#![no_main]

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use idns_core::{DnsChange, Epoch, RecordSet};
use idns_dns::embedded::{EmbeddedConfig, Responder};
use libfuzzer_sys::fuzz_target;

fn responder() -> &'static Mutex<Responder> {
    static RESPONDER: OnceLock<Mutex<Responder>> = OnceLock::new();
    RESPONDER.get_or_init(|| {
        let zones = ["example.com".parse().unwrap(), "example.org".parse().unwrap()];
        let config = EmbeddedConfig::new(vec!["127.0.0.1:0".parse().unwrap()], &zones).unwrap();
        let responder = Responder::new(&config).unwrap();
        let backend = responder.backend();
        let many = (1..=60).map(|i| format!("192.0.2.{i}").parse().unwrap()).collect();
        for (name, records) in [
            ("www.example.com", RecordSet::Addresses(vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()])),
            ("app.example.com", RecordSet::Alias("www.example.com".parse().unwrap())),
            ("ext.example.com", RecordSet::Alias("host.example.net".parse().unwrap())),
            ("big.example.com", RecordSet::Addresses(many)),
            ("gone.example.org", RecordSet::Empty),
        ] {
            let zone = if name.ends_with(".org") { "example.org" } else { "example.com" };
            backend
                .apply_now(&DnsChange {
                    zone: zone.parse().unwrap(),
                    name: name.parse().unwrap(),
                    records,
                    ttl: Duration::from_secs(30),
                    epoch: Epoch::new(1),
                    site: Some("a".parse().unwrap()),
                })
                .unwrap();
        }
        Mutex::new(responder)
    })
}

/// Whether the request carries an OPT record the server understood (it then answers with one).
fn answer_has_opt(answer: &[u8]) -> bool {
    // ARCOUNT > 0 and the last 11 bytes look like an OPT RR with empty data.
    let arcount = u16::from_be_bytes([answer[10], answer[11]]);
    arcount > 0 && answer.len() >= 23 && answer[answer.len() - 11..answer.len() - 8] == [0, 0, 41]
}

fuzz_target!(|data: &[u8]| {
    let mut r = responder().lock().unwrap_or_else(|e| e.into_inner());
    let max = usize::from(r.max_udp_payload());
    for over_tcp in [false, true] {
        if let Some(answer) = r.answer(data, over_tcp) {
            assert!(answer.len() >= 12, "answer shorter than a header");
            assert_eq!(answer[..2], data[..2], "the ID is echoed");
            assert!(answer[2] & 0x80 != 0, "QR is set");
            if !over_tcp {
                assert!(answer.len() <= max, "UDP answer of {} bytes", answer.len());
                if !answer_has_opt(answer) {
                    assert!(answer.len() <= 512, "UDP answer of {} bytes without EDNS", answer.len());
                }
            }
        }
    }
});
