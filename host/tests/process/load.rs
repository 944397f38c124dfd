//! Load against the real LiteLLM proxy: 500 creds requests at concurrency 32 through the
//! host, then a revoke for each lease at the same concurrency. Every lease must have its
//! own key in LiteLLM, and none may be left after the revokes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use litellm_secrets_tests::http_client::{self, Reply};
use litellm_secrets_tests::real_litellm::{real_litellm, unique};
use serde_json::json;

use crate::support::{ADMIN, HostProcess, TempDir};

const REQUESTS: usize = 500;
const CONCURRENCY: usize = 32;
const ROLE: &str = "load";

/// One request's reply and how long it took.
struct Timed {
    reply: Reply,
    elapsed: Duration,
}

/// Sends `requests` at `CONCURRENCY` at a time and returns the replies in completion order
/// with the wall time of the whole run.
async fn run_concurrently(
    requests: Vec<(&'static str, String, Option<serde_json::Value>)>,
) -> (Vec<Timed>, Duration) {
    let started = Instant::now();
    let replies = futures::stream::iter(requests)
        .map(|(method, url, body)| async move {
            let sent = Instant::now();
            let reply = http_client::send(method, &url, ADMIN, body.as_ref())
                .await
                .unwrap_or_else(|error| panic!("{method} {url} failed: {error:#}"));
            Timed {
                reply,
                elapsed: sent.elapsed(),
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    (replies, started.elapsed())
}

/// Returns the `q` quantile of `samples` in milliseconds.
fn quantile_ms(samples: &[Timed], q: f64) -> f64 {
    let mut millis: Vec<f64> = samples
        .iter()
        .map(|timed| timed.elapsed.as_secs_f64() * 1000.0)
        .collect();
    millis.sort_by(f64::total_cmp);
    let index = ((millis.len() - 1) as f64 * q).round() as usize;
    millis[index]
}

#[tokio::test(flavor = "multi_thread")]
async fn creds_load_on_real_litellm() {
    let Some(real) = real_litellm("creds_load_on_real_litellm") else {
        return;
    };
    let dir = TempDir::new("load");
    let data = dir.data_file();
    let host = HostProcess::start(&[
        "--data",
        &data,
        "--admin-token",
        ADMIN,
        "--tidy-interval",
        "0",
    ])
    .unwrap();
    host.write_config(&real.url, &real.master_key).await;
    let prefix = format!("load{}", unique(8));
    let role = json!({"models": ["gpt-4o-mini"], "ttl": "1h", "key_alias_prefix": prefix});
    let reply = host
        .admin("POST", &format!("/v1/litellm/roles/{ROLE}"), Some(&role))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let creds_url = format!("{}/v1/litellm/creds/{ROLE}", host.url());
    let requests = (0..REQUESTS)
        .map(|_| ("GET", creds_url.clone(), None))
        .collect();
    let (issued, issue_time) = run_concurrently(requests).await;
    let failures: Vec<String> = issued
        .iter()
        .filter(|timed| timed.reply.status != 200)
        .map(|timed| format!("{} {}", timed.reply.status, timed.reply.text()))
        .collect();
    assert!(failures.is_empty(), "failed creds requests: {failures:?}");

    let lease_ids: BTreeSet<String> = issued
        .iter()
        .map(|timed| timed.reply.json()["lease_id"].as_str().unwrap().to_owned())
        .collect();
    let keys: BTreeSet<String> = issued
        .iter()
        .map(|timed| {
            timed.reply.json()["data"]["key"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(lease_ids.len(), REQUESTS, "distinct lease ids");
    assert_eq!(keys.len(), REQUESTS, "distinct keys");
    assert_eq!(host.stored_leases(ROLE).await, lease_ids, "stored leases");
    let aliases = real.live_aliases(&prefix).await;
    let expected_aliases: BTreeSet<String> = lease_ids
        .iter()
        .map(|id| format!("{prefix}-{ROLE}-{}", id.rsplit('/').next().unwrap()))
        .collect();
    assert_eq!(
        aliases, expected_aliases,
        "LiteLLM's keys are the leases' keys"
    );

    let revoke_url = format!("{}/v1/sys/leases/revoke", host.url());
    let requests = lease_ids
        .iter()
        .map(|id| ("PUT", revoke_url.clone(), Some(json!({"lease_id": id}))))
        .collect();
    let (revoked, revoke_time) = run_concurrently(requests).await;
    let failures: Vec<String> = revoked
        .iter()
        .filter(|timed| timed.reply.status != 204)
        .map(|timed| format!("{} {}", timed.reply.status, timed.reply.text()))
        .collect();
    assert!(failures.is_empty(), "failed revokes: {failures:?}");
    assert!(
        host.stored_leases(ROLE).await.is_empty(),
        "leases after the revokes"
    );
    let left = real.live_aliases(&prefix).await;
    assert!(left.is_empty(), "{} keys left in LiteLLM", left.len());

    let logs = host.logs();
    assert!(
        !logs.contains(&real.master_key),
        "the logs contain the master key"
    );
    let logged_keys = keys
        .iter()
        .filter(|key| logs.contains(key.as_str()))
        .count();
    assert_eq!(logged_keys, 0, "minted keys in the logs");
    let revoke_bodies = revoked
        .iter()
        .map(|timed| timed.reply.text())
        .collect::<String>();
    assert!(revoke_bodies.is_empty(), "revoke responses have no body");

    println!(
        "load: {REQUESTS} creds at concurrency {CONCURRENCY} in {:.1} s ({:.0}/s, p50 {:.0} ms, \
         p99 {:.0} ms); {REQUESTS} revokes in {:.1} s ({:.0}/s, p50 {:.0} ms, p99 {:.0} ms); \
         {} keys, 0 left",
        issue_time.as_secs_f64(),
        REQUESTS as f64 / issue_time.as_secs_f64(),
        quantile_ms(&issued, 0.5),
        quantile_ms(&issued, 0.99),
        revoke_time.as_secs_f64(),
        REQUESTS as f64 / revoke_time.as_secs_f64(),
        quantile_ms(&revoked, 0.5),
        quantile_ms(&revoked, 0.99),
        aliases.len(),
    );
}
