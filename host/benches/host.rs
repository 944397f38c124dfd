//! Benchmarks of the host binary `litellm-secrets-host`, started as a child process on
//! 127.0.0.1 by the process tests' `HostProcess` (cargo builds a package's binaries for its
//! benchmarks too, and sets `CARGO_BIN_EXE_litellm-secrets-host` for them):
//!
//! 1. creds through the host against the real LiteLLM proxy (one host on a redb file, one
//!    on Redis), and `/key/generate` sent straight to that proxy with the body the engine
//!    sends, sampled in rotating order. Needs `LITELLM_URL` and `LITELLM_MASTER_KEY`, and is
//!    skipped without them. Every key it creates has an alias that starts with a prefix
//!    unique to the run, and is deleted at the end.
//! 2. creds p50 with no outstanding leases and with 100,000, with the host's redb file and
//!    with Redis (skipped when `redis-server` cannot be started). The 100,000 leases are
//!    issued through the engine in a test host with an in-memory store. The bench copies
//!    them into the redb file and into Redis in the host's layout, because issuing them
//!    through the host would take longer than the run may.
//!
//! Figures with a goal are printed with the goal and whether this run met it; nothing here
//! asserts a time.
//!
//! Run: `cargo build --profile component --target wasm32-wasip2 && LITELLM_URL=http://127.0.0.1:4000
//! LITELLM_MASTER_KEY=sk-... cargo bench --workspace --bench host`.

#[path = "../tests/process/support.rs"]
#[allow(dead_code)]
mod support;

#[path = "../../tests/benches/fleet.rs"]
#[allow(dead_code)]
mod fleet;

#[path = "../../tests/benches/measure.rs"]
#[allow(dead_code)]
mod measure;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use litellm_secrets_tests::clock::Clock;
use litellm_secrets_tests::fixture::MASTER_KEY;
use litellm_secrets_tests::http_client;
use litellm_secrets_tests::litellm_double::LiteLlmDouble;
use litellm_secrets_tests::real_litellm::{RealLiteLlm, real_litellm, unique};
use redb::{Database, TableDefinition};
use serde_json::json;

use fleet::{Fleet, MODELS};
use measure::{Goals, Samples, generate_body, lease_like_id, ms, print_machine};
use support::{ADMIN, HostProcess, TempDir, file_args};

/// Rounds of samples against the real LiteLLM (one request per target each), after
/// `WARM_UP_ROUNDS`.
const REAL_ROUNDS: usize = 200;

/// Untimed rounds before each comparison.
const WARM_UP_ROUNDS: usize = 10;

/// Outstanding leases for the creds comparison.
const OUTSTANDING: usize = 100_000;

/// Alternating pairs of creds samples on an empty host and on a full one.
const OUTSTANDING_PAIRS: usize = 300;

/// The host's redb table for the component's `default` bucket (`host/src/kv/file.rs`).
const REDB_BUCKET: TableDefinition<&str, &[u8]> = TableDefinition::new("bucket/default");

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut goals = Goals::default();
    print_machine();

    let redis = RedisServer::start();
    if redis.is_none() {
        println!("redis-server could not be started; the Redis figures are skipped");
    }

    println!("\n# creds through the host ÷ /key/generate direct, real LiteLLM\n");
    real_litellm_ratio(&mut goals, redis.as_ref()).await;

    println!("\n# creds p50 through the host with 0 and with {OUTSTANDING} outstanding leases\n");
    let started = Instant::now();
    outstanding_on_host(&mut goals, redis.as_ref()).await;
    println!(
        "(outstanding-lease section took {:.0} s)",
        started.elapsed().as_secs_f64()
    );

    goals.print_summary("Goals (host/benches/host.rs)");
    print_machine();
}

/// Starts the host binary with `args`. The start blocks, so it runs in `block_in_place`.
fn start_host(args: &[&str]) -> HostProcess {
    tokio::task::block_in_place(|| HostProcess::start(args)).expect("starting the host binary")
}

// ---------------------------------------------------------------------------------------------
// Real LiteLLM
// ---------------------------------------------------------------------------------------------

