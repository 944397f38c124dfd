//! Benchmarks of the engine component under wasmtime, each engine call in a fresh instance as
//! Spin runs them, against the LiteLLM double on 127.0.0.1:
//!
//! 1. medians of engine operations and their ratio to the health check, so that runs on
//!    different machines compare by ratio;
//! 2. engine overhead per credential: creds p50 through the component minus the double's own
//!    `/key/generate` p50, sampled alternately;
//! 3. component size, and `instantiate_async` time from the shared `InstancePre`;
//! 4. tidy time as expired leases grow at a fixed total, and as the total grows at a fixed
//!    number of expired leases;
//! 5. creds p50 with no outstanding leases and with 100,000, all issued through the engine.
//!
//! Figures with a goal are printed with the goal and whether this run met it; nothing here
//! asserts a time. `host/benches/host.rs` measures the host binary and the real LiteLLM.
//!
//! Run: `cargo build --profile component --target wasm32-wasip2 && cargo bench --workspace --bench engine`.

#[allow(dead_code)]
mod fleet;
#[allow(dead_code)]
mod measure;

use std::time::{Duration, Instant};

use litellm_secrets_tests::fixture::{Fixture, MASTER_KEY};
use litellm_secrets_tests::host::{TestHost, component_path};
use litellm_secrets_tests::http_client;
use litellm_secrets_tests::real_litellm::unique;
use litellm_secrets_tests::secret_scan;
use serde_json::json;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

use fleet::{
    ADMIN, DEV_ROLE, Fleet, MODELS, SHORT_ROLE, TidyRun, forget_store_log, issue_concurrently,
    write_role,
};
use measure::{Goals, Samples, generate_body, lease_like_id, ms, print_machine, us};

const SAMPLES: usize = 200;

/// Untimed pairs before each comparison, which warm up connections and caches.
const WARM_UP_PAIRS: usize = 20;

/// Alternating pairs of creds-through-the-component and direct `/key/generate` samples.
const OVERHEAD_PAIRS: usize = 500;

/// Timed instantiations, after 100 untimed ones.
const INSTANTIATIONS: usize = 2000;

/// Largest component the goal allows, in bytes (300 KiB).
const SIZE_GOAL_BYTES: u64 = 300 * 1024;

/// Outstanding leases for the creds comparison.
const OUTSTANDING: usize = 100_000;

/// Alternating pairs of creds samples on an empty host and on a full one.
const OUTSTANDING_PAIRS: usize = 300;

/// Timed tidy runs per point of the tidy series. The bench reports their median.
const TIDY_REPEATS: usize = 3;

/// Largest tolerated growth of a tidy figure for "linear in expired" and "flat in total".
const TIDY_GROWTH_GOAL: f64 = 1.25;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut goals = Goals::default();
    print_machine();

    println!("\n# Engine operations, median of {SAMPLES}\n");
    operation_medians().await;

    println!("\n# Engine overhead per creds against the LiteLLM double\n");
    engine_overhead(&mut goals).await;

    println!("\n# Component size and instantiation\n");
    component_size(&mut goals);
    instantiation(&mut goals).await;

    println!("\n# Tidy time as expired and total leases grow\n");
    let started = Instant::now();
    let mut fleet = Fleet::start().await;
    tidy_scaling(&mut goals, &mut fleet).await;
    println!(
        "(tidy section took {:.0} s)",
        started.elapsed().as_secs_f64()
    );

    println!("\n# creds p50 with 0 and with {OUTSTANDING} outstanding leases\n");
    let started = Instant::now();
    outstanding_leases(&mut goals, &mut fleet).await;
    println!(
        "(outstanding-lease section took {:.0} s)",
        started.elapsed().as_secs_f64()
    );

    goals.print_summary("Goals (tests/benches/engine.rs)");
    print_machine();
}

// ---------------------------------------------------------------------------------------------
// Operation medians
// ---------------------------------------------------------------------------------------------

struct Measurement {
    name: &'static str,
    median: Duration,
}

