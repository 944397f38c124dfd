//! Latency of engine operations under wasmtime, each through a fresh instance as Spin runs
//! them, against the LiteLLM double on 127.0.0.1. Prints medians and their ratio to the
//! health check (instantiation plus the smallest HTTP response), so that runs on different
//! machines compare by ratio.
//!
//! Run: `cargo build --release --target wasm32-wasip2 && cargo bench -p litellm-secrets-tests`.

use std::time::{Duration, Instant};

use litellm_secrets_tests::fixture::Fixture;
use litellm_secrets_tests::host::TestHost;
use serde_json::json;

const ADMIN: &str = "bench-admin";
const SAMPLES: usize = 200;

struct Measurement {
    name: &'static str,
    median: Duration,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
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
