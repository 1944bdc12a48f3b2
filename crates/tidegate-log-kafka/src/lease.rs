//! Cluster-wide leases as consumer-group membership: every node competing for lease
//! `name` joins the group `{prefix}lease.{name}` on the single-partition topic
//! `{prefix}_leases`; the group coordinator assigns that one partition to exactly one
//! member, which holds the lease. A member that dies stops heartbeating and after
//! `session.timeout.ms` the coordinator reassigns the partition to a survivor; a
//! member that leaves (the lease is dropped) hands over at once. Nothing is ever
//! produced to the topic: only the assignment matters.
use rdkafka::consumer::{Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::ClientContext;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{KafkaConfig, Role};

/// How long a dead holder keeps the lease before the group moves it.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

pub(crate) struct LeaseContext {
    held: watch::Sender<bool>,
    name: String,
}

impl ClientContext for LeaseContext {}

impl ConsumerContext for LeaseContext {
    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let held = tpl.count() > 0;
                if held {
                    tracing::info!(lease = %self.name, "Lease acquired (partition assigned).");
                }
                self.held.send_replace(held);
            }
            Rebalance::Revoke(_) => {
                if *self.held.borrow() {
                    tracing::warn!(lease = %self.name, "Lease lost (partition revoked).");
                }
                self.held.send_replace(false);
            }
            Rebalance::Error(e) => {
                tracing::warn!(lease = %self.name, error = %e, "Lease rebalance failed.");
                self.held.send_replace(false);
            }
        }
    }
}

/// Joins the lease group and keeps polling (heartbeats, rebalances) until `stop` or
/// `shutdown`; leaving the group on the way out hands the lease over.
pub(crate) fn start(
    config: &KafkaConfig,
    topic: &str,
    name: &str,
    held: watch::Sender<bool>,
) -> Result<StreamConsumer<LeaseContext>, rdkafka::error::KafkaError> {
    let mut cc = config.client_config(Role::Group);
    cc.set("group.id", format!("{}lease.{name}", config.prefix))
        .set("enable.auto.commit", "false")
        .set(
            "session.timeout.ms",
            SESSION_TIMEOUT.as_millis().to_string(),
        )
        .set("heartbeat.interval.ms", "1000")
        .set("partition.assignment.strategy", "range");
    let consumer: StreamConsumer<LeaseContext> = cc.create_with_context(LeaseContext {
        held,
        name: name.to_owned(),
    })?;
    consumer.subscribe(&[topic])?;
    Ok(consumer)
}

pub(crate) async fn run(
    consumer: StreamConsumer<LeaseContext>,
    stop: CancellationToken,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = shutdown.cancelled() => break,
            // Nothing is produced to the topic; recv drives the rebalance callbacks.
            m = consumer.recv() => if let Err(e) = m {
                tracing::debug!(error = %e, "Lease consumer error.");
                tokio::time::sleep(Duration::from_millis(200)).await;
            },
        }
    }
    consumer.context().held.send_replace(false);
    // Leaving the group blocks on the coordinator: off the runtime threads.
    let _ = tokio::task::spawn_blocking(move || {
        consumer.unsubscribe();
        drop(consumer);
    })
    .await;
}
