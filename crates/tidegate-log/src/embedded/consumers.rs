//! Named consumer positions of one stream: `consumers/<name>.pos` holding the next
//! offset to process as a checksummed u64, replaced atomically on every commit.
//!
//! Positions are loaded at open and served from memory; a commit writes the file
//! first (on a blocking thread, serialized per stream) and updates memory after,
//! so a position that was ever reported has been durable.

use super::fsutil;
use crate::LogError;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub(crate) const DIR: &str = "consumers";
const SUFFIX: &str = ".pos";

#[derive(Debug)]
pub(crate) struct Consumers {
    dir: PathBuf,
    positions: Mutex<HashMap<String, u64>>,
    /// Serializes commits of one stream so `<name>.pos.tmp` is never shared.
    commit_lock: Mutex<()>,
}

impl Consumers {
    pub(crate) fn empty(stream_dir: &Path) -> Self {
        Consumers {
            dir: stream_dir.join(DIR),
            positions: Mutex::new(HashMap::new()),
            commit_lock: Mutex::new(()),
        }
    }

    pub(crate) fn load(stream_dir: &Path) -> Result<Self, LogError> {
        let this = Self::empty(stream_dir);
        let entries = match fs::read_dir(&this.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(this),
            Err(e) => return Err(e.into()),
        };
        let mut positions = HashMap::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(consumer) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else {
                continue; // leftover `.tmp` of an interrupted commit, or foreign files
            };
            match fsutil::read_u64_file(&entry.path())? {
                Some(Ok(pos)) => {
                    positions.insert(consumer.to_owned(), pos);
                }
                Some(Err(())) => {
                    return Err(LogError::Corrupt(format!(
                        "consumer position file {} is damaged",
                        entry.path().display()
                    )))
                }
                None => {}
            }
        }
        *this.positions.lock() = positions;
        Ok(this)
    }

    pub(crate) fn get(&self, consumer: &str) -> Option<u64> {
        self.positions.lock().get(consumer).copied()
    }

    /// Blocking: call from a blocking thread.
    pub(crate) fn commit(&self, consumer: &str, next: u64) -> io::Result<()> {
        let _serial = self.commit_lock.lock();
        fs::create_dir_all(&self.dir)?;
        fsutil::write_atomic(
            &self.dir.join(format!("{consumer}{SUFFIX}")),
            &fsutil::encode_u64(next),
        )?;
        self.positions.lock().insert(consumer.to_owned(), next);
        Ok(())
    }
}
