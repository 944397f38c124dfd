//! Three host processes on one Redis server and one LiteLLM double. Clients issue, renew and
//! revoke leases on all three at once while every host's tidy timer revokes the leases that
//! expire. At the end no lease and no key may be left, only revocations on request may
//! have repeated a key's delete, and no request may have failed with a 5xx. The test runs
//! when `redis-server` is on the PATH, and fails instead of skipping with `REDIS_REQUIRED=1`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use litellm_secrets_tests::clock::Clock;
use litellm_secrets_tests::fixture::MASTER_KEY;
use litellm_secrets_tests::http_client::{self, Reply};
use litellm_secrets_tests::litellm_double::LiteLlmDouble;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

use crate::redis::RedisServer;
use crate::support::{ADMIN, HostProcess, events};

const HOSTS: usize = 3;
/// Client tasks issuing credentials at once, spread over the hosts round-robin.
const CLIENTS: usize = 12;
/// Time during which the clients issue credentials.
const WORKLOAD: Duration = Duration::from_secs(15);
const ROLE: &str = "replica";
const TTL_SECONDS: u64 = 4;
const MAX_TTL_SECONDS: u64 = 8;
/// Increment of every renewal, shorter than the TTL so that renewed leases still expire
/// during the test.
const RENEW_INCREMENT: &str = "3s";
/// Maximum wait after the workload for tidy to revoke the last lease.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
/// Encryption key shared by the hosts, so that each opens the master key another sealed.
const ENCRYPTION_KEY: &str = "3f1c9a7e5b2d4f608e1a3c5b7d9f0e2a4c6b8d0f1e3a5c7b9d2f4e6a8c0b1d3f";
/// Seed of the clients' random choices, so that every run draws the same plans.
const SEED: u64 = 0x5eed_7e57_0000_0001;

/// A xorshift random number generator, because the tests crate has no `rand` and the
/// draws only need to be evenly spread.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Returns a number in `low..high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low)
    }

    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(self.between(low, high))
    }
}

/// What a client does with a lease after it was issued. Other hosts than the issuing one
/// serve the renewals and revocations.
#[derive(Clone, Copy, Debug)]
enum Plan {
    /// Nothing: tidy revokes it once it expires.
    Expire,
    /// One or two renewals after `pause` each, then tidy revokes it.
    Renew { count: u64, pause: Duration },
    /// One revocation after `pause`.
    Revoke { pause: Duration },
    /// After `pause`, two revocations on two hosts at once, then a third one of the
    /// revoked lease.
    RevokeTwice { pause: Duration },
    /// After `pause`, a renewal on one host and a revocation on another at once.
    RenewWhileRevoking { pause: Duration },
    /// A renewal sent `offset` around the lease's expiry, racing tidy.
    RenewAtExpiry { offset: i64 },
    /// A revocation sent `offset` around the lease's expiry, racing tidy.
    RevokeAtExpiry { offset: i64 },
}

impl Plan {
    fn draw(draws: &mut XorShift) -> Self {
        match draws.between(0, 40) {
            0..=11 => Plan::Expire,
            12..=19 => Plan::Renew {
                count: draws.between(1, 3),
                pause: draws.millis(300, 1500),
            },
            20..=25 => Plan::Revoke {
                pause: draws.millis(0, 800),
            },
            26..=29 => Plan::RevokeTwice {
                pause: draws.millis(0, 800),
            },
            30..=33 => Plan::RenewWhileRevoking {
                pause: draws.millis(0, 800),
            },
            34..=36 => Plan::RenewAtExpiry {
                offset: draws.between(0, 800) as i64 - 400,
            },
            _ => Plan::RevokeAtExpiry {
                offset: draws.between(0, 1500) as i64 - 300,
            },
        }
    }
}

/// A lease as the client received it.
#[derive(Clone, Debug)]
struct Issued {
    lease_id: String,
    /// SHA-256 of the key, the hash LiteLLM deletes it by.
    key_hash: String,
    key_alias: String,
    host: usize,
    received: SystemTime,
    lease_duration: u64,
}

