//! The tokio driver and the crash-safe file store (feature `runtime`).
