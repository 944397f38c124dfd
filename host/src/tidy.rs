//! Tidy on a timer: each run revokes expired leases and cleans up interrupted issuance
//! (the component retries failed revocations with its own backoff). A run that stopped at
//! its work limit is continued at once; a run that failed waits longer each time.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::runtime::{EngineError, Runtime, TidyReport};

/// Calls of `tidy` one timer tick may make while runs stop at their work limit.
const MAX_CALLS_PER_TICK: u32 = 50;

/// Maximum wait after repeated failures, as a multiple of the interval.
const MAX_BACKOFF_FACTOR: u32 = 16;

/// Runs tidy every `interval` until `stop` is cancelled. The engine call in progress then
/// finishes, and no further call starts.
pub async fn run(runtime: Runtime, interval: Duration, stop: CancellationToken) {
    tracing::info!(interval = ?interval, "tidy timer started");
    let mut failures: u32 = 0;
    loop {
        let wait = interval * backoff_factor(failures);
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
        if tick(&runtime, &stop).await {
            failures = 0;
        } else {
            failures = failures.saturating_add(1);
        }
    }
    tracing::info!("tidy timer stopped");
}

fn backoff_factor(failures: u32) -> u32 {
    2u32.saturating_pow(failures).min(MAX_BACKOFF_FACTOR)
}

/// Calls `tidy` until a run completes or `stop` is cancelled, and returns whether every
/// call succeeded.
async fn tick(runtime: &Runtime, stop: &CancellationToken) -> bool {
    let mut total = Totals::default();
    for _ in 0..MAX_CALLS_PER_TICK {
        if stop.is_cancelled() {
            total.log();
            return true;
        }
        match runtime.tidy().await {
            Ok(Ok(report)) => {
                total.add(&report);
                if report.complete {
                    total.log();
                    return true;
                }
            }
            Ok(Err(error)) => {
                total.log();
                tracing::error!(error = %describe(&error), "tidy failed; retrying after a longer wait");
                return false;
            }
            Err(trap) => {
                total.log();
                tracing::error!(error = %trap, "tidy trapped; retrying after a longer wait");
                return false;
            }
        }
    }
    total.log();
    tracing::warn!(
        calls = MAX_CALLS_PER_TICK,
        "tidy has more work than one tick allows; it continues next tick"
    );
    true
}

#[derive(Default)]
struct Totals {
    calls: u32,
    revoked_leases: u32,
    cleaned_pending: u32,
    failed: u32,
    marked_irrevocable: u32,
}

impl Totals {
    fn add(&mut self, report: &TidyReport) {
        self.calls += 1;
        self.revoked_leases += report.revoked_leases;
        self.cleaned_pending += report.cleaned_pending;
        self.failed += report.failed;
        self.marked_irrevocable += report.marked_irrevocable;
    }

    fn log(&self) {
        if self.failed > 0 || self.marked_irrevocable > 0 {
            tracing::warn!(
                calls = self.calls,
                revoked_leases = self.revoked_leases,
                cleaned_pending = self.cleaned_pending,
                failed = self.failed,
                marked_irrevocable = self.marked_irrevocable,
                "tidy run: some revocations failed and are scheduled for a retry"
            );
        } else if self.revoked_leases == 0 && self.cleaned_pending == 0 {
            tracing::debug!(calls = self.calls, "tidy run: nothing to do");
        } else {
            tracing::info!(
                calls = self.calls,
                revoked_leases = self.revoked_leases,
                cleaned_pending = self.cleaned_pending,
                "tidy run"
            );
        }
    }
}

/// Describes an engine error. Its messages already mask secrets.
pub fn describe(error: &EngineError) -> String {
    match error {
        EngineError::InvalidInput(message) => format!("invalid input: {message}"),
        EngineError::NotFound(message) => format!("not found: {message}"),
        EngineError::Upstream(upstream) => format!("LiteLLM: {}", upstream.message),
        EngineError::Storage(message) => format!("storage: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let factors: Vec<u32> = (0..7).map(backoff_factor).collect();
        assert_eq!(factors, [1, 2, 4, 8, 16, 16, 16]);
        assert_eq!(backoff_factor(u32::MAX), MAX_BACKOFF_FACTOR);
    }
}
