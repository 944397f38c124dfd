//! Clients and upstreams that misbehave: a body that never arrives, a request without a
//! Host header, a tidy run stuck on LiteLLM at shutdown, a stdout that cannot take the
//! admin token, and settings that cannot work.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use litellm_secrets_tests::clock::Clock;
use litellm_secrets_tests::fixture::MASTER_KEY;
use litellm_secrets_tests::litellm_double::{LiteLlmDouble, Reply};
use serde_json::json;

use crate::support::{ADMIN, HostProcess, TempDir, events, file_args};

/// Sends raw bytes on a new connection and returns everything read until the server
/// closes it or 10 seconds pass.
fn raw_exchange(url: &str, request: &[u8]) -> String {
    let address = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

/// With every instance slot taken by a request whose body never comes, other requests
/// are still served: bodies are read before a request takes an instance.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_bodies_hold_no_instance() {
    let dir = TempDir::new("stalled");
    let data = dir.data_file();
    let args = [&file_args(&data)[..], &["--max-concurrency", "1"]].concat();
    let host = HostProcess::start(&args).unwrap();
    let address = host.url().trim_start_matches("http://").to_owned();
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(&address).unwrap();
        let head = "POST /v1/litellm/roles/dev HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n";
        stream.write_all(head.as_bytes()).unwrap();
        stalled.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        host.admin("LIST", "/v1/litellm/roles", None),
    )
    .await
    .expect("a request is served while others stall");
    assert_eq!(reply.status, 404, "{}", reply.text());
    drop(stalled);
}

/// An HTTP/1.0 request without a Host header, as simple health checkers send, is served,
/// and a Host header that is not text gets 400, neither with an error in the log.
#[test]
fn request_without_host_is_served() {
    let dir = TempDir::new("no-host");
    let data = dir.data_file();
    let host = HostProcess::start(&file_args(&data)).unwrap();
    let response = raw_exchange(&host.url(), b"GET /v1/sys/health HTTP/1.0\r\n\r\n");
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    assert!(response.contains("\"sealed\":false"), "{response}");
    assert!(
        !host.logs().contains("\"level\":\"ERROR\""),
        "{}",
        host.logs()
    );

    let response = raw_exchange(
        &host.url(),
        b"GET /v1/sys/health HTTP/1.1\r\nHost: \xff\xfe\r\nConnection: close\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(
        response.contains("the Host header is not valid text"),
        "{response}"
    );
    assert!(
        !host.logs().contains("\"level\":\"ERROR\""),
        "{}",
        host.logs()
    );
}

/// SIGTERM while tidy waits on a LiteLLM that does not answer: the host still exits
/// within the shutdown timeout, and the next start revokes what was left.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_bounds_a_stuck_tidy() {
    let dir = TempDir::new("stuck-tidy");
    let data = dir.data_file();
    let litellm = LiteLlmDouble::start(MASTER_KEY, Clock::new())
        .await
        .unwrap();
    let args = [
        "--data",
        &data,
        "--admin-token",
        ADMIN,
        "--tidy-interval",
        "1s",
        "--shutdown-timeout",
        "2s",
        "--litellm-timeout",
        "30s",
    ];
    let mut host = HostProcess::start(&args).unwrap();
    host.write_config(&litellm.url(), MASTER_KEY).await;
    let role = json!({"models": ["m"], "ttl": "1s", "max_ttl": "1m"});
    assert_eq!(
        host.admin("POST", "/v1/litellm/roles/brief", Some(&role))
            .await
            .status,
        200
    );
    for _ in 0..3 {
        let creds = host.admin("GET", "/v1/litellm/creds/brief", None).await;
        assert_eq!(creds.status, 200, "{}", creds.text());
        let stuck = Reply::Delayed {
            delay: Duration::from_secs(25),
            reply: Box::new(Reply::Normal),
        };
        litellm.script("/key/delete", stuck);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while litellm.requests_to("/key/delete").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "tidy never called /key/delete"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let status = tokio::task::spawn_blocking(move || {
        let status = host.terminate(Duration::from_secs(10));
        (status, host)
    })
    .await
    .unwrap();
    let (status, host) = status;
    assert!(status.success(), "{status}");
    let logs = host.logs();
    assert_eq!(
        events(
            &logs,
            "a tidy run was still in progress at the shutdown timeout; the next start resumes it"
        )
        .len(),
        1,
        "{logs}"
    );
}

