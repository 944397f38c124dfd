//! Two host processes on one Redis server, which the test starts on a free loopback port:
//! what one writes the other reads, and concurrent issuance, renewal, revocation and tidy
//! from both keep exactly one lease per key. The tests run when `redis-server` is on the
//! PATH, and fail instead of skipping with `REDIS_REQUIRED=1`.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use litellm_secrets_tests::clock::Clock;
use litellm_secrets_tests::fixture::MASTER_KEY;
use litellm_secrets_tests::litellm_double::LiteLlmDouble;
use serde_json::json;

use crate::support::{ADMIN, HostProcess};

/// A `redis-server` child on a free loopback port, without persistence, killed on drop.
pub(crate) struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts the server, or returns `None` after printing `SKIPPED` when `redis-server`
    /// cannot be started and `REDIS_REQUIRED` is not `1`.
    pub(crate) fn start(test: &str) -> Option<Self> {
        Self::start_with(test, &[])
    }

    /// Starts a server with `extra` arguments, such as `--requirepass`.
    fn start_with(test: &str, extra: &[&str]) -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let spawned = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = spawned else {
            let required = std::env::var("REDIS_REQUIRED").is_ok_and(|value| value == "1");
            assert!(
                !required,
                "{test}: REDIS_REQUIRED=1 but redis-server cannot be started"
            );
            eprintln!("SKIPPED {test}: redis-server is not on the PATH");
            return None;
        };
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    /// Runs `redis-cli` against this server with `args`.
    fn cli(&self, args: &[&str]) {
        let status = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running redis-cli");
        assert!(status.success(), "redis-cli {args:?}");
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_share_one_redis() {
    let Some(redis) = RedisServer::start("two_hosts_share_one_redis") else {
        return;
    };
    let url = redis.url();
    let args = [
        "--redis-url",
        &url,
        "--admin-token",
        ADMIN,
        "--tidy-interval",
        "1s",
    ];
    let first = HostProcess::start(&args).unwrap();
    let second = HostProcess::start(&args).unwrap();
    let litellm = LiteLlmDouble::start(MASTER_KEY, Clock::new())
        .await
        .unwrap();

    first.write_config(&litellm.url(), MASTER_KEY).await;
    let role = json!({"models": ["gpt-4o-mini"], "ttl": "1h", "max_ttl": "2h"});
    assert_eq!(
        first
            .admin("POST", "/v1/litellm/roles/dev", Some(&role))
            .await
            .status,
        200
    );
    let short = json!({"models": ["gpt-4o-mini"], "ttl": "2s", "max_ttl": "1m"});
    assert_eq!(
        second
            .admin("POST", "/v1/litellm/roles/short", Some(&short))
            .await
            .status,
        200
    );
    let roles = second.admin("LIST", "/v1/litellm/roles", None).await;
    assert_eq!(roles.json()["data"]["keys"], json!(["dev", "short"]));

    // Issue from both hosts at once.
    let hosts = [&first, &second];
    let mut issued = Vec::new();
    let requests =
        (0..40).map(|index| hosts[index % 2].admin("GET", "/v1/litellm/creds/dev", None));
    for reply in futures::future::join_all(requests).await {
        assert_eq!(reply.status, 200, "{}", reply.text());
        issued.push(reply.json()["lease_id"].as_str().unwrap().to_owned());
    }
    let short_requests =
        (0..10).map(|index| hosts[index % 2].admin("GET", "/v1/litellm/creds/short", None));
    for reply in futures::future::join_all(short_requests).await {
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(issued.iter().collect::<BTreeSet<_>>().len(), 40);

    // Each of the first ten leases is renewed on one host and revoked on the other at once.
    // Both hosts' tidy timers run meanwhile and end the short leases.
    let (first_ref, second_ref) = (&first, &second);
    let races = issued[..10].iter().map(|lease| async move {
        let renew_body = json!({"lease_id": lease, "increment": "30m"});
        let revoke_body = json!({"lease_id": lease});
        let (renew, revoke) = tokio::join!(
            first_ref.admin("PUT", "/v1/sys/leases/renew", Some(&renew_body)),
            second_ref.admin("PUT", "/v1/sys/leases/revoke", Some(&revoke_body)),
        );
        assert_eq!(
            revoke.status,
            204,
            "revoke always wins in the end: {}",
            revoke.text()
        );
        assert!(
            renew.status == 200 || renew.status == 400 || renew.status == 404,
            "renew either ran first or found the lease being revoked: {} {}",
            renew.status,
            renew.text()
        );
    });
    futures::future::join_all(races).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let short_left = first
            .admin("LIST", "/v1/sys/leases/lookup/litellm/creds/short/", None)
            .await;
        if short_left.status == 404 || Instant::now() > deadline {
            assert_eq!(
                short_left.status, 404,
                "tidy on both hosts ended the short leases"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let stored = second.stored_leases("dev").await;
    let expected: BTreeSet<String> = issued[10..].iter().cloned().collect();
    assert_eq!(
        stored, expected,
        "the 30 leases that were not revoked remain"
    );
    assert_eq!(
        litellm.live_keys().len(),
        30,
        "one live key per remaining lease"
    );
    let deletes = litellm.requests_to("/key/delete").len();
    assert_eq!(
        deletes, 20,
        "each revoked or expired lease's key was deleted once"
    );
}

/// Two hosts that start at once on an empty Redis without a token: exactly one generates
/// and prints the admin token, and both accept it.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_starts_generate_one_token() {
    let Some(redis) = RedisServer::start("concurrent_starts_generate_one_token") else {
        return;
    };
    let url = redis.url();
    let starts: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                HostProcess::start(&["--redis-url", &url, "--tidy-interval", "0"]).unwrap()
            })
        })
        .collect();
    let hosts: Vec<HostProcess> = starts
        .into_iter()
        .map(|start| start.join().unwrap())
        .collect();

    let tokens: Vec<String> = hosts
        .iter()
        .flat_map(|host| {
            host.stdout()
                .split_whitespace()
                .filter(|word| word.starts_with("lsa."))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        tokens.len(),
        1,
        "exactly one host printed a token: {tokens:?}"
    );
    for host in &hosts {
        let reply = host
            .call(&tokens[0], "LIST", "/v1/litellm/roles", None)
            .await;
        assert_eq!(reply.status, 404, "{}", reply.text());
    }
}

