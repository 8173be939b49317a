//! Delta replication of a large image versus rsync, and manifest hashing throughput.
//!
//! ```sh
//! cargo bench -p idns-replication --bench delta            # 4 GiB, 1 % of 64 KiB chunks
//! IDNS_BENCH_GIB=1 IDNS_BENCH_DIR=/var/tmp cargo bench -p idns-replication --bench delta
//! ```
//!
//! Creates an image of pseudo-random data, replicates it once (initial sync) with idns and
//! with rsync, changes 1 % of its chunks at random places, then times an incremental idns
//! pass against `rsync --inplace --no-whole-file` of the same change, and times a full
//! integrity check (blake3 of every byte) of the replica. Page cache is warm for both tools
//! (every file was just written or read). Prints a table; asserts nothing about time.
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use idns_core::{Epoch, IntegrityRequest, OpContext, ReplicationBackend};
use idns_replication::image::{ImageConfig, ImageReplication};

const CHUNK: u64 = 64 << 10;

fn fill(seed: u64, buf: &mut [u8]) {
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(buf);
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let gib: u64 = std::env::var("IDNS_BENCH_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let size = gib << 30;
    let base = std::env::var("IDNS_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let st = rustix::fs::statvfs(Path::new(&base)).expect("statvfs");
    let free = st.f_bavail * st.f_frsize;
    let need = 3 * size + (1 << 30);
    if free < need {
        println!(
            "skipped: {} GiB free under {base}, the benchmark needs {} GiB",
            free >> 30,
            need >> 30
        );
        return;
    }
    if Command::new("rsync").arg("--version").output().is_err() {
        println!("skipped: rsync not installed");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("idns-bench-")
        .tempdir_in(&base)
        .unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    fs::create_dir_all(a.join("live")).unwrap();
    fs::create_dir_all(&b).unwrap();
    let img = a.join("live/disk.raw");
    let rsync_dst = dir.path().join("rsync-disk.raw");

    // 1. The image.
    let t = Instant::now();
    {
        let mut f = File::create(&img).unwrap();
        let mut buf = vec![0u8; 8 << 20];
        for i in 0..size / buf.len() as u64 {
            fill(i, &mut buf);
            f.write_all(&buf).unwrap();
        }
        f.sync_all().unwrap();
    }
    let created = t.elapsed();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let repl =
        ImageReplication::new(ImageConfig::two_sites("bench", ("a", &a), ("b", &b)).unwrap());
    let res = "bench".parse().unwrap();
    let site_b = "b".parse().unwrap();

    // 2. Initial sync, both tools.
    let t = Instant::now();
    let initial = rt.block_on(repl.sync(&res)).unwrap().remove(0);
    let idns_initial = t.elapsed();
    let t = Instant::now();
    let ok = Command::new("rsync")
        .args(["--inplace", "--no-whole-file", "--times"])
        .arg(&img)
        .arg(&rsync_dst)
        .status()
        .unwrap();
    assert!(ok.success());
    let rsync_initial = t.elapsed();

    // 3. Change 1 % of the chunks, at random places.
    let chunks = size / CHUNK;
    let changes = chunks / 100;
    let mut picked = std::collections::BTreeSet::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while (picked.len() as u64) < changes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        picked.insert(x % chunks);
    }
    {
        let f = File::options().write(true).open(&img).unwrap();
        let mut buf = vec![0u8; CHUNK as usize];
        for c in &picked {
            fill(1_000_000 + c, &mut buf);
            f.write_all_at(&buf, c * CHUNK).unwrap();
        }
        f.sync_all().unwrap();
    }

    // 4. Incremental pass versus rsync of the same change.
    let t = Instant::now();
    let pass = rt.block_on(repl.sync(&res)).unwrap().remove(0);
    let idns_pass = t.elapsed();
    let t = Instant::now();
    let out = Command::new("rsync")
        // --ignore-times: always compare, as idns does for a changed file (the change may
        // fall within the second of the initial copy's time stamp).
        .args([
            "--inplace",
            "--no-whole-file",
            "--times",
            "--ignore-times",
            "--stats",
        ])
        .arg(&img)
        .arg(&rsync_dst)
        .output()
        .unwrap();
    assert!(out.status.success());
    let rsync_pass = t.elapsed();
    let stats = String::from_utf8_lossy(&out.stdout);
    let literal = stats
        .lines()
        .find(|l| l.starts_with("Literal data"))
        .unwrap_or("Literal data: ?")
        .to_owned();

    // 5. Hashing: a full integrity check of the replica (blake3 of every byte).
    let ctx = OpContext {
        epoch: Epoch::ZERO,
        drill: false,
        timeout: Duration::from_secs(3600),
        force: false,
    };
    let t = Instant::now();
    let check = rt
        .block_on(repl.integrity(&res, &site_b, &IntegrityRequest::Check, &ctx))
        .unwrap();
    let hashing = t.elapsed();
    assert!(check.mismatches.is_empty());
    let same = Command::new("cmp")
        .arg(&img)
        .arg(b.join("base/disk.raw"))
        .status()
        .unwrap()
        .success();

    let gbs = |bytes: u64, d: Duration| format!("{:.2} GB/s", bytes as f64 / d.as_secs_f64() / 1e9);
    println!();
    println!(
        "# idns-replication delta benchmark: {gib} GiB image, {changes} of {chunks} 64 KiB chunks changed (1 %), {} cores, warm page cache",
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    println!("# command: cargo bench -p idns-replication --bench delta (IDNS_BENCH_GIB={gib})");
    println!();
    println!("| step | idns | rsync --inplace --no-whole-file --times (-I) | idns / rsync |");
    println!("|---|---|---|---|");
    println!(
        "| initial sync | {} | {} | {:.2} |",
        secs(idns_initial),
        secs(rsync_initial),
        idns_initial.as_secs_f64() / rsync_initial.as_secs_f64()
    );
    println!(
        "| incremental pass (1 % changed) | {} | {} | **{:.2}** |",
        secs(idns_pass),
        secs(rsync_pass),
        idns_pass.as_secs_f64() / rsync_pass.as_secs_f64()
    );
    println!(
        "| bytes written by the incremental pass | {} MiB ({} chunks) | {} | |",
        pass.bytes_transferred >> 20,
        pass.chunks_changed,
        literal.trim()
    );
    println!();
    println!("| hashing | time | throughput |");
    println!("|---|---|---|");
    println!(
        "| integrity check of the replica (blake3, every byte) | {} | {} |",
        secs(hashing),
        gbs(size, hashing)
    );
    println!(
        "| incremental pass: source read + hashed | {} | {} |",
        secs(idns_pass),
        gbs(pass.bytes_hashed, idns_pass)
    );
    println!(
        "| initial sync: source read + hashed + {} GiB written | {} | {} |",
        initial.bytes_transferred >> 30,
        secs(idns_initial),
        gbs(size, idns_initial)
    );
    println!();
    println!(
        "image created in {}; replica identical to the source (cmp): {same}",
        secs(created)
    );
}
