//! The backend-independent `EventLog` conformance suite, run against the Kafka log.

mod common;

use common::*;
use std::sync::Arc;
use tidegate_log::testsuite::brokers::{kafka_brokers, unique};
use tidegate_log::testsuite::conformance;
use tidegate_log::EventLog;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_log_conforms() {
    init_tracing();
    let _serial = serial().await;
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let prefix = format!("{}.", unique("tgconf"));
    let opened = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let open = || {
        let (brokers, prefix, opened) = (brokers.clone(), prefix.clone(), opened.clone());
        async move {
            let log = connect(&brokers, &prefix).await;
            opened.lock().push(log.clone());
            log as Arc<dyn EventLog>
        }
    };
    conformance::run_all(open, "conf").await;
    let logs: Vec<_> = std::mem::take(&mut *opened.lock());
    for log in logs {
        log.close().await;
    }
    delete_topics(&brokers, &prefix).await;
}
