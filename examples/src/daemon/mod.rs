//! The `idnsd` controller: its configuration file, the backends it builds, its HTTP API and metrics.