/// Samples GET creds through the host and POST `/key/generate` straight to the real
/// LiteLLM, in rotating order: through a host with its default redb data file, through a
/// host on Redis when `redis` is given, and direct. Each request opens a new TCP
/// connection, as the host's own request to LiteLLM does.
async fn real_litellm_ratio(goals: &mut Goals, redis: Option<&RedisServer>) {
    let Some(real) = real_litellm("host benchmark against the real LiteLLM") else {
        println!(
            "skipped: set LITELLM_URL and LITELLM_MASTER_KEY to measure against a real LiteLLM"
        );
        return;
    };
    let run = unique(8);
    let role = format!("bench{run}");
    let prefix = format!("lsb{run}");
    println!(
        "LiteLLM at {}; key aliases of this run start with {prefix}-",
        real.url
    );

    let dir = TempDir::new("bench-real");
    let data = dir.data_file();
    let mut hosts = vec![("host, redb file", start_host(&file_args(&data)))];
    if let Some(redis) = redis {
        let url = redis.url();
        let args = redis_args(&url, "bench-real");
        hosts.push(("host, Redis", start_host(&args)));
    }
    let role_body = json!({
        "models": MODELS,
        "ttl": "1h",
        "max_ttl": "24h",
        "key_alias_prefix": prefix,
    });
    for (_, host) in &hosts {
        host.write_config(&real.url, &real.master_key).await;
        let reply = host
            .admin(
                "POST",
                &format!("/v1/litellm/roles/{role}"),
                Some(&role_body),
            )
            .await;
        assert_eq!(reply.status, 200, "writing the role: {}", reply.text());
    }

    let creds_path = format!("/v1/litellm/creds/{role}");
    let generate_url = format!("{}/key/generate", real.url);
    // One sample set per host, then the direct one.
    let targets = hosts.len() + 1;
    let mut samples = vec![Samples::with_capacity(REAL_ROUNDS); targets];
    for round in 0..WARM_UP_ROUNDS + REAL_ROUNDS {
        for step in 0..targets {
            let target = (round + step) % targets;
            let elapsed = match hosts.get(target) {
                Some((_, host)) => timed_host_creds(host, &creds_path).await,
                None => {
                    let id = lease_like_id(&run, round);
                    let alias = format!("{prefix}-{role}-{id}");
                    let spec = generate_body(MODELS, &alias, &role, &id, 3600);
                    timed_generate(&generate_url, &real, &spec).await
                }
            };
            if round >= WARM_UP_ROUNDS {
                samples[target].push(elapsed);
            }
        }
    }

    for (_, host) in &hosts {
        revoke_role_leases(host, &role).await;
    }
    delete_left_keys(&real, &prefix).await;

    let direct = &samples[hosts.len()];
    println!(
        "/key/generate direct: p50 {}, p99 {}",
        ms(direct.p50()),
        ms(direct.p99())
    );
    for ((label, _), through_host) in hosts.iter().zip(&samples) {
        println!(
            "creds through the {label}: p50 {}, p99 {}",
            ms(through_host.p50()),
            ms(through_host.p99())
        );
    }
    println!(
        "{} rounds in rotating order after {WARM_UP_ROUNDS} warm-up rounds",
        direct.len()
    );
    for ((label, _), through_host) in hosts.iter().zip(&samples) {
        for (name, percentile) in [("p50", 50.0), ("p99", 99.0)] {
            let host_time = through_host.percentile(percentile);
            let direct_time = direct.percentile(percentile);
            let ratio = host_time.as_secs_f64() / direct_time.as_secs_f64();
            goals.add(
                &format!("creds through the {label} ÷ direct /key/generate, real LiteLLM, {name}"),
                format!("{ratio:.3} ({} vs {})", ms(host_time), ms(direct_time)),
                "≤ 1.05",
                ratio <= 1.05,
            );
        }
    }
}

/// Returns the host arguments for Redis at `url` with key prefix `prefix`.
fn redis_args<'a>(url: &'a str, prefix: &'a str) -> Vec<&'a str> {
    vec![
        "--redis-url",
        url,
        "--redis-prefix",
        prefix,
        "--admin-token",
        ADMIN,
        "--tidy-interval",
        "0",
    ]
}

async fn timed_host_creds(host: &HostProcess, path: &str) -> Duration {
    let started = Instant::now();
    let reply = host.admin("GET", path, None).await;
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 200, "GET {path}: {}", reply.text());
    elapsed
}

async fn timed_generate(url: &str, real: &RealLiteLlm, spec: &serde_json::Value) -> Duration {
    let started = Instant::now();
    let reply = http_client::send("POST", url, &real.master_key, Some(spec))
        .await
        .expect("POST /key/generate to the real LiteLLM");
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 200, "/key/generate: {}", reply.text());
    elapsed
}

/// Revokes the leases of `role` through the host, which deletes their keys.
async fn revoke_role_leases(host: &HostProcess, role: &str) {
    let path = format!("/v1/sys/leases/revoke-prefix/litellm/creds/{role}/");
    let reply = host.admin("PUT", &path, None).await;
    if reply.status != 204 {
        println!(
            "cleanup: revoke-prefix returned {}: {}",
            reply.status,
            reply.text()
        );
    }
}

