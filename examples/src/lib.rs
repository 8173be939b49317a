//! The runnable side of idns.
//!
//! This package holds the example binaries that assemble the crates into a complete
//! controller: `quickstart` (two sites on loopback, the embedded DNS server, a real failover
//! and failback with measured RTO), `idnsd` (the controller as a daemon driven by one TOML
//! file), `idnsctl` (its command-line client) and drill reports. The pieces the binaries
//! share live in this library so that tests can use them directly:
//!
//! - [`daemon`]: the `idnsd` controller: its configuration, backends, HTTP API and metrics;
//! - [`ctl`]: the client of that API that `idnsctl` is;
//! - [`cli`]: shell completions and man pages of both programs, from their clap definitions;
//! - [`report`]: drill and switch reports as Markdown, HTML and SVG;
//! - [`loopback`]: the two loopback sites, replicated data, a client resolver and the service
//!   configuration that `quickstart`, `drill`, `failover_bench` and the tests share;
//! - [`watched`]: one generic wrapper that watches the calls a controller makes on any backend;
//! - [`audit`]: a drill's evidence for its report, kept by watching the image backend.
//!
//! `examples/README.md` gives a reading order.
//!
#![doc = include_str!("linking.md")]

pub mod audit;
pub mod cli;
pub mod ctl;
pub mod daemon;
pub mod loopback;
pub mod report;
pub mod watched;

#[cfg(test)]
mod tests {
    /// The README shows the linking example that the crate's doctest compiles, verbatim.
    #[test]
    fn the_readme_shows_the_compiled_linking_example() {
        let doc = include_str!("linking.md");
        let readme = include_str!("../../README.md");
        let start = doc.find("```rust").expect("linking.md holds a Rust block");
        let len = doc[start + 3..].find("```").expect("the block ends") + 6;
        let block = &doc[start..start + len];
        assert!(
            readme.contains(block),
            "README.md's \"Linking the library\" should show, verbatim:\n{block}"
        );
    }
}