async fn operation_medians() {
    let fixture = Fixture::start_with(TestHost::new().with_admin_token(ADMIN)).await;
    let host = fixture.host.clone();
    let role = json!({"models": ["gpt-4o-mini"], "ttl": "1h", "max_ttl": "24h"});
    host.http("POST", "/v1/litellm/roles/dev", Some(ADMIN), Some(&role))
        .await;

    let mut results = Vec::new();
    results.push(
        measure("GET /v1/sys/health", || async {
            host.http("GET", "/v1/sys/health", None, None).await;
        })
        .await,
    );
    results.push(
        measure("GET role", || async {
            host.http("GET", "/v1/litellm/roles/dev", Some(ADMIN), None)
                .await;
        })
        .await,
    );
    results.push(
        measure("LIST roles, no leases", || async {
            host.http("LIST", "/v1/litellm/roles", Some(ADMIN), None)
                .await;
        })
        .await,
    );

    let mut lease_ids = Vec::new();
    let issue = measure_collect("GET creds (issue)", &mut lease_ids, || async {
        let reply = host
            .http("GET", "/v1/litellm/creds/dev", Some(ADMIN), None)
            .await;
        reply.json()["lease_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    })
    .await;
    results.push(issue);
    // `measure` runs each operation once more to warm up, so revoke needs one extra lease.
    let extra = host
        .http("GET", "/v1/litellm/creds/dev", Some(ADMIN), None)
        .await;
    lease_ids.push(
        extra.json()["lease_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );

    let renew_ids = lease_ids.clone();
    let mut next = 0;
    results.push(
        measure("PUT renew", || {
            let lease_id = renew_ids[next % renew_ids.len()].clone();
            next += 1;
            let host = host.clone();
            async move {
                host.http(
                    "PUT",
                    "/v1/sys/leases/renew",
                    Some(ADMIN),
                    Some(&json!({"lease_id": lease_id})),
                )
                .await;
            }
        })
        .await,
    );

    for _ in 0..4800 {
        host.try_issue_credential("dev", None).await.ok();
    }
    results.push(
        measure("LIST roles, 5000 leases", || async {
            host.http("LIST", "/v1/litellm/roles", Some(ADMIN), None)
                .await;
        })
        .await,
    );

    let mut revoke_index = 0;
    results.push(
        measure("PUT revoke", || {
            let lease_id = lease_ids[revoke_index].clone();
            revoke_index += 1;
            let host = host.clone();
            async move {
                host.http(
                    "PUT",
                    "/v1/sys/leases/revoke",
                    Some(ADMIN),
                    Some(&json!({"lease_id": lease_id})),
                )
                .await;
            }
        })
        .await,
    );

    host.clock.advance(3 * 3600);
    let started = Instant::now();
    let mut revoked = 0;
    loop {
        let report = host.try_tidy().await.unwrap().unwrap();
        revoked += report.revoked_leases;
        if report.complete {
            break;
        }
    }
    let tidy_per_lease = started.elapsed() / revoked.max(1);
    results.push(Measurement {
        name: "tidy, per expired lease",
        median: tidy_per_lease,
    });

    print_table(&results, revoked);
}

async fn measure<F, Fut>(name: &'static str, mut operation: F) -> Measurement
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    operation().await;
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        operation().await;
        samples.push(started.elapsed());
    }
    samples.sort();
    Measurement {
        name,
        median: samples[SAMPLES / 2],
    }
}

async fn measure_collect<F, Fut>(
    name: &'static str,
    out: &mut Vec<String>,
    mut operation: F,
) -> Measurement
where
    F: FnMut() -> Fut,
    Fut: Future<Output = String>,
{
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        out.push(operation().await);
        samples.push(started.elapsed());
    }
    samples.sort();
    Measurement {
        name,
        median: samples[SAMPLES / 2],
    }
}

fn print_table(results: &[Measurement], revoked: u32) {
    let baseline = results[0].median.as_secs_f64();
    println!("| operation | median | ratio to health |");
    println!("| --- | --- | --- |");
    for result in results {
        let ratio = result.median.as_secs_f64() / baseline;
        println!(
            "| {} | {:.3} ms | {ratio:.1} |",
            result.name,
            result.median.as_secs_f64() * 1000.0
        );
    }
    println!("\n{SAMPLES} samples per operation; tidy revoked {revoked} leases.");
}

// ---------------------------------------------------------------------------------------------
// Engine overhead
// ---------------------------------------------------------------------------------------------

/// Samples GET creds through the component's HTTP handler and POST `/key/generate` straight
/// to the double, alternately and in alternating order, and reports the difference of their medians. Both open a new
/// TCP connection to the double per request. The creds figure includes instantiation, the
/// API's routing and auth, the in-memory store's reads and writes, and the exchange with
/// the double. It excludes any HTTP server in front of the component.
async fn engine_overhead(goals: &mut Goals) {
    let fixture = Fixture::start_with(TestHost::new().with_admin_token(ADMIN)).await;
    let host = fixture.host.clone();
    write_role(&host, DEV_ROLE, "1h", "24h").await;
    let generate_url = format!("{}/key/generate", fixture.litellm.url());
    let run = unique(8);

    let mut creds = Samples::with_capacity(OVERHEAD_PAIRS);
    let mut direct = Samples::with_capacity(OVERHEAD_PAIRS);
    for pair in 0..WARM_UP_PAIRS + OVERHEAD_PAIRS {
        let id = lease_like_id(&run, pair);
        let body = generate_body(MODELS, &format!("direct-dev-{id}"), DEV_ROLE, &id, 3600);
        let (creds_time, direct_time) = if pair % 2 == 0 {
            let creds_time = timed_creds(&host).await;
            (creds_time, timed_generate(&generate_url, &body).await)
        } else {
            let direct_time = timed_generate(&generate_url, &body).await;
            (timed_creds(&host).await, direct_time)
        };
        if pair >= WARM_UP_PAIRS {
            creds.push(creds_time);
            direct.push(direct_time);
        }
    }

    let sample = host
        .http("GET", "/v1/litellm/creds/dev", Some(ADMIN), None)
        .await;
    let scan = scan_cost(&sample.body);

    let overhead = creds.p50().saturating_sub(direct.p50());
    println!(
        "creds through the component: p50 {}, p99 {}",
        ms(creds.p50()),
        ms(creds.p99())
    );
    println!(
        "/key/generate on the double, direct: p50 {}, p99 {}",
        ms(direct.p50()),
        ms(direct.p99())
    );
    println!(
        "{} alternating pairs after {WARM_UP_PAIRS} warm-up pairs",
        creds.len()
    );
    println!(
        "the creds samples include the test harness's secret scan of each response, about {} \
         (timed separately); the direct samples have none",
        us(scan)
    );
    goals.add(
        "engine overhead per creds (creds p50 − double /key/generate p50)",
        ms(overhead),
        "≤ 0.3 ms",
        overhead <= Duration::from_micros(300),
    );
}

// ---------------------------------------------------------------------------------------------
// Component size and instantiation
// ---------------------------------------------------------------------------------------------

fn component_size(goals: &mut Goals) {
    let path = component_path();
    let bytes = std::fs::metadata(&path)
        .unwrap_or_else(|error| panic!("reading the size of {}: {error}", path.display()))
        .len();
    println!("{}", path.display());
    goals.add(
        "component size (component profile: opt-level z, fat LTO, stripped)",
        format!("{bytes} bytes ({:.1} KiB)", bytes as f64 / 1024.0),
        "≤ 300 KiB",
        bytes <= SIZE_GOAL_BYTES,
    );
}

/// Times `instantiate_async` from an `InstancePre` alone: with the test harness's engine
/// (wasmtime's default on-demand allocator), and with an engine that uses the pooling
/// allocator as the host binary does, with the host's default pool sizes.
async fn instantiation(goals: &mut Goals) {
    let host = TestHost::new();
    let mut on_demand = Samples::with_capacity(INSTANTIATIONS);
    for sample in 0..INSTANTIATIONS + 100 {
        let elapsed = host
            .time_instantiation()
            .await
            .expect("instantiating the component");
        if sample >= 100 {
            on_demand.push(elapsed);
        }
    }
    println!(
        "on-demand allocator: p50 {}, p99 {} over {INSTANTIATIONS}",
        us(on_demand.p50()),
        us(on_demand.p99())
    );
    goals.add(
        "instantiate_async from InstancePre, on-demand allocator (test harness), p50",
        us(on_demand.p50()),
        "≤ 50 µs",
        on_demand.p50() <= Duration::from_micros(50),
    );

    match pooled_instantiations().await {
        Ok(pooled) => {
            println!(
                "pooling allocator: p50 {}, p99 {} over {INSTANTIATIONS}",
                us(pooled.p50()),
                us(pooled.p99())
            );
            goals.add(
                "instantiate_async from InstancePre, pooling allocator (host settings), p50",
                us(pooled.p50()),
                "≤ 50 µs",
                pooled.p50() <= Duration::from_micros(50),
            );
        }
        Err(error) => println!("pooling allocator: not measured: {error:#}"),
    }
}

/// Instantiates the component with the pooling allocator configured as
/// `host/src/runtime.rs` configures it for the default `--max-concurrency` of 128. Imports
/// are stubbed with traps: instantiation calls none of them, and this engine has no WASI.
async fn pooled_instantiations() -> wasmtime::Result<Samples> {
    const INSTANCES: u32 = 128;
    let mut pooling = PoolingAllocationConfig::default();
    pooling
        .total_component_instances(INSTANCES)
        .total_core_instances(INSTANCES * 8)
        .total_memories(INSTANCES * 2)
        .total_tables(INSTANCES * 8)
        .max_memory_size(256 * 1024 * 1024);
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    let engine = Engine::new(&config)?;
    let component = Component::from_file(&engine, component_path())?;
    let mut linker = Linker::<()>::new(&engine);
    linker.define_unknown_imports_as_traps(&component)?;
    let pre: InstancePre<()> = linker.instantiate_pre(&component)?;

    let mut samples = Samples::with_capacity(INSTANTIATIONS);
    for sample in 0..INSTANTIATIONS + 100 {
        let mut store = Store::new(&engine, ());
        let started = Instant::now();
        pre.instantiate_async(&mut store).await?;
        let elapsed = started.elapsed();
        if sample >= 100 {
            samples.push(elapsed);
        }
    }
    Ok(samples)
}

// ---------------------------------------------------------------------------------------------
// Tidy scaling
// ---------------------------------------------------------------------------------------------

/// The median of `TIDY_REPEATS` timed tidy runs at one point of a series.
struct TidyRound {
    expired: usize,
    total: usize,
    /// Time of the median run.
    elapsed: Duration,
    calls: u32,
}

impl TidyRound {
    fn per_expired(&self) -> Duration {
        self.elapsed / self.expired.max(1) as u32
    }
}

/// Fills the fleet to `long_target` long-lived leases and lets tidy clear the due entries
/// that the fill's pending records left. Then, `TIDY_REPEATS` times: issues `expired`
/// short-lived leases against a fresh double, moves the clock past their expiry and times
/// tidy until complete. A timed run visits each expired lease (one `/key/delete` to the
/// double each) and the due entry of its pending record. It does not visit the long-lived
/// leases, which are due in 720 hours.
async fn tidy_round(fleet: &mut Fleet, expired: usize, long_target: usize) -> TidyRound {
    fleet.fill_long(long_target).await;
    fleet.settle_and_tidy().await;
    let mut runs: Vec<TidyRun> = Vec::with_capacity(TIDY_REPEATS);
    for _ in 0..TIDY_REPEATS {
        fleet.switch_double().await;
        issue_concurrently(&fleet.host, SHORT_ROLE, expired).await;
        let run = fleet.settle_and_tidy().await;
        if run.revoked as usize != expired || run.failed > 0 {
            println!(
                "  note: tidy revoked {} of {expired} expired leases, {} failed",
                run.revoked, run.failed
            );
        }
        runs.push(run);
    }
    runs.sort_by_key(|run| run.elapsed);
    let times: Vec<String> = runs.iter().map(|run| ms(run.elapsed)).collect();
    let median = &runs[runs.len() / 2];
    let round = TidyRound {
        expired,
        total: fleet.long_leases + expired,
        elapsed: median.elapsed,
        calls: median.calls,
    };
    println!(
        "  expired {:>5}, total {:>6}: median tidy {} in {} calls, {} per expired lease (runs: {})",
        round.expired,
        round.total,
        ms(round.elapsed),
        round.calls,
        ms(round.per_expired()),
        times.join(", ")
    );
    round
}

async fn tidy_scaling(goals: &mut Goals, fleet: &mut Fleet) {
    // Totals only grow within one host, so the rounds run in this order: the fixed-expired
    // series' smallest total first, then the fixed-total series by falling expired count
    // (rising long-lived count), then the larger totals.
    let total_1k = tidy_round(fleet, 1000, 0).await;
    let expired_4000 = tidy_round(fleet, 4000, 6000).await;
    let expired_2000 = tidy_round(fleet, 2000, 8000).await;
    let expired_1000 = tidy_round(fleet, 1000, 9000).await;
    let expired_500 = tidy_round(fleet, 500, 9500).await;
    let total_50k = tidy_round(fleet, 1000, 49_000).await;
    let total_100k = tidy_round(fleet, 1000, 99_000).await;

    let by_expired = [&expired_500, &expired_1000, &expired_2000, &expired_4000];
    println!("\nFixed total of 10,000 leases:\n");
    println!("| expired | tidy time | per expired lease | per-lease ratio to 500 |");
    println!("| --- | --- | --- | --- |");
    let base = expired_500.per_expired().as_secs_f64();
    for round in by_expired {
        println!(
            "| {} | {} | {} | {:.2} |",
            round.expired,
            ms(round.elapsed),
            ms(round.per_expired()),
            round.per_expired().as_secs_f64() / base
        );
    }

    let by_total = [&total_1k, &expired_1000, &total_50k, &total_100k];
    println!("\nFixed 1,000 expired leases:\n");
    println!("| total leases | tidy time | per expired lease | time ratio to total 1,000 |");
    println!("| --- | --- | --- | --- |");
    let base_total = total_1k.elapsed.as_secs_f64();
    for round in by_total {
        println!(
            "| {} | {} | {} | {:.2} |",
            round.total,
            ms(round.elapsed),
            ms(round.per_expired()),
            round.elapsed.as_secs_f64() / base_total
        );
    }
    println!();

    let linear = expired_4000.per_expired().as_secs_f64() / base;
    goals.add(
        "tidy linear in expired: per-lease time at 4,000 ÷ at 500 expired",
        format!("{linear:.2}"),
        &format!("≤ {TIDY_GROWTH_GOAL}"),
        linear <= TIDY_GROWTH_GOAL,
    );
    let flat = total_100k.elapsed.as_secs_f64() / base_total;
    goals.add(
        &format!(
            "tidy flat in total: time at {} ÷ at {} leases (1,000 expired)",
            total_100k.total, total_1k.total
        ),
        format!("{flat:.2}"),
        &format!("≤ {TIDY_GROWTH_GOAL}"),
        flat <= TIDY_GROWTH_GOAL,
    );
}

// ---------------------------------------------------------------------------------------------
// Outstanding leases
// ---------------------------------------------------------------------------------------------

/// Fills the fleet to `OUTSTANDING` long-lived leases and samples GET creds on a fresh host
/// with no leases and on the full one, each against a fresh double, alternately and in
/// alternating order.
async fn outstanding_leases(goals: &mut Goals, fleet: &mut Fleet) {
    fleet.fill_long(OUTSTANDING).await;
    fleet.settle_and_tidy().await;
    fleet.switch_double().await;
    let empty = Fleet::start().await;
    let stored = fleet.host.kv.keys_with_prefix("lease/").len();
    println!("full host: {stored} leases stored, all issued through the engine");

    let mut on_empty = Samples::with_capacity(OUTSTANDING_PAIRS);
    let mut on_full = Samples::with_capacity(OUTSTANDING_PAIRS);
    for pair in 0..WARM_UP_PAIRS + OUTSTANDING_PAIRS {
        let (empty_time, full_time) = if pair % 2 == 0 {
            let empty_time = timed_creds(&empty.host).await;
            (empty_time, timed_creds(&fleet.host).await)
        } else {
            let full_time = timed_creds(&fleet.host).await;
            (timed_creds(&empty.host).await, full_time)
        };
        if pair >= WARM_UP_PAIRS {
            on_empty.push(empty_time);
            on_full.push(full_time);
        }
    }
    forget_store_log(&empty.host);
    forget_store_log(&fleet.host);

    measure::report_outstanding_leases(goals, "in-memory store", stored, &on_empty, &on_full);
}

async fn timed_creds(host: &TestHost) -> Duration {
    let started = Instant::now();
    let reply = host
        .http("GET", "/v1/litellm/creds/dev", Some(ADMIN), None)
        .await;
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 200, "GET creds: {}", reply.text());
    elapsed
}

/// Estimates the time the test harness spends scanning one creds response for secrets, as
/// it does for every response: parsing the body and checking it for recorded keys.
fn scan_cost(body: &[u8]) -> Duration {
    const ROUNDS: u32 = 1000;
    let text = String::from_utf8_lossy(body);
    let started = Instant::now();
    for _ in 0..ROUNDS {
        let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let own_key = value
            .pointer("/data/key")
            .and_then(serde_json::Value::as_str);
        secret_scan::check("a benchmark sample", &text, own_key);
    }
    started.elapsed() / ROUNDS
}

async fn timed_generate(url: &str, body: &serde_json::Value) -> Duration {
    let started = Instant::now();
    let reply = http_client::send("POST", url, MASTER_KEY, Some(body))
        .await
        .expect("POST /key/generate to the double");
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 200, "/key/generate: {}", reply.text());
    elapsed
}
