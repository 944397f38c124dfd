//! The host against the real LiteLLM proxy: the tidy timer ends an expired key, and a
//! SIGKILL during a burst of issuance leaves no key without a lease once tidy ran.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use litellm_secrets_tests::http_client::{self, chat_completion};
use litellm_secrets_tests::real_litellm::{RealLiteLlm, real_litellm, unique};
use serde_json::{Value, json};

use crate::support::{ADMIN, HostProcess, TempDir, events};

async fn configure(host: &HostProcess, real: &RealLiteLlm, role: &str, body: Value) {
    host.write_config(&real.url, &real.master_key).await;
    let reply = host
        .admin("POST", &format!("/v1/litellm/roles/{role}"), Some(&body))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn tidy_timer_revokes_expired_lease() {
    let Some(real) = real_litellm("tidy_timer_revokes_expired_lease") else {
        return;
    };
    let dir = TempDir::new("real-tidy");
    let data = dir.data_file();
    let host = HostProcess::start(&[
        "--data",
        &data,
        "--admin-token",
        ADMIN,
        "--tidy-interval",
        "1s",
    ])
    .unwrap();
    let role = format!("tidy{}", unique(6));
    let body = json!({"models": ["gpt-4o-mini"], "ttl": "3s", "max_ttl": "1m"});
    configure(&host, &real, &role, body).await;

    let creds = host
        .admin("GET", &format!("/v1/litellm/creds/{role}"), None)
        .await;
    assert_eq!(creds.status, 200, "{}", creds.text());
    let key = creds.json()["data"]["key"].as_str().unwrap().to_owned();
    let lease = creds.json()["lease_id"].as_str().unwrap().to_owned();
    let chat = chat_completion(&real.url, &key, "gpt-4o-mini")
        .await
        .unwrap();
    assert_eq!(chat.status, 200, "{}", chat.text());

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let chat = chat_completion(&real.url, &key, "gpt-4o-mini")
            .await
            .unwrap();
        if chat.status != 200 || Instant::now() > deadline {
            break chat.status;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        status, 401,
        "the key stops working once tidy revoked its lease"
    );
    let lookup = host.lookup_lease(&lease).await;
    assert_eq!(lookup.status, 404, "the lease is gone: {}", lookup.text());
    let revoked: u64 = events(&host.logs(), "tidy run")
        .iter()
        .filter_map(|event| event["fields"]["revoked_leases"].as_u64())
        .sum();
    assert_eq!(revoked, 1, "{}", host.logs());
    assert!(
        !host.logs().contains(&key),
        "the minted key is never logged"
    );
    assert!(
        !host.logs().contains(&real.master_key),
        "the master key is never logged"
    );
}

/// SIGKILL while 200 creds requests run against the real proxy. After a restart, tidy's
/// grace period and a few timer runs, every key with the role's alias prefix has a lease,
/// every lease has a key, and every lease the clients received is still there.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_burst_keeps_pairs() {
    let Some(real) = real_litellm("sigkill_during_burst_keeps_pairs") else {
        return;
    };
    const REQUESTS: usize = 200;
    // With a 3 s LiteLLM timeout tidy treats an issuance as abandoned after 54 s.
    const GRACE: Duration = Duration::from_secs(54);
    let dir = TempDir::new("real-kill");
    let data = dir.data_file();
    let args = [
        "--data",
        &data,
        "--admin-token",
        ADMIN,
        "--litellm-timeout",
        "3s",
    ];
    let mut host = HostProcess::start(&[&args[..], &["--tidy-interval", "0"]].concat()).unwrap();
    let role = "burst";
    let prefix = format!("k{}", unique(8));
    let body = json!({"models": ["gpt-4o-mini"], "ttl": "1h", "max_ttl": "2h", "key_alias_prefix": prefix});
    configure(&host, &real, role, body).await;

    let url = host.url();
    let (answered, mut answers) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..REQUESTS {
        let (url, answered) = (url.clone(), answered.clone());
        tokio::spawn(async move {
            let reply = http_client::send(
                "GET",
                &format!("{url}/v1/litellm/creds/{role}"),
                ADMIN,
                None,
            )
            .await;
            let _ = answered.send(reply.ok());
        });
    }
    drop(answered);

    let mut received = BTreeSet::new();
    let started = Instant::now();
    while received.len() < 20 && started.elapsed() < Duration::from_secs(4) {
        match tokio::time::timeout(Duration::from_millis(100), answers.recv()).await {
            Ok(Some(Some(reply))) if reply.status == 200 => {
                received.insert(reply.json()["lease_id"].as_str().unwrap().to_owned());
            }
            Ok(None) => break,
            _ => {}
        }
    }
    host.kill();
    let killed_at = Instant::now();
    while let Some(answer) = answers.recv().await {
        if let Some(reply) = answer.filter(|reply| reply.status == 200) {
            received.insert(reply.json()["lease_id"].as_str().unwrap().to_owned());
        }
    }
    println!(
        "METRIC sigkill_leases_received_before_kill={}",
        received.len()
    );

    let restarted = HostProcess::start(&[&args[..], &["--tidy-interval", "2s"]].concat()).unwrap();
    println!(
        "METRIC restart_after_sigkill_ms={}",
        restarted.startup.as_millis()
    );
    let deadline = killed_at + GRACE + Duration::from_secs(60);
    let (leases, aliases) = loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let leases = restarted.stored_leases(role).await;
        let aliases = real.live_aliases(&prefix).await;
        let settled = killed_at.elapsed() > GRACE + Duration::from_secs(6);
        if (settled && lease_aliases(&leases, &prefix, role) == aliases)
            || Instant::now() > deadline
        {
            break (leases, aliases);
        }
    };
    let cleaned: u64 = events(&restarted.logs(), "tidy run")
        .iter()
        .filter_map(|event| event["fields"]["cleaned_pending"].as_u64())
        .sum();
    println!(
        "METRIC sigkill_leases_kept={} live_keys={} cleaned_pending={cleaned} settled_after_s={}",
        leases.len(),
        aliases.len(),
        killed_at.elapsed().as_secs()
    );
    assert_eq!(
        lease_aliases(&leases, &prefix, role),
        aliases,
        "keys and leases match one to one"
    );
    assert!(
        received.is_subset(&leases),
        "every lease a client received is kept"
    );

    let reply = restarted
        .admin(
            "PUT",
            &format!("/v1/sys/leases/revoke-prefix/litellm/creds/{role}"),
            None,
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert!(
        real.live_aliases(&prefix).await.is_empty(),
        "revoke-prefix deleted every key"
    );
}

/// Returns the alias of each lease's key: `<prefix>-<role>-<id>`.
fn lease_aliases(leases: &BTreeSet<String>, prefix: &str, role: &str) -> BTreeSet<String> {
    leases
        .iter()
        .map(|lease| {
            let id = lease.rsplit('/').next().unwrap();
            format!("{prefix}-{role}-{id}")
        })
        .collect()
}
