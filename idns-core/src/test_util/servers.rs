//! Helpers for tests that need a real server (BIND, PowerDNS, PostgreSQL, MariaDB).
//!
//! Such a test first asks [`require`] for the binary. When it is missing the test prints
//! `skipped: … not installed` and returns early — unless `IDNS_REQUIRE_SERVERS=1` is set (as
//! `.ci/run` does), which turns the skip into a failure.

use std::path::{Path, PathBuf};

/// Whether missing servers fail the test run (`IDNS_REQUIRE_SERVERS=1`).
pub fn servers_required() -> bool {
    std::env::var("IDNS_REQUIRE_SERVERS").is_ok_and(|v| v == "1")
}

/// Finds `binary` on `PATH` or in `extra_dirs` (e.g. `/usr/lib/postgresql/15/bin`).
///
/// Returns `None` after printing `skipped: <binary> not installed (<why>)` when it is absent;
/// panics instead when [`servers_required`].
pub fn require(binary: &str, extra_dirs: &[&str], why: &str) -> Option<PathBuf> {
    if let Some(found) = find(binary, extra_dirs) {
        return Some(found);
    }
    let msg = format!("skipped: {binary} not installed ({why})");
    if servers_required() {
        panic!("{msg}, and IDNS_REQUIRE_SERVERS=1 makes that a failure");
    }
    // Test output, not library logging: the person running the suite must see the skip.
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{msg}");
    }
    None
}

/// Finds `binary` on `PATH` or in `extra_dirs`, without printing anything.
pub fn find(binary: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra_dirs.iter().map(PathBuf::from))
        .chain(["/usr/sbin", "/sbin"].iter().map(PathBuf::from))
        .map(|d| d.join(binary))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A loopback port that is free for both TCP and UDP on 127.0.0.1, for a server a test is
/// about to start on it.
///
/// The port is taken from outside the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`): a port the OS hands out for `bind(0)` can be
/// taken a moment later by any client socket of a test running beside this one (a resolver's
/// UDP query, say), and the server then fails with "Address already in use". Outside that range
/// only an explicit bind takes a port, and every test asks here, walking the range from a
/// per-process starting point.
#[allow(clippy::disallowed_methods)]
pub fn free_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (lo, hi) = outside_ephemeral_range();
    let span = u32::from(hi - lo) + 1;
    // Spread processes apart: test binaries run at once pick from different places.
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span.min(4096) {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = lo + ((start + step) % span) as u16;
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no port free for both TCP and UDP on 127.0.0.1 in {lo}..={hi}"),
    ))
}

/// The ports [`free_port`] takes from: the larger stretch of 10000..=65535 outside the
/// ephemeral range (read once per process).
fn outside_ephemeral_range() -> (u16, u16) {
    static RANGE: std::sync::OnceLock<(u16, u16)> = std::sync::OnceLock::new();
    *RANGE.get_or_init(read_outside_ephemeral_range)
}

fn read_outside_ephemeral_range() -> (u16, u16) {
    let (eph_lo, eph_hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    let below = (10_000, eph_lo.saturating_sub(1));
    let above = (eph_hi.saturating_add(1), u16::MAX);
    let len = |(a, b): (u16, u16)| b.saturating_sub(a);
    if len(below) >= len(above) {
        below
    } else {
        above
    }
}
