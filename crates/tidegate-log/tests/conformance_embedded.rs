//! The backend-independent EventLog contract (`testsuite::conformance`) against the
//! embedded log. One instance serves as both "nodes" of the cluster check: the
//! embedded log is single-process by design.
#![cfg(feature = "testsuite")]

use std::sync::Arc;
use tidegate_log::embedded::{EmbeddedConfig, EmbeddedLog};
use tidegate_log::testsuite::{brokers::unique, conformance};
use tidegate_log::EventLog;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_log_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = EmbeddedLog::open(EmbeddedConfig::new(dir.path())).unwrap();
    conformance::run_all(
        || {
            let log = log.clone();
            async move { log }
        },
        &unique("conf"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_log_passes_with_no_tail_cache() {
    // Reads go to the segment files instead of the cache.
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig {
        tail_cache_bytes: 0,
        ..EmbeddedConfig::new(dir.path())
    };
    let log: Arc<dyn EventLog> = EmbeddedLog::open(config).unwrap();
    conformance::run_all(
        || {
            let log = log.clone();
            async move { log }
        },
        "small",
    )
    .await;
}
