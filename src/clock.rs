//! Wall-clock time for lease arithmetic and monotonic sleeps for retry backoff.

use crate::bindings::wasi::clocks::{monotonic_clock, wall_clock};

/// Returns the current time in whole seconds since the Unix epoch.
pub fn now() -> u64 {
    wall_clock::now().seconds
}

/// Blocks the calling instance for `millis` milliseconds.
pub fn sleep_millis(millis: u64) {
    monotonic_clock::subscribe_duration(millis * 1_000_000).block();
}
