//! Conformance suites for backend implementations.
