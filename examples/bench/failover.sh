#!/bin/sh
# End-to-end failover time (kill the primary's web server -> every authoritative server answers the recovery site): builds in release, prints the table. Options: see `--help`.
cd "$(dirname "$0")/../.." && exec cargo run --release -q -p idns-examples --bin failover_bench -- "$@"