/// A host whose Redis login failed, because the password changed, works again once Redis
/// accepts the login, without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn host_logs_in_again_after_a_rejected_login() {
    let Some(redis) = RedisServer::start_with(
        "host_logs_in_again_after_a_rejected_login",
        &["--requirepass", "first-password"],
    ) else {
        return;
    };
    let url = format!("redis://:first-password@127.0.0.1:{}/0", redis.port);
    let host = HostProcess::start(&[
        "--redis-url",
        &url,
        "--admin-token",
        ADMIN,
        "--tidy-interval",
        "0",
    ])
    .unwrap();
    let reply = host.admin("LIST", "/v1/litellm/roles", None).await;
    assert_eq!(reply.status, 404, "{}", reply.text());

    redis.cli(&[
        "-a",
        "first-password",
        "config",
        "set",
        "requirepass",
        "second-password",
    ]);
    redis.cli(&["-a", "second-password", "client", "kill", "type", "normal"]);
    let reply = host.admin("LIST", "/v1/litellm/roles", None).await;
    assert_eq!(reply.status, 500, "{}", reply.text());

    redis.cli(&[
        "-a",
        "second-password",
        "config",
        "set",
        "requirepass",
        "first-password",
    ]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = host.admin("LIST", "/v1/litellm/roles", None).await;
        if reply.status == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still failing: {} {}",
            reply.status,
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        !host.logs().contains("first-password"),
        "the password is never logged"
    );
}
