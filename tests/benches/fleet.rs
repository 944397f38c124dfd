//! A test host (in-memory store) filled with leases issued through the engine against
//! LiteLLM doubles on 127.0.0.1, for the tidy and outstanding-lease benchmarks. Shared by
//! `tests/benches/engine.rs` and, through `#[path]`, `host/benches/host.rs`.

use std::time::{Duration, Instant};

use litellm_secrets_tests::expect::{EngineResult, role_with_models};
use litellm_secrets_tests::fixture::MASTER_KEY;
use litellm_secrets_tests::host::{ConfigRequest, RoleRequest, TestHost};
use litellm_secrets_tests::litellm_double::LiteLlmDouble;
use tokio::task::JoinSet;

/// Admin token of the benchmark hosts.
pub const ADMIN: &str = "bench-admin";

/// Models of every benchmark role.
pub const MODELS: &[&str] = &["gpt-4o-mini"];

/// Role whose leases (720h) outlive the run. They make up the outstanding total.
pub const LONG_ROLE: &str = "long";

/// Role whose leases (60s) expire at the next clock step, for tidy to revoke.
pub const SHORT_ROLE: &str = "short";

/// Role the creds samples use (1h).
pub const DEV_ROLE: &str = "dev";

/// Concurrent engine calls while filling a host with leases.
const FILL_WORKERS: usize = 4;

/// Leases issued against one double while filling. The double checks a new key's alias
/// against every key it holds, so a fresh double per chunk keeps that check short.
const FILL_CHUNK: usize = 10_000;

/// Clock step before each tidy run, in seconds: past the 60-second TTL of the short-lived
/// leases, the 180-second grace of pending entries (with the default 30 s LiteLLM timeout)
/// and the 300 seconds after which tidy retires a due bucket.
const SETTLE_SECONDS: u64 = 600;

/// A test host (in-memory store) that the tidy and outstanding-lease sections fill with
/// leases issued through the engine, each against a LiteLLM double on 127.0.0.1.
pub struct Fleet {
    /// The host, with the in-memory store all its instances share.
    pub host: TestHost,
    /// Leases of `LONG_ROLE` issued so far. None expires during the run.
    pub long_leases: usize,
    /// The double the config points at.
    double: LiteLlmDouble,
}

/// Totals of one tidy run until `complete`.
pub struct TidyRun {
    /// Time from the first tidy call to the end of the last.
    pub elapsed: Duration,
    /// Tidy calls made.
    pub calls: u32,
    /// Leases revoked, summed over the calls.
    pub revoked: u32,
    /// Revocations or cleanups that failed, summed over the calls.
    pub failed: u32,
}

impl Fleet {
    /// Creates a host with an empty store, configured for a fresh double, and its roles.
    pub async fn start() -> Self {
        let host = TestHost::new().with_admin_token(ADMIN);
        let double = start_double(&host).await;
        write_role(&host, LONG_ROLE, "720h", "720h").await;
        write_role(&host, SHORT_ROLE, "60s", "60s").await;
        write_role(&host, DEV_ROLE, "1h", "24h").await;
        Self {
            host,
            long_leases: 0,
            double,
        }
    }

    /// Points the config at a fresh double, so that the double's per-key costs stay small.
    /// The previous double stops, so the leases issued against it are not revoked later.
    pub async fn switch_double(&mut self) {
        self.double = start_double(&self.host).await;
    }

    /// Issues `LONG_ROLE` leases until there are `target`, a fresh double per `FILL_CHUNK`.
    pub async fn fill_long(&mut self, target: usize) {
        while self.long_leases < target {
            let chunk = FILL_CHUNK.min(target - self.long_leases);
            self.switch_double().await;
            issue_concurrently(&self.host, LONG_ROLE, chunk).await;
            self.long_leases += chunk;
        }
    }

    /// Moves the clock `SETTLE_SECONDS` forward and runs tidy until it reports `complete`.
    pub async fn settle_and_tidy(&self) -> TidyRun {
        self.host.clock.advance(SETTLE_SECONDS);
        let mut run = TidyRun {
            elapsed: Duration::ZERO,
            calls: 0,
            revoked: 0,
            failed: 0,
        };
        let started = Instant::now();
        loop {
            let report = self.host.try_tidy().await.value();
            run.calls += 1;
            run.revoked += report.revoked_leases;
            run.failed += report.failed;
            if report.complete {
                break;
            }
        }
        run.elapsed = started.elapsed();
        forget_store_log(&self.host);
        run
    }
}

async fn start_double(host: &TestHost) -> LiteLlmDouble {
    let double = LiteLlmDouble::start(MASTER_KEY, host.clock.clone())
        .await
        .expect("starting the LiteLLM double");
    let request = ConfigRequest {
        url: Some(double.url()),
        master_key: Some(MASTER_KEY.into()),
    };
    host.try_write_config(&request).await.value();
    double
}

/// Writes role `name` with `MODELS` and the given TTLs.
pub async fn write_role(host: &TestHost, name: &str, ttl: &str, max_ttl: &str) {
    let request = RoleRequest {
        ttl: Some(ttl.into()),
        max_ttl: Some(max_ttl.into()),
        ..role_with_models(MODELS)
    };
    host.try_write_role(name, &request).await.value();
}

/// Issues `count` credentials for `role` through the engine, `FILL_WORKERS` at a time.
pub async fn issue_concurrently(host: &TestHost, role: &'static str, count: usize) {
    let mut workers = JoinSet::new();
    for worker in 0..FILL_WORKERS {
        let share = count / FILL_WORKERS + usize::from(worker < count % FILL_WORKERS);
        let host = host.clone();
        workers.spawn(async move {
            for _ in 0..share {
                host.try_issue_credential(role, None).await.value();
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.expect("an issuing task panicked");
    }
    forget_store_log(host);
}

/// Empties the in-memory store's log of reads and writes, which tests inspect and which
/// would otherwise grow with every fill.
pub fn forget_store_log(host: &TestHost) {
    host.kv.take_reads();
    host.kv.take_writes();
}
