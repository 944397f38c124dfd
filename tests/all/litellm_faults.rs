//! LiteLLM faults through the fault proxy, for each operation that calls LiteLLM. Every
//! fault gets a 502 or 504 that names its cause and contains no secret. No lease is lost,
//! no key is left once tidy has run, and the same request succeeds after the fault heals.

use std::collections::BTreeSet;

use futures::future::join_all;
use litellm_secrets_tests::fault_proxy::{Fault, FaultProxy};
use litellm_secrets_tests::fixture::{Fixture, MASTER_KEY};
use litellm_secrets_tests::host::TestHost;
use litellm_secrets_tests::http_api::ApiReply;
use litellm_secrets_tests::real_litellm::{real_litellm, unique};
use serde_json::{Value, json};

const ADMIN: &str = "faults-admin-token";
const ROLE: &str = "faulty";

/// `litellm_timeout` of the hosts under test, so stalls end quickly.
const TIMEOUT_SECONDS: u64 = 1;

/// The pending grace period at a 1 s timeout is 64 s; this passes it with room.
const PAST_GRACE_SECONDS: u64 = 600;

/// Requests each fault applies to, more than any retry loop makes.
const FAULT_TIMES: usize = 100;

/// An engine operation that calls LiteLLM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Issue,
    Renew,
    Revoke,
    WriteConfig,
}

impl Operation {
    /// Returns the LiteLLM route the operation calls.
    fn route(self) -> &'static str {
        match self {
            Self::Issue => "/key/generate",
            Self::Renew => "/key/update",
            Self::Revoke => "/key/delete",
            Self::WriteConfig => "/key/list",
        }
    }
}

/// A fault, or the listener closed (`None`), with the status and a fragment of the error
/// message each must produce.
#[derive(Clone, Copy, Debug)]
struct Case {
    fault: Option<Fault>,
    status: u16,
    cause: &'static str,
}

fn cases() -> Vec<Case> {
    let case = |fault, status, cause| Case {
        fault,
        status,
        cause,
    };
    vec![
        case(None, 502, "connection refused"),
        case(
            Some(Fault::Reset { forward: false }),
            502,
            "connection closed",
        ),
        case(
            Some(Fault::Reset { forward: true }),
            502,
            "connection closed",
        ),
        case(
            Some(Fault::Stall { forward: true }),
            504,
            "did not respond in time",
        ),
        case(Some(Fault::SlowBody), 504, "did not finish its response"),
        case(
            Some(Fault::Status {
                status: 500,
                forward: false,
            }),
            502,
            "returned HTTP 500",
        ),
        case(
            Some(Fault::Status {
                status: 502,
                forward: true,
            }),
            502,
            "returned HTTP 502",
        ),
        case(Some(Fault::Truncated), 502, "before it was complete"),
        case(Some(Fault::NotJson { forward: false }), 502, "JSON"),
        case(Some(Fault::NotJson { forward: true }), 502, "JSON"),
        case(Some(Fault::Endless), 502, "exceeded the limit"),
        case(Some(Fault::Redirect), 502, "redirect"),
    ]
}

/// A host whose config points at a fault proxy in front of the LiteLLM double.
struct Bench {
    fixture: Fixture,
    proxy: FaultProxy,
    /// Every response body the API sent, with the plaintext keys it was allowed to hold.
    replies: Vec<(String, String, Vec<String>)>,
}

impl Bench {
    async fn start() -> Self {
        let host = TestHost::new()
            .with_admin_token(ADMIN)
            .with_setting("litellm_timeout", &format!("{TIMEOUT_SECONDS}s"));
        let fixture = Fixture::start_with(host).await;
        let proxy = FaultProxy::start(&fixture.litellm.url())
            .await
            .expect("starting the fault proxy");
        let mut bench = Self {
            fixture,
            proxy,
            replies: Vec::new(),
        };

        let reply = bench.write_config().await;
        assert_eq!(
            reply.status,
            204,
            "pointing the config at the proxy: {}",
            reply.text()
        );
        let role = json!({"models": ["gpt-4o-mini"], "ttl": "1h", "max_ttl": "24h"});
        let reply = bench
            .call("POST", &format!("/v1/litellm/roles/{ROLE}"), Some(&role))
            .await;
        assert_eq!(reply.status, 200, "writing the role: {}", reply.text());
        bench
    }

