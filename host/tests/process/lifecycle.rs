//! Restarts, signals and the admin token, against the LiteLLM double.

use std::collections::BTreeSet;
use std::time::Duration;

use litellm_secrets_tests::clock::Clock;
use litellm_secrets_tests::fixture::MASTER_KEY;
use litellm_secrets_tests::litellm_double::{LiteLlmDouble, Reply};
use serde_json::{Value, json};

use crate::support::{ADMIN, HostProcess, TempDir, events, file_args};

async fn double() -> LiteLlmDouble {
    LiteLlmDouble::start(MASTER_KEY, Clock::new())
        .await
        .expect("starting the LiteLLM double")
}

/// Writes the config for `litellm` and role `dev`.
async fn configure(host: &HostProcess, litellm: &LiteLlmDouble) {
    host.write_config(&litellm.url(), MASTER_KEY).await;
    let role = json!({"models": ["gpt-4o-mini"], "ttl": "1h", "max_ttl": "2h"});
    let reply = host
        .admin("POST", "/v1/litellm/roles/dev", Some(&role))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

fn lease_id(creds: &Value) -> String {
    creds["lease_id"].as_str().expect("lease_id").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_config_roles_and_leases() {
    let dir = TempDir::new("restart");
    let data = dir.data_file();
    let args = file_args(&data);
    let litellm = double().await;
    let mut first = HostProcess::start(&args).unwrap();
    configure(&first, &litellm).await;
    let creds = first.admin("GET", "/v1/litellm/creds/dev", None).await;
    assert_eq!(creds.status, 200, "{}", creds.text());
    let lease = lease_id(&creds.json());
    assert!(first.terminate(Duration::from_secs(10)).success());

    let second = HostProcess::start(&args).unwrap();
    println!(
        "METRIC restart_to_serving_ms={}",
        second.startup.as_millis()
    );
    let config = second.admin("GET", "/v1/litellm/config", None).await;
    assert_eq!(config.json()["data"]["url"], json!(litellm.url()));
    let roles = second.admin("LIST", "/v1/litellm/roles", None).await;
    assert_eq!(roles.json()["data"]["keys"], json!(["dev"]));
    let lookup = second.lookup_lease(&lease).await;
    assert_eq!(lookup.status, 200, "{}", lookup.text());
    assert_eq!(lookup.json()["data"]["id"], json!(lease));

    let revoke = second
        .admin(
            "PUT",
            "/v1/sys/leases/revoke",
            Some(&json!({"lease_id": lease})),
        )
        .await;
    assert_eq!(revoke.status, 204, "{}", revoke.text());
    assert!(
        litellm.live_keys().is_empty(),
        "the revoked lease's key is deleted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_admin_token_printed_once() {
    let dir = TempDir::new("admin-token");
    let data = dir.data_file();
    let args = ["--data", data.as_str(), "--tidy-interval", "0"];
    let mut first = HostProcess::start(&args).unwrap();
    let printed = first.stdout();
    let token = printed
        .split_whitespace()
        .find(|word| word.starts_with("lsa."))
        .unwrap_or_else(|| panic!("no token on stdout: {printed:?}"))
        .to_owned();
    let reply = first.call(&token, "LIST", "/v1/litellm/roles", None).await;
    assert_eq!(
        reply.status,
        404,
        "an empty list, so the token was accepted: {}",
        reply.text()
    );
    let wrong = first
        .call("not-the-token", "LIST", "/v1/litellm/roles", None)
        .await;
    assert_eq!(wrong.status, 403);
    assert!(first.terminate(Duration::from_secs(10)).success());
    assert!(!first.logs().contains(&token), "the token is never logged");

    let stored = std::fs::read(&data).unwrap();
    let stored = String::from_utf8_lossy(&stored);
    assert!(
        !stored.contains(&token),
        "only the token's digest is stored"
    );

    let mut second = HostProcess::start(&args).unwrap();
    assert_eq!(second.stdout(), "", "a restart prints no token");
    let reply = second.call(&token, "LIST", "/v1/litellm/roles", None).await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    assert!(second.terminate(Duration::from_secs(10)).success());

    let rotated = HostProcess::start(&[&args[..], &["--rotate-admin-token"]].concat()).unwrap();
    let reply = rotated
        .call(&token, "LIST", "/v1/litellm/roles", None)
        .await;
    assert_eq!(
        reply.status, 403,
        "the old token stops working after a rotation"
    );
    assert!(
        rotated.stdout().contains("lsa."),
        "the new token is printed"
    );
}

/// SIGTERM while creds requests are in flight: every request the host accepted finishes,
/// and after a restart every minted key has its lease.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_load_loses_nothing() {
    let dir = TempDir::new("sigterm");
    let data = dir.data_file();
    let args = file_args(&data);
    let litellm = double().await;
    let mut host = HostProcess::start(&args).unwrap();
    configure(&host, &litellm).await;
    const REQUESTS: usize = 40;
    for _ in 0..REQUESTS {
        let slow = Reply::Delayed {
            delay: Duration::from_millis(300),
            reply: Box::new(Reply::Normal),
        };
        litellm.script("/key/generate", slow);
    }

    let url = host.url();
    let requests: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                litellm_secrets_tests::http_client::send(
                    "GET",
                    &format!("{url}/v1/litellm/creds/dev"),
                    ADMIN,
                    None,
                )
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = tokio::task::spawn_blocking(move || {
        let status = host.terminate(Duration::from_secs(30));
        (status, host)
    });
    let mut leased = BTreeSet::new();
    let mut rejected = 0;
    for request in requests {
        match request.await.unwrap() {
            Ok(reply) => {
                assert_eq!(
                    reply.status,
                    200,
                    "an accepted request finishes: {}",
                    reply.text()
                );
                leased.insert(lease_id(&reply.json()));
            }
            Err(_) => rejected += 1,
        }
    }
    let (status, host) = status.await.unwrap();
    assert!(status.success(), "{status}\n{}", host.logs());
    assert!(
        !leased.is_empty(),
        "some requests were in flight at SIGTERM"
    );
    println!(
        "METRIC sigterm_finished={} sigterm_rejected={rejected}",
        leased.len()
    );

    let restarted = HostProcess::start(&args).unwrap();
    let stored = restarted.stored_leases("dev").await;
    assert_eq!(
        stored, leased,
        "exactly the leases that were answered are stored"
    );
    assert_eq!(
        litellm.live_keys().len(),
        leased.len(),
        "no key without a lease"
    );
    let pending = events(&restarted.logs(), "tidy run");
    assert!(pending.is_empty(), "the timer is off in this test");
}

/// hvac, unchanged, against the running host and the LiteLLM double.
#[tokio::test(flavor = "multi_thread")]
async fn hvac_drives_the_running_host() {
    let Some(python) = litellm_secrets_tests::hvac::hvac_python("hvac_drives_the_running_host")
    else {
        return;
    };
    let dir = TempDir::new("hvac");
    let data = dir.data_file();
    let host = HostProcess::start(&["--data", &data, "--admin-token", ADMIN]).unwrap();
    let litellm = double().await;

    let report = litellm_secrets_tests::hvac::run_client_script(
        python,
        &host.url(),
        ADMIN,
        &litellm.url(),
        MASTER_KEY,
    )
    .await;
    assert_eq!(report["ok"], true);
    assert!(report["checks"].as_u64().unwrap() >= 30, "{report}");
    assert_eq!(litellm.requests_to("/key/generate").len(), 3);
    assert!(
        litellm.live_keys().is_empty(),
        "every key the script got was revoked"
    );
    assert!(
        !host.logs().contains(ADMIN),
        "the admin token is never logged"
    );
}

/// More concurrent requests than `--max-concurrency`: the extra ones wait for an
/// instance instead of failing, and the pool has room for every instance's modules.
#[tokio::test(flavor = "multi_thread")]
async fn requests_beyond_max_concurrency_wait() {
    let dir = TempDir::new("concurrency");
    let data = dir.data_file();
    let args = [&file_args(&data)[..], &["--max-concurrency", "16"]].concat();
    let litellm = double().await;
    let host = HostProcess::start(&args).unwrap();
    configure(&host, &litellm).await;
    for _ in 0..40 {
        let slow = Reply::Delayed {
            delay: Duration::from_millis(100),
            reply: Box::new(Reply::Normal),
        };
        litellm.script("/key/generate", slow);
    }

    let requests = (0..40).map(|_| host.admin("GET", "/v1/litellm/creds/dev", None));
    let replies = futures::future::join_all(requests).await;
    let statuses: Vec<u16> = replies.iter().map(|reply| reply.status).collect();
    assert_eq!(statuses, [200; 40]);
    assert_eq!(litellm.live_keys().len(), 40);
}
