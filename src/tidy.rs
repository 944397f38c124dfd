//! Tidy: revokes expired leases, finishes interrupted revocations and deletes keys left by
//! interrupted issuance, walking the due index from its cursor to the current bucket.

use crate::bindings::exports::litellm_secrets::engine::types::TidyReport;
use crate::clock;
use crate::creds::{self, PendingRecord};
use crate::due::{self, Entry};
use crate::error::Result;
use crate::lease::{self, LeaseRecord};
use crate::log;
use crate::revocation::{self, RevokeOutcome};
use crate::settings::Settings;
use crate::store::Store;
use crate::tokens;

/// Wait before tidy looks again at a record it could not handle, in seconds.
const DEFERRED_RETRY_SECONDS: u64 = 3600;

/// Records one tidy call handles before it returns with `complete: false`, so that a
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
// NOTE: records are handled one at a time, so a LiteLLM URL that stalls delays the
// revocations at every other URL by up to three timeouts per lease in the pass.
pub fn run(store: &Store, settings: &Settings) -> Result<TidyReport> {
    let now = clock::now();
    let mut report = TidyReport {
        revoked_leases: 0,
        cleaned_pending: 0,
        failed: 0,
        marked_irrevocable: 0,
        complete: true,
    };
    let mut records_done = 0;
    let retire_before = due::retirable_before(now);

    for bucket in due::cursor(store, now)?..=due::bucket_of(now) {
        let entries = due::entries(store, bucket)?;
        let mut kept_entries = 0;
        for entry in &entries {
            if records_done >= MAX_RECORDS_PER_CALL {
                report.complete = false;
                return Ok(report);
            }
            match visit_or_defer(store, settings, entry, now, &mut report)? {
                Next::Done => {
                    records_done += 1;
                    due::remove(store, entry)?;
                }
                Next::Later => kept_entries += 1,
            }
        }
        if bucket < retire_before && kept_entries == 0 {
            due::retire(store, bucket)?;
        }
    }
    Ok(report)
}

/// Visits an entry's record. A record that cannot be read or handled, such as one that is
/// no longer valid JSON, is logged, counted as failed and filed again for later, so that
/// one bad record never stops tidy.
fn visit_or_defer(
    store: &Store,
    settings: &Settings,
    entry: &Entry,
    now: u64,
    report: &mut TidyReport,
) -> Result<Next> {
    match visit(store, settings, entry, now, report) {
        Ok(next) => Ok(next),
        Err(error) => {
            log::warn(&format!(
                "tidy could not handle {}: {error}; retrying in {}s",
                entry.record_key, DEFERRED_RETRY_SECONDS
            ));
            report.failed += 1;
            due::file(store, &entry.record_key, now + DEFERRED_RETRY_SECONDS)?;
            Ok(Next::Done)
        }
    }
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
    if entry.record_key.starts_with("token/") {
        // A token is filed at its expiry, so one still waiting expires later this minute.
        let waiting = tokens::tidy_expired(store, &entry.record_key, now)?;
        return Ok(if waiting { Next::Later } else { Next::Done });
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
    // A claim that is still set belongs to a revocation that is running or died. One on
    // request may have deleted the key already, so tidy revokes the lease whatever its
    // expiry.
    if record.expires_at > now && record.revoking_since.is_none() {
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
    // A live claim that ends within the current bucket is looked at again on the next run,
    // because filing it anew would put it in a bucket tidy is walking now.
    if let Some(since) = record.revoking_since {
        let claim_end = since.saturating_add(revocation::CLAIM_SECONDS);
        if now < claim_end && due::bucket_of(claim_end) == due::bucket_of(now) {
            return Ok(Next::Later);
        }
    }
    match revocation::revoke_expired(store, settings, record, now)? {
        RevokeOutcome::Revoked => report.revoked_leases += 1,
        RevokeOutcome::Skipped => {}
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
    if pending.created_at + creds::pending_grace_seconds(settings) > now {
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