    async fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> ApiReply {
        let reply = self
            .fixture
            .host
            .http(method, path, Some(ADMIN), body)
            .await;
        let allowed = minted_key(&reply).into_iter().collect();
        self.replies
            .push((format!("{method} {path}"), reply.text(), allowed));
        reply
    }

    async fn write_config(&mut self) -> ApiReply {
        let body = json!({"url": self.proxy.url(), "master_key": MASTER_KEY});
        self.call("POST", "/v1/litellm/config", Some(&body)).await
    }

    async fn issue(&mut self) -> ApiReply {
        self.call("GET", &format!("/v1/litellm/creds/{ROLE}"), None)
            .await
    }

    async fn renew(&mut self, lease_id: &str) -> ApiReply {
        let body = json!({"lease_id": lease_id, "increment": "2h"});
        self.call("PUT", "/v1/sys/leases/renew", Some(&body)).await
    }

    async fn revoke(&mut self, lease_id: &str) -> ApiReply {
        let body = json!({"lease_id": lease_id});
        self.call("PUT", "/v1/sys/leases/revoke", Some(&body)).await
    }

    async fn perform(&mut self, operation: Operation, lease_id: &str) -> ApiReply {
        match operation {
            Operation::Issue => self.issue().await,
            Operation::Renew => self.renew(lease_id).await,
            Operation::Revoke => self.revoke(lease_id).await,
            Operation::WriteConfig => self.write_config().await,
        }
    }

