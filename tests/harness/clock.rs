//! A wall clock that tests can move forward, shared by the component and the LiteLLM double.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime_wasi::HostWallClock;

/// Real time plus an offset that only grows. Clones share the offset.
#[derive(Clone, Default)]
pub struct Clock {
    offset_seconds: Arc<AtomicU64>,
}

impl Clock {
    /// Creates a clock that starts at real time.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock `seconds` forward.
    pub fn advance(&self, seconds: u64) {
        self.offset_seconds.fetch_add(seconds, Ordering::SeqCst);
    }

    /// Returns the time since the Unix epoch.
    pub fn now(&self) -> Duration {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the system clock is after 1970");
        real + Duration::from_secs(self.offset_seconds.load(Ordering::SeqCst))
    }

    /// Returns the time in whole seconds since the Unix epoch.
    pub fn now_seconds(&self) -> u64 {
        self.now().as_secs()
    }
}

impl HostWallClock for Clock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        Clock::now(self)
    }
}