/// Health checks have instances of their own: with the only request instance waiting on
/// LiteLLM, a health check still gets its answer first.
#[tokio::test(flavor = "multi_thread")]
async fn health_answers_while_litellm_stalls() {
    let dir = TempDir::new("health-stall");
    let data = dir.data_file();
    let litellm = LiteLlmDouble::start(MASTER_KEY, Clock::new())
        .await
        .unwrap();
    let args = [
        "--data",
        &data,
        "--admin-token",
        ADMIN,
        "--max-concurrency",
        "1",
        "--tidy-interval",
        "0",
    ];
    let host = std::sync::Arc::new(HostProcess::start(&args).unwrap());
    host.write_config(&litellm.url(), MASTER_KEY).await;
    let role = json!({"models": ["m"], "ttl": "1h"});
    let reply = host
        .admin("POST", "/v1/litellm/roles/slow", Some(&role))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let stalled = Reply::Delayed {
        delay: Duration::from_secs(8),
        reply: Box::new(Reply::Normal),
    };
    litellm.script("/key/generate", stalled);
    let issuing = {
        let host = host.clone();
        tokio::spawn(async move { host.admin("GET", "/v1/litellm/creds/slow", None).await })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while litellm.requests_to("/key/generate").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the creds request never reached LiteLLM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let health = host.call("", "GET", "/v1/sys/health", None).await;
    assert_eq!(health.status, 200, "{}", health.text());
    assert!(
        !issuing.is_finished(),
        "the creds request finished before the health check"
    );
    let creds = issuing.await.unwrap();
    assert_eq!(creds.status, 200, "{}", creds.text());
}

/// A generated token that cannot be printed is not kept: the host exits with the fix.
#[test]
fn unprintable_admin_token_stops_the_host() {
    let dir = TempDir::new("closed-stdout");
    let data = dir.data_file();
    let mut child = Command::new(env!("CARGO_BIN_EXE_litellm-secrets-host"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            &data,
            "--tidy-interval",
            "0",
        ])
        .env_remove("LITELLM_SECRETS_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("printing the new admin token failed"),
        "{stderr}"
    );
    assert!(stderr.contains("--rotate-admin-token"), "{stderr}");

    let rotated = HostProcess::start(&["--data", &data, "--rotate-admin-token"]).unwrap();
    assert!(
        rotated.stdout().contains("lsa."),
        "a rotation prints a new token"
    );
}

/// A data file sealed with one encryption key does not start with another, or with none,
/// and the message names the options to fix it.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_encryption_key_stops_the_host() {
    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const OTHER: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
    let dir = TempDir::new("wrong-key");
    let data = dir.data_file();
    let litellm = LiteLlmDouble::start(MASTER_KEY, Clock::new())
        .await
        .unwrap();
    let sealed = [&file_args(&data)[..], &["--encryption-key", KEY]].concat();
    let mut host = HostProcess::start(&sealed).unwrap();
    host.write_config(&litellm.url(), MASTER_KEY).await;
    assert!(host.terminate(Duration::from_secs(10)).success());
    let stored = std::fs::read(&data).unwrap();
    assert!(
        !String::from_utf8_lossy(&stored).contains(MASTER_KEY),
        "the master key is sealed"
    );

    let start = |extra: &[&str]| {
        let args = [
            &["serve", "--listen", "127.0.0.1:0"][..],
            &file_args(&data),
            extra,
        ]
        .concat();
        HostProcess::run_to_end(&args)
    };
    let (status, _, stderr) = start(&["--encryption-key", OTHER]);
    assert!(!status.success());
    assert!(stderr.contains("was sealed with another key"), "{stderr}");
    assert!(
        stderr.contains("--encryption-key or LITELLM_SECRETS_ENCRYPTION_KEY"),
        "{stderr}"
    );
    let (status, _, stderr) = start(&[]);
    assert!(!status.success());
    assert!(stderr.contains("no encryption_key is set"), "{stderr}");

    let rotated = [
        &file_args(&data)[..],
        &["--encryption-key", OTHER, "--previous-encryption-key", KEY],
    ]
    .concat();
    let host = HostProcess::start(&rotated).unwrap();
    let reply = host.admin("GET", "/v1/litellm/config", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}