impl Issued {
    /// Latest time the lease can expire without a renewal. The engine sets the expiry to
    /// its clock in whole seconds, read before the reply, plus the duration it returns.
    fn deadline(&self) -> SystemTime {
        self.received + Duration::from_secs(self.lease_duration)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Operation {
    Creds,
    Renew,
    Revoke,
}

/// One renewal or revocation and its reply.
#[derive(Clone, Debug)]
struct Call {
    operation: Operation,
    lease_id: String,
    host: usize,
    sent: SystemTime,
    received: SystemTime,
    status: u16,
    body: String,
    /// `lease_duration` of a successful renewal.
    lease_duration: Option<u64>,
    /// Whether a revocation or renewal of the same lease ran at the same time on another
    /// host, or the call was sent around the lease's expiry, when tidy revokes it.
    raced: bool,
}

impl Call {
    fn error_message(&self) -> String {
        let body: Value = serde_json::from_str(&self.body).unwrap_or(Value::Null);
        body["errors"][0].as_str().unwrap_or_default().to_owned()
    }
}

/// Everything the clients sent and received.
#[derive(Default)]
struct Journal {
    issued: Vec<Issued>,
    calls: Vec<Call>,
    /// Replies to creds requests other than 200.
    failed_creds: Vec<(usize, u16, String)>,
    statuses: BTreeMap<(Operation, u16), usize>,
}

/// The hosts' base URLs and the journal, shared by the client tasks.
struct Cluster {
    urls: Vec<String>,
    journal: Mutex<Journal>,
}

impl Cluster {
    async fn send(&self, host: usize, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let url = format!("{}{path}", self.urls[host]);
        http_client::send(method, &url, ADMIN, body)
            .await
            .unwrap_or_else(|error| panic!("{method} {url} failed: {error:#}"))
    }

    fn count(&self, operation: Operation, status: u16) {
        let mut journal = self.journal.lock().unwrap();
        *journal.statuses.entry((operation, status)).or_default() += 1;
    }

    async fn issue(&self, host: usize) -> Option<Issued> {
        let reply = self
            .send(host, "GET", &format!("/v1/litellm/creds/{ROLE}"), None)
            .await;
        let received = SystemTime::now();
        self.count(Operation::Creds, reply.status);
        if reply.status != 200 {
            let mut journal = self.journal.lock().unwrap();
            journal
                .failed_creds
                .push((host, reply.status, reply.text()));
            return None;
        }
        let body = reply.json();
        let key = body["data"]["key"].as_str().expect("data.key");
        let issued = Issued {
            lease_id: body["lease_id"].as_str().expect("lease_id").to_owned(),
            key_hash: hex_sha256(key),
            key_alias: body["data"]["key_alias"]
                .as_str()
                .expect("data.key_alias")
                .to_owned(),
            host,
            received,
            lease_duration: body["lease_duration"].as_u64().expect("lease_duration"),
        };
        self.journal.lock().unwrap().issued.push(issued.clone());
        Some(issued)
    }

    async fn renew(&self, host: usize, lease_id: &str, raced: bool) -> Call {
        let body = json!({"lease_id": lease_id, "increment": RENEW_INCREMENT});
        self.lease_call(
            Operation::Renew,
            host,
            lease_id,
            "/v1/sys/leases/renew",
            body,
            raced,
        )
        .await
    }

    async fn revoke(&self, host: usize, lease_id: &str, raced: bool) -> Call {
        let body = json!({"lease_id": lease_id});
        self.lease_call(
            Operation::Revoke,
            host,
            lease_id,
            "/v1/sys/leases/revoke",
            body,
            raced,
        )
        .await
    }

    async fn lease_call(
        &self,
        operation: Operation,
        host: usize,
        lease_id: &str,
        path: &str,
        body: Value,
        raced: bool,
    ) -> Call {
        let sent = SystemTime::now();
        let reply = self.send(host, "PUT", path, Some(&body)).await;
        let received = SystemTime::now();
        self.count(operation, reply.status);
        let lease_duration = (reply.status == 200)
            .then(|| reply.json()["lease_duration"].as_u64())
            .flatten();
        let call = Call {
            operation,
            lease_id: lease_id.to_owned(),
            host,
            sent,
            received,
            status: reply.status,
            body: reply.text(),
            lease_duration,
            raced,
        };
        self.journal.lock().unwrap().calls.push(call.clone());
        call
    }

    /// Carries out `plan` for `lease`.
    async fn follow(&self, lease: Issued, plan: Plan) {
        let next = (lease.host + 1) % HOSTS;
        let after_next = (lease.host + 2) % HOSTS;
        let id = lease.lease_id.as_str();
        match plan {
            Plan::Expire => {}
            Plan::Renew { count, pause } => {
                for renewal in 0..count {
                    tokio::time::sleep(pause).await;
                    let host = (next + renewal as usize) % HOSTS;
                    if self.renew(host, id, false).await.status != 200 {
                        break;
                    }
                }
            }
            Plan::Revoke { pause } => {
                tokio::time::sleep(pause).await;
                self.revoke(next, id, false).await;
            }
            Plan::RevokeTwice { pause } => {
                tokio::time::sleep(pause).await;
                tokio::join!(
                    self.revoke(next, id, true),
                    self.revoke(after_next, id, true)
                );
                self.revoke(lease.host, id, false).await;
            }
            Plan::RenewWhileRevoking { pause } => {
                tokio::time::sleep(pause).await;
                tokio::join!(
                    self.renew(next, id, true),
                    self.revoke(after_next, id, true)
                );
            }
            Plan::RenewAtExpiry { offset } => {
                sleep_until(shifted(lease.deadline(), offset)).await;
                self.renew(next, id, true).await;
            }
            Plan::RevokeAtExpiry { offset } => {
                sleep_until(shifted(lease.deadline(), offset)).await;
                self.revoke(after_next, id, true).await;
            }
        }
    }
}

fn hex_sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn shifted(time: SystemTime, offset_millis: i64) -> SystemTime {
    let offset = Duration::from_millis(offset_millis.unsigned_abs());
    if offset_millis < 0 {
        time - offset
    } else {
        time + offset
    }
}

async fn sleep_until(time: SystemTime) {
    if let Ok(wait) = time.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
}

/// Issues credentials on the hosts in turn until `stop`, and follows a drawn plan for each
/// lease in a task of its own. Returns when every plan is carried out.
async fn run_client(cluster: Arc<Cluster>, client: usize, stop: Instant) {
    let mut draws = XorShift(SEED ^ (client as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut plans = JoinSet::new();
    let mut turn = client;
    while Instant::now() < stop {
        let host = turn % HOSTS;
        turn += 1;
        let plan = Plan::draw(&mut draws);
        let pause = draws.millis(120, 300);
        if let Some(lease) = cluster.issue(host).await {
            let cluster = Arc::clone(&cluster);
            plans.spawn(async move { cluster.follow(lease, plan).await });
        }
        tokio::time::sleep(pause).await;
    }
    while let Some(finished) = plans.join_next().await {
        finished.expect("a plan task panicked");
    }
}

/// Starts the hosts on `redis_url` at once, each on its own thread.
fn start_hosts(redis_url: &str) -> Vec<HostProcess> {
    let starts: Vec<_> = (0..HOSTS)
        .map(|_| {
            let redis_url = redis_url.to_owned();
            std::thread::spawn(move || {
                HostProcess::start(&[
                    "--redis-url",
                    &redis_url,
                    "--admin-token",
                    ADMIN,
                    "--tidy-interval",
                    "1s",
                    "--encryption-key",
                    ENCRYPTION_KEY,
                    // Debug for the tidy timer adds a line for runs with nothing to do, so
                    // that the logs show every run.
                    "--log",
                    "info,litellm_secrets_host::tidy=debug",
                ])
                .expect("starting a host")
            })
        })
        .collect();
    starts
        .into_iter()
        .map(|start| start.join().expect("the thread starting a host panicked"))
        .collect()
}

/// Returns the lease ids of `ROLE` that `host` lists, with the status of the LIST.
async fn listed_leases(host: &HostProcess) -> (u16, Vec<String>) {
    let reply = host
        .admin(
            "LIST",
            &format!("/v1/sys/leases/lookup/litellm/creds/{ROLE}/"),
            None,
        )
        .await;
    let keys = reply.json()["data"]["keys"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .map(|key| key.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default();
    (reply.status, keys)
}

/// Counts the `/key/delete` requests per key hash. A delete by alias counts for the key
/// issued with that alias, and one naming neither an issued hash nor alias goes to
/// `unknown`.
fn deletes_per_key(
    litellm: &LiteLlmDouble,
    issued: &[Issued],
    unknown: &mut Vec<String>,
) -> HashMap<String, usize> {
    let hash_of_alias: HashMap<&str, &str> = issued
        .iter()
        .map(|lease| (lease.key_alias.as_str(), lease.key_hash.as_str()))
        .collect();
    let hashes: BTreeSet<&str> = issued.iter().map(|lease| lease.key_hash.as_str()).collect();
    let mut counts = HashMap::new();
    for request in litellm.requests_to("/key/delete") {
        let body = request.json();
        let named = |field: &str| -> Vec<String> {
            body[field]
                .as_array()
                .map(|values| {
                    values
                        .iter()
                        .filter_map(|value| value.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        for hash in named("keys") {
            if hashes.contains(hash.as_str()) {
                *counts.entry(hash).or_default() += 1;
            } else {
                unknown.push(hash);
            }
        }
        for alias in named("key_aliases") {
            match hash_of_alias.get(alias.as_str()) {
                Some(hash) => *counts.entry((*hash).to_owned()).or_default() += 1,
                None => unknown.push(alias),
            }
        }
    }
    counts
}

/// Sums `revoked_leases` over the "tidy run" events in `logs`.
fn tidy_revoked(logs: &str) -> u64 {
    events(logs, "tidy run")
        .iter()
        .map(|event| event["fields"]["revoked_leases"].as_u64().unwrap_or(0))
        .sum()
}

/// Counts the tidy timer's run events in `logs`, with or without work done.
fn tidy_runs(logs: &str) -> usize {
    events(logs, "tidy run").len() + events(logs, "tidy run: nothing to do").len()
}

/// Returns the host's log events at level WARN or ERROR.
fn warnings(logs: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["level"] == "WARN" || event["level"] == "ERROR")
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hosts_under_concurrent_load() {
    let Some(redis) = RedisServer::start("three_hosts_under_concurrent_load") else {
        return;
    };
    let started = Instant::now();
    let hosts = start_hosts(&redis.url());
    let litellm = LiteLlmDouble::start(MASTER_KEY, Clock::new())
        .await
        .expect("starting the LiteLLM double");
    hosts[0].write_config(&litellm.url(), MASTER_KEY).await;
    let role = json!({
        "models": ["gpt-4o-mini"],
        "ttl": format!("{TTL_SECONDS}s"),
        "max_ttl": format!("{MAX_TTL_SECONDS}s"),
    });
    let reply = hosts[1]
        .admin("POST", &format!("/v1/litellm/roles/{ROLE}"), Some(&role))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // The workload: every client issues on the hosts in turn and follows a plan per lease.
    let cluster = Arc::new(Cluster {
        urls: hosts.iter().map(HostProcess::url).collect(),
        journal: Mutex::default(),
    });
    let stop = Instant::now() + WORKLOAD;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| tokio::spawn(run_client(Arc::clone(&cluster), client, stop)))
        .collect();
    for client in clients {
        client.await.expect("a client task panicked");
    }

    // Tidy revokes the leases that are left once they expire.
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let (status, left) = listed_leases(&hosts[0]).await;
        let live_keys = litellm.live_keys().len();
        if (status == 404 && live_keys == 0) || Instant::now() > drain_deadline {
            assert_eq!(
                status,
                404,
                "an empty lease list after {DRAIN_TIMEOUT:?}; {} leases left: {:?}",
                left.len(),
                left.iter().take(5).collect::<Vec<_>>()
            );
            assert_eq!(live_keys, 0, "no live key after {DRAIN_TIMEOUT:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for (index, host) in hosts.iter().enumerate() {
        let (status, left) = listed_leases(host).await;
        assert_eq!(status, 404, "host {index} lists leases: {left:?}");
    }

    let journal = std::mem::take(&mut *cluster.journal.lock().unwrap());
    let issued = &journal.issued;
    assert!(
        journal.failed_creds.is_empty(),
        "creds requests failed: {:?}",
        journal.failed_creds
    );
    let server_errors: Vec<_> = journal
        .statuses
        .iter()
        .filter(|((_, status), _)| *status >= 500)
        .collect();
    assert!(
        server_errors.is_empty(),
        "5xx replies (operation, status): {server_errors:?}"
    );
    let lease_ids: BTreeSet<&str> = issued.iter().map(|lease| lease.lease_id.as_str()).collect();
    assert_eq!(lease_ids.len(), issued.len(), "every lease id is new");
    let key_hashes: BTreeSet<&str> = issued.iter().map(|lease| lease.key_hash.as_str()).collect();
    assert_eq!(key_hashes.len(), issued.len(), "every key is new");
    assert_eq!(
        litellm.requests_to("/key/generate").len(),
        issued.len(),
        "one /key/generate per issued lease, so no key was minted without a lease"
    );

    // Revocations: a revocation of a lease that is already gone succeeds too, as in Vault.
    let mut calls_per_lease: HashMap<&str, Vec<&Call>> = HashMap::new();
    for call in &journal.calls {
        calls_per_lease
            .entry(call.lease_id.as_str())
            .or_default()
            .push(call);
    }
    let revokes: Vec<&Call> = journal
        .calls
        .iter()
        .filter(|call| call.operation == Operation::Revoke)
        .collect();
    for revoke in &revokes {
        assert_eq!(
            revoke.status, 204,
            "revoke of {} on host {}: {}",
            revoke.lease_id, revoke.host, revoke.body
        );
    }

    // Renewals: a 200 only while the lease was neither expired nor revoked, otherwise a
    // 400 or 404 that names the lease and the reason.
    let mut renewed = 0;
    let mut renewals_rejected = 0;
    for lease in issued {
        let calls = calls_per_lease
            .get(lease.lease_id.as_str())
            .cloned()
            .unwrap_or_default();
        let mut renewals: Vec<&Call> = calls
            .iter()
            .copied()
            .filter(|call| call.operation == Operation::Renew)
            .collect();
        renewals.sort_by_key(|call| call.sent);
        let mut deadline = lease.deadline();
        for renewal in renewals {
            if renewal.status == 200 {
                renewed += 1;
                assert!(
                    renewal.sent < deadline,
                    "renewal of {} on host {} succeeded although it was sent after the \
                     lease expired",
                    lease.lease_id,
                    renewal.host
                );
                let revoked_before = calls.iter().find(|call| {
                    call.operation == Operation::Revoke
                        && call.status == 204
                        && call.received <= renewal.sent
                });
                assert!(
                    revoked_before.is_none(),
                    "renewal of {} on host {} succeeded after a revocation on host {} had \
                     returned 204",
                    lease.lease_id,
                    renewal.host,
                    revoked_before.map_or(0, |call| call.host)
                );
                let duration = renewal.lease_duration.expect("lease_duration of a renewal");
                deadline = renewal.received + Duration::from_secs(duration);
                continue;
            }
            renewals_rejected += 1;
            let message = renewal.error_message();
            let reasons: &[&str] = match renewal.status {
                400 => &["is being revoked", "expired at", "reached its max TTL"],
                404 => &["not found", "was revoked during the renewal"],
                _ => &[],
            };
            assert!(
                message.contains(&lease.lease_id),
                "the rejected renewal on host {} names lease {}: {} {}",
                renewal.host,
                lease.lease_id,
                renewal.status,
                renewal.body
            );
            assert!(
                reasons.iter().any(|reason| message.contains(reason)),
                "the rejected renewal of {} on host {} gives a reason for status {}: {}",
                lease.lease_id,
                renewal.host,
                renewal.status,
                renewal.body
            );
        }
    }

    // Deletes in LiteLLM. The double deletes a key only while it is live and returns 404
    // "No keys found" to every later delete naming it, so per key the first delete succeeds
    // and any further one is a repeat that got 404.
    let mut unknown = Vec::new();
    let deletes = deletes_per_key(&litellm, issued, &mut unknown);
    assert!(
        unknown.is_empty(),
        "deletes of keys no client was issued: {unknown:?}"
    );
    let mut repeat_deletes = 0;
    // Repeats on leases with a single revocation on request, which can only have raced tidy.
    let mut repeats_after_tidy = 0;
    for lease in issued {
        let count = deletes.get(&lease.key_hash).copied().unwrap_or(0);
        let revoke_requests = calls_per_lease
            .get(lease.lease_id.as_str())
            .map_or(0, |calls| {
                calls
                    .iter()
                    .filter(|call| call.operation == Operation::Revoke)
                    .count()
            });
        assert!(
            count >= 1,
            "the key of {} was never deleted",
            lease.lease_id
        );
        let row = litellm.key_by_hash(&lease.key_hash);
        assert!(
            row.is_some_and(|row| row.deleted),
            "the key of {} is deleted in LiteLLM",
            lease.lease_id
        );
        // Tidy claims a lease only when no other revocation holds it, so tidy alone
        // deletes a key once. A revocation on request takes over any claim and deletes the
        // key itself, so that its 204 always means the key is gone. Each one may therefore
        // repeat a delete that another revocation already made.
        if revoke_requests == 0 {
            assert_eq!(
                count, 1,
                "the key of {}, revoked by tidy only, was deleted once",
                lease.lease_id
            );
        }
        assert!(
            count <= revoke_requests + 1,
            "the key of {} got {count} deletes from {revoke_requests} revocations on request \
             and tidy",
            lease.lease_id
        );
        repeat_deletes += count - 1;
        if revoke_requests == 1 {
            repeats_after_tidy += count - 1;
        }
    }

    // Tidy on every host.
    let never_revoked_by_request = issued
        .iter()
        .filter(|lease| {
            !calls_per_lease
                .get(lease.lease_id.as_str())
                .is_some_and(|calls| calls.iter().any(|call| call.operation == Operation::Revoke))
        })
        .count() as u64;
    // A host logs a tidy run after its last revocation, so the counts can lag the store.
    let logs_deadline = Instant::now() + Duration::from_secs(5);
    let mut tidy_per_host: Vec<u64> = hosts
        .iter()
        .map(|host| tidy_revoked(&host.logs()))
        .collect();
    while tidy_per_host.iter().sum::<u64>() < never_revoked_by_request
        && Instant::now() < logs_deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        tidy_per_host = hosts
            .iter()
            .map(|host| tidy_revoked(&host.logs()))
            .collect();
    }
    let tidy_total: u64 = tidy_per_host.iter().sum();
    assert!(
        tidy_total >= never_revoked_by_request,
        "tidy logged {tidy_total} revocations, but {never_revoked_by_request} leases were \
         never revoked on request"
    );
    assert!(
        tidy_total <= issued.len() as u64,
        "tidy logged {tidy_total} revocations for {} leases",
        issued.len()
    );
    let mut runs_per_host = Vec::new();
    for (index, host) in hosts.iter().enumerate() {
        let logs = host.logs();
        let runs = tidy_runs(&logs);
        runs_per_host.push(runs.to_string());
        assert!(
            runs >= 5,
            "host {index} logged {runs} tidy runs, expected about one a second"
        );
        let warnings = warnings(&logs);
        assert!(
            warnings.is_empty(),
            "host {index} logged warnings or errors: {warnings:?}"
        );
    }

    let revoked_by_request = issued.len() as u64 - never_revoked_by_request;
    let raced = issued
        .iter()
        .filter(|lease| {
            calls_per_lease
                .get(lease.lease_id.as_str())
                .is_some_and(|calls| {
                    calls
                        .iter()
                        .any(|call| call.operation == Operation::Revoke && call.raced)
                })
        })
        .count();
    let per_host = tidy_per_host
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("/");
    println!(
        "replicas: {HOSTS} hosts, {} issued, {renewed} renewed ({renewals_rejected} rejected), \
         {revoked_by_request} revoked by request ({raced} raced), {tidy_total} by tidy \
         ({per_host} per host, in {} runs), {} keys left, each key deleted once, \
         {repeat_deletes} repeat deletes answered 404 ({repeats_after_tidy} after tidy), {} s",
        issued.len(),
        runs_per_host.join("/"),
        litellm.live_keys().len(),
        started.elapsed().as_secs()
    );
    println!("replicas: statuses {:?}", journal.statuses);
}