/// Deletes the directly generated keys, and any other key left with alias prefix `prefix`.
async fn delete_left_keys(real: &RealLiteLlm, prefix: &str) {
    let left: Vec<String> = real.live_aliases(prefix).await.into_iter().collect();
    let delete_url = format!("{}/key/delete", real.url);
    for batch in left.chunks(50) {
        let body = json!({ "key_aliases": batch });
        let reply = http_client::send("POST", &delete_url, &real.master_key, Some(&body))
            .await
            .expect("POST /key/delete to the real LiteLLM");
        if reply.status != 200 {
            println!(
                "cleanup: /key/delete returned {}: {}",
                reply.status,
                reply.text()
            );
        }
    }
    let remaining = real.live_aliases(prefix).await.len();
    println!(
        "cleanup: leases revoked through the hosts, {} keys deleted directly, {remaining} keys \
         with alias prefix {prefix}- remain",
        left.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Outstanding leases with the host's stores
// ---------------------------------------------------------------------------------------------

async fn outstanding_on_host(goals: &mut Goals, redis: Option<&RedisServer>) {
    let started = Instant::now();
    let mut fleet = Fleet::start().await;
    fleet.fill_long(OUTSTANDING).await;
    fleet.settle_and_tidy().await;
    let entries = fleet.host.kv.snapshot();
    drop(fleet);
    let leases = entries
        .keys()
        .filter(|key| key.starts_with("lease/"))
        .count();
    println!(
        "{leases} leases issued through the engine in a test host in {:.0} s; {} stored \
         entries in all (leases, due index, roles, config) are copied into each store",
        started.elapsed().as_secs_f64(),
        entries.len()
    );

    let empty_dir = TempDir::new("bench-redb-empty");
    let full_dir = TempDir::new("bench-redb-full");
    let empty_data = empty_dir.data_file();
    let full_data = full_dir.data_file();
    write_redb(&full_data, &entries).expect("writing the leases into a redb file");
    compare_hosts(
        goals,
        "redb file",
        leases,
        &file_args(&empty_data),
        &file_args(&full_data),
    )
    .await;

    let Some(redis) = redis else {
        println!("Redis: skipped, redis-server could not be started");
        return;
    };
    let url = redis.url();
    load_redis(&url, "bench-full", &entries)
        .await
        .expect("loading the leases into Redis");
    compare_hosts(
        goals,
        "Redis",
        leases,
        &redis_args(&url, "bench-empty"),
        &redis_args(&url, "bench-full"),
    )
    .await;
}

/// Starts a host with `empty_args` and one with `full_args`, each configured for its own
/// LiteLLM double, and samples GET creds on them alternately and in alternating order.
async fn compare_hosts(
    goals: &mut Goals,
    store: &str,
    leases: usize,
    empty_args: &[&str],
    full_args: &[&str],
) {
    let empty = start_host(empty_args);
    let full = start_host(full_args);
    let empty_double = LiteLlmDouble::start(MASTER_KEY, Clock::new())
        .await
        .expect("starting a LiteLLM double");
    let full_double = LiteLlmDouble::start(MASTER_KEY, Clock::new())
        .await
        .expect("starting a LiteLLM double");
    empty.write_config(&empty_double.url(), MASTER_KEY).await;
    full.write_config(&full_double.url(), MASTER_KEY).await;
    let role = json!({"models": MODELS, "ttl": "1h", "max_ttl": "24h"});
    for host in [&empty, &full] {
        let reply = host
            .admin("POST", "/v1/litellm/roles/dev", Some(&role))
            .await;
        assert_eq!(reply.status, 200, "writing the role: {}", reply.text());
    }

    let mut on_empty = Samples::with_capacity(OUTSTANDING_PAIRS);
    let mut on_full = Samples::with_capacity(OUTSTANDING_PAIRS);
    let path = "/v1/litellm/creds/dev";
    for pair in 0..WARM_UP_ROUNDS + OUTSTANDING_PAIRS {
        let (empty_time, full_time) = if pair % 2 == 0 {
            let empty_time = timed_host_creds(&empty, path).await;
            (empty_time, timed_host_creds(&full, path).await)
        } else {
            let full_time = timed_host_creds(&full, path).await;
            (timed_host_creds(&empty, path).await, full_time)
        };
        if pair >= WARM_UP_ROUNDS {
            on_empty.push(empty_time);
            on_full.push(full_time);
        }
    }
    let label = format!("through the host, {store}");
    measure::report_outstanding_leases(goals, &label, leases, &on_empty, &on_full);
}

/// Writes `entries` into a new redb file at `path` in the host's layout, in one
/// transaction. The file is created with mode 0600 first, as the host creates it.
fn write_redb(path: &str, entries: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let database = Database::create(path)?;
    let transaction = database.begin_write()?;
    {
        let mut table = transaction.open_table(REDB_BUCKET)?;
        for (key, value) in entries {
            table.insert(key.as_str(), value.as_slice())?;
        }
    }
    transaction.commit()?;
    Ok(())
}

/// Writes `entries` into Redis in the host's layout (`host/src/kv/redis.rs`): each value at
/// `<prefix>:value:default:<key>`, and each key in the sorted set `<prefix>:keys:default`.
async fn load_redis(
    url: &str,
    prefix: &str,
    entries: &BTreeMap<String, Vec<u8>>,
) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let index = format!("{prefix}:keys:default");
    let all: Vec<(&String, &Vec<u8>)> = entries.iter().collect();
    for chunk in all.chunks(5000) {
        let mut pipeline = redis::pipe();
        for (key, value) in chunk {
            pipeline
                .set(format!("{prefix}:value:default:{key}"), value.as_slice())
                .ignore();
            pipeline.zadd(&index, key.as_str(), 0).ignore();
        }
        pipeline.query_async::<()>(&mut connection).await?;
    }
    Ok(())
}

/// A `redis-server` child on 127.0.0.1 without persistence, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
