//! Tidy: revokes expired leases and deletes keys left by interrupted issuance, walking the
//! due index from its cursor to the current bucket.

use crate::bindings::exports::litellm_secrets::engine::types::TidyReport;
use crate::clock;
use crate::creds::{self, PENDING_GRACE_SECONDS, PendingRecord};
use crate::due::{self, Entry};
use crate::error::Result;
use crate::lease::{self, LeaseRecord, RevokeOutcome};
use crate::settings::Settings;
use crate::store::Store;

/// Records one tidy call looks at before it returns with `complete: false`, so that a
/// backlog never outlasts a host's request timeout.
pub const MAX_RECORDS_PER_CALL: u32 = 500;

/// Decision about a due entry after its record was visited.
enum Next {
    /// The record needs nothing more at this time: remove the entry.
    Done,
    /// The record is due later within the current bucket: keep the entry.
    Later,
}

/// Runs one tidy pass at the current time.
pub fn run(store: &Store, settings: &Settings) -> Result<TidyReport> {
    let now = clock::now();
    let mut report = TidyReport {
        revoked_leases: 0,
        cleaned_pending: 0,
        failed: 0,
        marked_irrevocable: 0,
        complete: true,
    };
    let mut records_seen = 0;
    let retire_before = due::retirable_before(now);

    for bucket in due::cursor(store, now)?..=due::bucket_of(now) {
        let entries = due::entries(store, bucket)?;
        let mut kept_entries = 0;
        for entry in &entries {
            if records_seen >= MAX_RECORDS_PER_CALL {
                report.complete = false;
                return Ok(report);
            }
            records_seen += 1;
            match visit(store, settings, entry, now, &mut report)? {
                Next::Done => due::remove(store, entry)?,
                Next::Later => kept_entries += 1,
            }
        }
        if bucket < retire_before && kept_entries == 0 {
            due::retire(store, bucket)?;
        }
    }
    Ok(report)
}

fn visit(
    store: &Store,
    settings: &Settings,
    entry: &Entry,
    now: u64,
    report: &mut TidyReport,
) -> Result<Next> {
    if entry.record_key.starts_with("lease/") {
        let Some(record) = store.get::<LeaseRecord>(&entry.record_key)? else {
            return Ok(Next::Done);
        };
        return visit_lease(store, settings, &record, now, report);
    }
    if entry.record_key.starts_with("pending/") {
        let Some(pending) = store.get::<PendingRecord>(&entry.record_key)? else {
            return Ok(Next::Done);
        };
        return visit_pending(store, settings, &pending, now, report);
    }
    Ok(Next::Done)
}

fn visit_lease(
    store: &Store,
    settings: &Settings,
    record: &LeaseRecord,
    now: u64,
    report: &mut TidyReport,
) -> Result<Next> {
    if record.expires_at > now {
        // A renewal filed the lease again under its new expiry, so an entry in an earlier
        // bucket is finished.
        return Ok(
            if due::bucket_of(record.expires_at) == due::bucket_of(now) {
                Next::Later
            } else {
                Next::Done
            },
        );
    }
    match lease::revoke_expired(store, settings, record)? {
        RevokeOutcome::Revoked => report.revoked_leases += 1,
        RevokeOutcome::Failed { became_irrevocable } => {
            report.failed += 1;
            if became_irrevocable {
                report.marked_irrevocable += 1;
            }
        }
    }
    Ok(Next::Done)
}

fn visit_pending(
    store: &Store,
    settings: &Settings,
    pending: &PendingRecord,
    now: u64,
    report: &mut TidyReport,
) -> Result<Next> {
    if pending.created_at + PENDING_GRACE_SECONDS > now {
        return Ok(Next::Later);
    }
    if store.exists(&lease::storage_key(&pending.role, &pending.id))? {
        store.delete(&pending.storage_key())?;
        return Ok(Next::Done);
    }
    if creds::clean_up(store, settings, pending)? {
        report.cleaned_pending += 1;
    } else {
        report.failed += 1;
    }
    Ok(Next::Done)
}
