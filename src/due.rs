//! The due index: which records tidy must look at, and when.
//!
//! Time is cut into buckets of [`BUCKET_SECONDS`]. Filing a record key for time `t` takes a
//! slot number from the atomic counter `due/<bucket>/count` and writes the record key to
//! `due/<bucket>/<slot>`, so concurrent writers never touch the same key. Tidy walks the
//! buckets from `due/cursor` up to the current one, so its work grows with the number of
//! due records, not with the number of leases. A bucket is retired, which deletes its
//! counter and moves the cursor past it, once it ended [`RETIRE_AFTER_SECONDS`] ago.
//! Writers only file times at or after their own clock, so a retired bucket gets no new
//! slots unless two hosts' clocks differ by more than that.

use crate::clock;
use crate::error::Result;
use crate::store::{Store, Update};

/// Width of a bucket, in seconds.
pub const BUCKET_SECONDS: u64 = 60;

/// Age after which a bucket's end is safe from late writers, in seconds.
pub const RETIRE_AFTER_SECONDS: u64 = 300;

const CURSOR_KEY: &str = "due/cursor";

/// One filed entry: the record key and the storage key of its slot.
pub struct Entry {
    /// Storage key of the record to look at, such as `lease/dev/<id>`.
    pub record_key: String,
    slot_key: String,
}

/// Returns the bucket that contains time `at`.
pub fn bucket_of(at: u64) -> u64 {
    at / BUCKET_SECONDS
}

/// Files `record_key` to be looked at from time `at` on. A time already past is filed
/// at the current time, because its bucket may be retired.
pub fn file(store: &Store, record_key: &str, at: u64) -> Result<()> {
    let bucket = bucket_of(at.max(clock::now()));
    let slot = store.increment(&count_key(bucket), 1)?;
    store.put_text(&slot_key(bucket, slot), record_key)
}

/// Returns the first bucket tidy has not retired, starting the cursor on first use.
///
/// Without a cursor, the index is found by one scan of the keys: the earliest bucket
/// with a counter, or the newest retirable bucket when there is none. A cursor ahead of
/// the clock means the clock went back after tidy ran. Writers may then have filed entries
/// behind the cursor, and the scan finds those too.
pub fn cursor(store: &Store, now: u64) -> Result<u64> {
    if let Some(cursor) = store.get::<u64>(CURSOR_KEY)? {
        if cursor <= retirable_before(now) + 1 {
            return Ok(cursor);
        }
    }
    let counters = store.keys_with_prefix("due/")?;
    let earliest = counters
        .iter()
        .filter_map(|key| {
            key.strip_prefix("due/")?
                .strip_suffix("/count")?
                .parse::<u64>()
                .ok()
        })
        .min();
    let start = earliest
        .unwrap_or(retirable_before(now))
        .min(retirable_before(now));
    store.put(CURSOR_KEY, &start)?;
    Ok(start)
}

/// Returns the first bucket that must not be retired yet at time `now`.
pub fn retirable_before(now: u64) -> u64 {
    bucket_of(now.saturating_sub(RETIRE_AFTER_SECONDS))
}

/// Returns the entries still filed in `bucket`.
pub fn entries(store: &Store, bucket: u64) -> Result<Vec<Entry>> {
    let counter = count_key(bucket);
    if !store.exists(&counter)? {
        return Ok(Vec::new());
    }
    let count = store.increment(&counter, 0)?.max(0);
    let slot_keys: Vec<String> = (1..=count).map(|slot| slot_key(bucket, slot)).collect();
    let found = store.get_many_text(&slot_keys)?;
    Ok(found
        .into_iter()
        .filter_map(|(slot_key, record_key)| {
            Some(Entry {
                record_key: record_key?,
                slot_key,
            })
        })
        .collect())
}

/// Removes an entry once its record needs no more attention at this time.
pub fn remove(store: &Store, entry: &Entry) -> Result<()> {
    store.delete(&entry.slot_key)
}

/// Retires `bucket`, whose entries were all removed, and moves the cursor past it.
pub fn retire(store: &Store, bucket: u64) -> Result<()> {
    store.delete(&count_key(bucket))?;
    store.update(CURSOR_KEY, |current: Option<u64>| {
        Ok(match current {
            Some(cursor) if cursor > bucket => Update::Keep,
            _ => Update::Put(bucket + 1),
        })
    })?;
    Ok(())
}

fn count_key(bucket: u64) -> String {
    format!("due/{bucket}/count")
}

fn slot_key(bucket: u64, slot: i64) -> String {
    format!("due/{bucket}/{slot}")
}
