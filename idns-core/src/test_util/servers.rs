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

/// A free TCP port on 127.0.0.1 (the OS picks it; a test should bind it soon after).
#[allow(clippy::disallowed_methods)]
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}