    fn lease_hashes(&self) -> BTreeSet<String> {
        self.fixture
            .stored("lease/")
            .iter()
            .filter_map(|key| self.fixture.host.kv.get_json(key))
            .map(|lease| lease["token_hash"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    fn live_key_hashes(&self) -> BTreeSet<String> {
        self.fixture
            .litellm
            .live_keys()
            .into_iter()
            .map(|row| row.token)
            .collect()
    }

    /// Runs tidy past the pending grace period until it reports nothing left to do.
    async fn tidy_past_grace(&self) {
        self.fixture.host.clock.advance(PAST_GRACE_SECONDS);
        for _ in 0..10 {
            let report = self.fixture.host.try_tidy().await.expect("tidy ran");
            let report = report.expect("tidy succeeded");
            if report.complete && report.failed == 0 {
                return;
            }
        }
        panic!("tidy did not complete in 10 calls");
    }

    /// Asserts that no response body and no log line contains the master key or a minted key,
    /// except each creds response its own key.
    fn assert_no_secret_leaked(&self, label: &str) {
        let minted: Vec<String> = self
            .replies
            .iter()
            .flat_map(|(_, _, keys)| keys.clone())
            .collect();
        for (request, text, allowed) in &self.replies {
            assert!(
                !text.contains(MASTER_KEY),
                "{label}: {request} returned the master key"
            );
            for key in minted.iter().filter(|key| !allowed.contains(key)) {
                assert!(
                    !text.contains(key.as_str()),
                    "{label}: {request} returned another request's key"
                );
            }
        }
        let logs = self.fixture.host.logs();
        assert!(
            !logs.contains(MASTER_KEY),
            "{label}: the logs hold the master key"
        );
        for key in &minted {
            assert!(
                !logs.contains(key.as_str()),
                "{label}: the logs hold a minted key"
            );
        }
    }
}

fn minted_key(reply: &ApiReply) -> Option<String> {
    serde_json::from_slice::<Value>(&reply.body)
        .ok()?
        .pointer("/data/key")?
        .as_str()
        .map(str::to_owned)
}

fn lease_id_of(reply: &ApiReply) -> String {
    reply.json()["lease_id"]
        .as_str()
        .expect("lease_id in the creds response")
        .to_owned()
}

async fn break_litellm(bench: &Bench, route: &str, fault: Option<Fault>) {
    match fault {
        Some(fault) => bench.proxy.inject(route, fault, FAULT_TIMES),
        None => bench.proxy.refuse_connections().await,
    }
}

/// Runs `operation` under `case`'s fault and checks the reply, the state right after it,
/// the recovery and the state after tidy. Returns the error message for the report.
async fn run_case(operation: Operation, case: Case) -> String {
    let label = format!("{operation:?} under {:?}", case.fault);
    let mut bench = Bench::start().await;
    let issued = bench.issue().await;
    assert_eq!(
        issued.status,
        200,
        "{label}: issuing the first lease: {}",
        issued.text()
    );
    let lease_id = lease_id_of(&issued);
    let lease_key = format!(
        "lease/{ROLE}/{}",
        lease_id.rsplit('/').next().unwrap_or_default()
    );
    let lease_before = bench.fixture.host.kv.get_text(&lease_key);
    let stored_before = bench.fixture.host.kv.snapshot();

    break_litellm(&bench, operation.route(), case.fault).await;
    let reply = bench.perform(operation, &lease_id).await;
    assert_eq!(
        reply.status,
        case.status,
        "{label}: status, body {}",
        reply.text()
    );
    let message = reply.errors().join("; ");
    assert!(
        message.contains(case.cause),
        "{label}: the error does not name the cause {:?}: {message}",
        case.cause
    );
    assert!(
        message.contains(operation.route()),
        "{label}: the error does not name the route: {message}"
    );

    match operation {
        Operation::Issue | Operation::Renew => assert_eq!(
            bench.fixture.host.kv.get_text(&lease_key),
            lease_before,
            "{label}: the existing lease changed"
        ),
        Operation::Revoke => assert!(
            bench.fixture.host.kv.get_text(&lease_key).is_some(),
            "{label}: the lease was dropped although its key may still work"
        ),
        Operation::WriteConfig => assert_eq!(
            bench.fixture.host.kv.snapshot(),
            stored_before,
            "{label}: a failed config write changed the stored state"
        ),
    }
    let leases_after_fault = bench.fixture.stored("lease/").len();
    assert_eq!(leases_after_fault, 1, "{label}: leases after the fault");

    bench.proxy.heal().await.expect("healing the proxy");
    let retry = bench.perform(operation, &lease_id).await;
    let expected = match operation {
        Operation::Issue | Operation::Renew => 200,
        Operation::Revoke | Operation::WriteConfig => 204,
    };
    assert_eq!(
        retry.status,
        expected,
        "{label}: after healing: {}",
        retry.text()
    );

    bench.tidy_past_grace().await;
    assert_eq!(
        bench.fixture.stored("pending/"),
        Vec::<String>::new(),
        "{label}: pending entries after tidy"
    );
    assert_eq!(
        bench.live_key_hashes(),
        bench.lease_hashes(),
        "{label}: LiteLLM's keys differ from the stored leases after tidy"
    );
    let expected_leases = match operation {
        Operation::Issue => 2,
        Operation::Renew | Operation::WriteConfig => 1,
        Operation::Revoke => 0,
    };
    assert_eq!(
        bench.fixture.stored("lease/").len(),
        expected_leases,
        "{label}: leases after recovery"
    );

    let reply = bench
        .call(
            "PUT",
            &format!("/v1/sys/leases/revoke-prefix/litellm/creds/{ROLE}"),
            None,
        )
        .await;
    assert_eq!(
        reply.status,
        204,
        "{label}: revoke-prefix: {}",
        reply.text()
    );
    assert!(
        bench.live_key_hashes().is_empty(),
        "{label}: keys after revoke-prefix"
    );
    bench.assert_no_secret_leaked(&label);
    message
}

/// Runs every case for `operation` at once and prints one line per case.
async fn run_operation(operation: Operation) {
    let cases = cases();
    let messages = join_all(cases.iter().map(|case| run_case(operation, *case))).await;
    for (case, message) in cases.iter().zip(&messages) {
        let fault = case
            .fault
            .map_or_else(|| "Refused".to_owned(), |fault| format!("{fault:?}"));
        println!(
            "litellm fault: {operation:?}, {fault} -> {}: {message}",
            case.status
        );
    }
    println!(
        "litellm faults: {operation:?}, {} faults, clear errors, keys equal leases after tidy",
        cases.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_under_litellm_faults() {
    run_operation(Operation::Issue).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn renew_under_litellm_faults() {
    run_operation(Operation::Renew).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_under_litellm_faults() {
    run_operation(Operation::Revoke).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn config_write_under_litellm_faults() {
    run_operation(Operation::WriteConfig).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn generate_with_foreign_token_is_rejected() {
    let mut bench = Bench::start().await;
    bench.proxy.inject("/key/generate", Fault::ForeignToken, 1);

    let reply = bench.issue().await;
    assert_eq!(reply.status, 502, "issue: {}", reply.text());
    let message = reply.errors().join("; ");
    assert!(
        message.contains("token is not the SHA-256 hash of its key"),
        "message: {message}"
    );
    assert!(
        bench.fixture.stored("lease/").is_empty(),
        "a lease was stored"
    );

    bench.tidy_past_grace().await;
    assert!(bench.live_key_hashes().is_empty(), "the key outlived tidy");
    assert!(
        bench.fixture.stored("pending/").is_empty(),
        "pending entries after tidy"
    );
    bench.assert_no_secret_leaked("foreign token");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_prefix_keeps_the_cause_status() {
    let mut bench = Bench::start().await;
    bench.issue().await;
    bench.issue().await;
    let path = format!("/v1/sys/leases/revoke-prefix/litellm/creds/{ROLE}");

    bench
        .proxy
        .inject("/key/delete", Fault::Stall { forward: false }, FAULT_TIMES);
    let reply = bench.call("PUT", &path, None).await;
    assert_eq!(
        reply.status,
        504,
        "every delete timed out: {}",
        reply.text()
    );
    let errors = reply.errors();
    assert_eq!(errors.len(), 2, "one error per lease: {errors:?}");
    assert!(
        errors
            .iter()
            .all(|error| error.contains("did not respond in time")),
        "errors: {errors:?}"
    );
    assert_eq!(
        bench.fixture.stored("lease/").len(),
        2,
        "leases after the timeouts"
    );

    bench.proxy.heal().await.expect("healing the proxy");
    let reply = bench.call("PUT", &path, None).await;
    assert_eq!(reply.status, 204, "after healing: {}", reply.text());
    assert!(
        bench.live_key_hashes().is_empty(),
        "keys after revoke-prefix"
    );
    assert!(
        bench.fixture.stored("lease/").is_empty(),
        "leases after revoke-prefix"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_follow_retry_after() {
    let mut bench = Bench::start().await;
    let attempts = |bench: &Bench, route: &str| {
        bench
            .proxy
            .exchanges()
            .iter()
            .filter(|exchange| exchange.path == route)
            .count()
    };

    bench
        .proxy
        .inject("/key/generate", Fault::RateLimited { retry_after: 1 }, 1);
    let issued = bench.issue().await;
    assert_eq!(issued.status, 200, "issue after one 429: {}", issued.text());
    assert_eq!(attempts(&bench, "/key/generate"), 2, "generate attempts");
    let lease_id = lease_id_of(&issued);

    bench
        .proxy
        .inject("/key/update", Fault::RateLimited { retry_after: 60 }, 1);
    let reply = bench.renew(&lease_id).await;
    assert_eq!(
        reply.status,
        502,
        "renew after a 429 for 60 s: {}",
        reply.text()
    );
    let message = reply.errors().join("; ");
    assert!(
        message.contains("returned HTTP 429") && message.contains("retry after 60s"),
        "message: {message}"
    );
    assert_eq!(
        attempts(&bench, "/key/update"),
        1,
        "no retry within the request"
    );

    bench
        .proxy
        .inject("/key/delete", Fault::RateLimited { retry_after: 1 }, 1);
    let reply = bench.revoke(&lease_id).await;
    assert_eq!(reply.status, 204, "revoke after one 429: {}", reply.text());
    assert_eq!(attempts(&bench, "/key/delete"), 2, "delete attempts");
    assert!(bench.live_key_hashes().is_empty(), "keys after the revoke");
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_faults_are_retried() {
    let mut bench = Bench::start().await;
    let lease_id = lease_id_of(&bench.issue().await);
    let transient = Fault::Status {
        status: 502,
        forward: false,
    };

    bench.proxy.inject("/key/update", transient, 1);
    let reply = bench.renew(&lease_id).await;
    assert_eq!(reply.status, 200, "renew after one 502: {}", reply.text());

    bench
        .proxy
        .inject("/key/delete", Fault::Reset { forward: false }, 2);
    let reply = bench.revoke(&lease_id).await;
    assert_eq!(
        reply.status,
        204,
        "revoke after two resets: {}",
        reply.text()
    );

    let attempts = |route: &str| {
        bench
            .proxy
            .exchanges()
            .iter()
            .filter(|exchange| exchange.path == route)
            .count()
    };
    assert_eq!(attempts("/key/update"), 2, "update attempts");
    assert_eq!(attempts("/key/delete"), 3, "delete attempts");
    assert!(bench.live_key_hashes().is_empty(), "keys after the revoke");
    assert!(
        bench.fixture.stored("lease/").is_empty(),
        "leases after the revoke"
    );
}

/// Faults that strike after the real LiteLLM created the key: each issuance fails, and
/// tidy deletes every key that was created, so only the leases' keys remain.
#[tokio::test(flavor = "multi_thread")]
async fn real_litellm_lost_generate_responses() {
    let Some(real) = real_litellm("real_litellm_lost_generate_responses") else {
        return;
    };
    let host = TestHost::new()
        .with_admin_token(ADMIN)
        .with_setting("litellm_timeout", "3s");
    let proxy = FaultProxy::start(&real.url)
        .await
        .expect("starting the fault proxy");
    let prefix = format!("fault{}", unique(8));
    let admin = |method: &'static str, path: String, body: Option<Value>| {
        let host = host.clone();
        async move { host.http(method, &path, Some(ADMIN), body.as_ref()).await }
    };

    let config = json!({"url": proxy.url(), "master_key": real.master_key});
    let reply = admin("POST", "/v1/litellm/config".into(), Some(config)).await;
    assert_eq!(reply.status, 204, "config: {}", reply.text());
    let role = json!({"models": ["gpt-4o-mini"], "ttl": "1h", "key_alias_prefix": prefix});
    let reply = admin("POST", format!("/v1/litellm/roles/{ROLE}"), Some(role)).await;
    assert_eq!(reply.status, 200, "role: {}", reply.text());

    let faults = [
        Fault::Reset { forward: true },
        Fault::Stall { forward: true },
        Fault::Status {
            status: 502,
            forward: true,
        },
        Fault::Truncated,
        Fault::NotJson { forward: true },
        Fault::SlowBody,
        Fault::Endless,
    ];
    let mut bodies = Vec::new();
    for fault in faults {
        proxy.inject("/key/generate", fault, 1);
        let reply = admin("GET", format!("/v1/litellm/creds/{ROLE}"), None).await;
        assert!(
            matches!(reply.status, 502 | 504),
            "issue under {fault:?}: {}",
            reply.text()
        );
        bodies.push(reply.text());
    }
    let created = real.live_aliases(&prefix).await.len();

    let reply = admin("GET", format!("/v1/litellm/creds/{ROLE}"), None).await;
    assert_eq!(reply.status, 200, "issue after healing: {}", reply.text());
    let kept_alias = format!(
        "{prefix}-{ROLE}-{}",
        lease_id_of(&reply).rsplit('/').next().unwrap()
    );

    host.clock.advance(PAST_GRACE_SECONDS);
    let report = host
        .try_tidy()
        .await
        .expect("tidy ran")
        .expect("tidy succeeded");
    assert!(report.complete, "tidy stopped early: {report:?}");
    let remaining = real.live_aliases(&prefix).await;
    println!(
        "real litellm faults: {} lost generate responses, {created} keys before tidy, {} \
         cleaned by tidy, {} left",
        faults.len(),
        report.cleaned_pending,
        remaining.len()
    );
    assert_eq!(
        remaining,
        BTreeSet::from([kept_alias]),
        "keys left in LiteLLM after tidy"
    );

    let path = format!("/v1/sys/leases/revoke-prefix/litellm/creds/{ROLE}");
    let reply = admin("PUT", path, None).await;
    assert_eq!(reply.status, 204, "revoke-prefix: {}", reply.text());
    assert!(
        real.live_aliases(&prefix).await.is_empty(),
        "keys after revoke-prefix"
    );
    for body in bodies {
        assert!(
            !body.contains(&real.master_key),
            "an error holds the master key"
        );
    }
    assert!(
        !host.logs().contains(&real.master_key),
        "the logs hold the master key"
    );
}
