//! Named consumers as Kafka consumer-group offsets: consumer `c` of stream `s` is
//! the committed offset of group `{prefix}{c}` for (`{prefix}{s}`, partition 0).
//! Commits are "simple consumer" commits (no group membership, generation -1), so
//! any node may commit for any consumer; the committed value is the next offset to
//! process, as the trait defines.
//!
//! librdkafka ties `group.id` to a client, so there is one client per consumer name,
//! kept in a bounded map. Everything here blocks: callers use `spawn_blocking`.

use crate::config::{KafkaConfig, Role};
use crate::context::{Ctx, Health};
use crate::error::Error;
use crate::stats::Stats;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Consumer-group clients kept open; beyond this the map is cleared and rebuilt.
const MAX_CLIENTS: usize = 64;

pub(crate) struct Groups {
    config: ClientConfig,
    health: Arc<Health>,
    stats: Arc<Stats>,
    timeout: Duration,
    clients: Mutex<HashMap<String, Arc<BaseConsumer<Ctx>>>>,
}

impl Groups {
    pub(crate) fn new(cfg: &KafkaConfig, health: Arc<Health>, stats: Arc<Stats>) -> Self {
        Groups {
            config: cfg.client_config(Role::Group),
            health,
            stats,
            timeout: cfg.request_timeout,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, group: &str) -> Result<Arc<BaseConsumer<Ctx>>, Error> {
        if let Some(c) = self.clients.lock().get(group) {
            return Ok(c.clone());
        }
        let mut config = self.config.clone();
        config.set("group.id", group);
        let c: BaseConsumer<Ctx> = config
            .create_with_context(Ctx::new(
                Role::Group,
                self.health.clone(),
                self.stats.clone(),
            ))
            .map_err(Error::kafka("creating a consumer-group client"))?;
        let c = Arc::new(c);
        let evicted = {
            let mut map = self.clients.lock();
            let evicted = if map.len() >= MAX_CLIENTS {
                std::mem::take(&mut *map)
            } else {
                HashMap::new()
            };
            map.entry(group.to_owned()).or_insert_with(|| c.clone());
            evicted
        };
        drop(evicted);
        Ok(c)
    }

    /// Blocking: commits `next` for (topic, 0) in `group`.
    pub(crate) fn commit(&self, group: &str, topic: &str, next: u64) -> Result<(), Error> {
        let c = self.client(group)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(next.min(i64::MAX as u64) as i64))
            .map_err(Error::kafka("building a partition list"))?;
        c.commit(&tpl, CommitMode::Sync)
            .map_err(Error::kafka("committing a consumer offset"))
    }

    /// Blocking: the committed offset of (topic, 0) in `group`, if any.
    pub(crate) fn position(&self, group: &str, topic: &str) -> Result<Option<u64>, Error> {
        let c = self.client(group)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, 0);
        let tpl = c
            .committed_offsets(tpl, self.timeout)
            .map_err(Error::kafka("fetching a committed offset"))?;
        let Some(p) = tpl.find_partition(topic, 0) else {
            return Ok(None);
        };
        if let Err(e) = p.error() {
            return Err(Error::Kafka {
                op: "fetching a committed offset",
                source: e,
            });
        }
        Ok(match p.offset() {
            Offset::Offset(o) if o >= 0 => Some(o as u64),
            _ => None,
        })
    }

    /// Drops every client (blocking: group clients leave and join their threads).
    pub(crate) fn clear(&self) {
        let clients = std::mem::take(&mut *self.clients.lock());
        drop(clients);
    }
}
