//! Storage faults at every write of an operation. Issue, renew, revoke and tidy run once on a
//! healthy store to count their writes and deletes. Then each of those operations fails in
//! turn, once as a store error and once as a crash of the instance. After tidy recovers,
//! every lease has a live key, every key has a lease, no lease the client received is lost
//! before it expires, and the engine serves the next request.

use litellm_secrets_tests::fixture::Fixture;
use litellm_secrets_tests::host::{Credential, Error, TidyReport};
use litellm_secrets_tests::keyvalue::{Effect, Op};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Message of the injected store errors.
const FAULT_MESSAGE: &str = "injected storage failure";

/// Prefix of the master key and of every key the LiteLLM double mints. No error or log line
/// may contain it.
const SECRET_PREFIX: &str = "sk-";

/// Clock step of one recovery round, in seconds. It is longer than the pending grace period
/// (180 s with the default `litellm_timeout`), a revocation claim (600 s) and tidy's longest
/// retry delay (3600 s), so every record tidy deferred is due again after one step.
const RECOVERY_STEP_SECONDS: u64 = 3601;

/// Recovery rounds after which tidy counts as not converging.
const MAX_RECOVERY_ROUNDS: usize = 5;

/// Tidy calls per recovery round before a round counts as stuck. One call handles 500
/// records, and these cases file fewer than 30.
const MAX_TIDY_CALLS: usize = 10;

/// An engine function whose writes the tests fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Issue,
    Renew,
    Revoke,
    Tidy,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Issue => "issue",
            Operation::Renew => "renew",
            Operation::Revoke => "revoke",
            Operation::Tidy => "tidy",
        }
    }
}

/// A fixture ready for the operation.
struct Setup {
    fixture: Fixture,
    /// Credentials the client received earlier, which the operation must not lose.
    received: Vec<Credential>,
    /// The credential that the operation renews or revokes.
    target: Option<Credential>,
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_write_faults() {
    check_every_write_fault(Operation::Issue).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn renew_write_faults() {
    check_every_write_fault(Operation::Renew).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_write_faults() {
    check_every_write_fault(Operation::Revoke).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tidy_write_faults() {
    check_every_write_fault(Operation::Tidy).await;
}

/// Counts the operation's writes on a healthy store, then fails each of them with each
/// effect on a fresh fixture and checks the state after recovery.
async fn check_every_write_fault(operation: Operation) {
    let writes = count_writes(operation).await;
    assert!(
        !writes.is_empty(),
        "{} made no store writes",
        operation.name()
    );

    for (position, (op, key)) in writes.iter().enumerate() {
        // Faults count operations of their own kind, so the fault skips the earlier
        // operations of that kind.
        let skip = writes[..position]
            .iter()
            .filter(|(earlier, _)| earlier == op)
            .count();
        for effect in [Effect::Fail(FAULT_MESSAGE.to_owned()), Effect::Trap] {
            let case = format!(
                "{} with write {} of {} ({op:?} {key}) failing by {}",
                operation.name(),
                position + 1,
                writes.len(),
                effect_name(&effect)
            );
            run_with_fault(operation, position, (*op, key), skip, effect, &case).await;
        }
    }

    println!(
        "storage faults: {}, {} write positions x 2 effects, consistent after tidy",
        operation.name(),
        writes.len()
    );
}

fn effect_name(effect: &Effect) -> &'static str {
    match effect {
        Effect::Fail(_) => "a store error",
        Effect::Trap => "a crash",
    }
}

/// Returns the writes and deletes the operation makes on a healthy store, in order.
async fn count_writes(operation: Operation) -> Vec<(Op, String)> {
    let setup = prepare(operation).await;
    setup.fixture.host.kv.take_writes();
    let outcome = run(&setup, operation).await;
    assert!(
        matches!(outcome, Ok(Ok(_))),
        "{} failed on a healthy store: {outcome:?}",
        operation.name()
    );
    setup.fixture.host.kv.take_writes()
}

/// Runs the operation with its write at `position` failing, then recovers and checks.
async fn run_with_fault(
    operation: Operation,
    position: usize,
    (op, counted_key): (Op, &str),
    skip: usize,
    effect: Effect,
    case: &str,
) {
    let setup = prepare(operation).await;
    let fixture = &setup.fixture;
    let kv = &fixture.host.kv;
    kv.take_writes();
    kv.inject_after(op, "", effect.clone(), skip, 1);

    let outcome = run(&setup, operation).await;

    assert_eq!(kv.faults_left(), 0, "{case}: the fault never applied");
    kv.clear_faults();
    let writes = kv.take_writes();
    let faulted = writes.get(position).map(|(op, key)| (*op, key_shape(key)));
    assert_eq!(
        faulted,
        Some((op, key_shape(counted_key))),
        "{case}: the failed write differs from the counted one. Writes: {writes:?}"
    );

    let succeeded = matches!(outcome, Ok(Ok(_)));
    let issued = check_outcome(outcome, &effect, case);
    check_no_secret(&fixture.host.logs(), "the component's log", case);
    if operation == Operation::Revoke && succeeded {
        let target = setup.target.as_ref().expect("revoke has a target");
        check_revoked(fixture, target, case);
    }
    check_keys_tracked(fixture, case);

    recover(fixture, case).await;

    let mut received = setup.received.clone();
    received.extend(issued);
    check_consistent(fixture, &received, case);
    check_next_request(fixture, case).await;
}

/// Starts a fixture with the records the operation needs, on a clock aligned to the same
/// second of a minute in every run. The due index files records in buckets a minute wide,
/// so aligning keeps the number of buckets, and with it the number of tidy's writes, equal
/// between the counting run and the faulted runs.
async fn prepare(operation: Operation) -> Setup {
    let fixture = Fixture::start().await;
    let second = fixture.host.clock.now_seconds() % 60;
    fixture.host.clock.advance((70 - second) % 60);
    fixture.role("dev", &["m"], "24h", "48h").await;
    let bystander = fixture.issue("dev").await;

    match operation {
        Operation::Issue => Setup {
            fixture,
            received: vec![bystander],
            target: None,
        },
        Operation::Renew => {
            let target = fixture.issue("dev").await;
            Setup {
                fixture,
                received: vec![bystander, target.clone()],
                target: Some(target),
            }
        }
        Operation::Revoke => {
            let target = fixture.issue("dev").await;
            Setup {
                fixture,
                received: vec![bystander],
                target: Some(target),
            }
        }
        Operation::Tidy => {
            fixture.role("short", &["m"], "60s", "1h").await;
            let expired = fixture.issue("short").await;

            // An issuance that crashed after generate leaves a key and a pending entry for
            // tidy to clean up.
            fixture.host.kv.inject(Op::Write, "lease/", Effect::Trap, 1);
            let crashed = fixture.host.try_issue_credential("dev", None).await;
            assert!(crashed.is_err(), "the crash must trap: {crashed:?}");
            fixture.host.kv.clear_faults();

            // Past the lease's expiry, the pending grace period (180 s) and the 300 s
            // after which tidy retires a bucket of the due index, so tidy also retires.
            fixture.host.clock.advance(700);
            Setup {
                fixture,
                received: vec![bystander, expired],
                target: None,
            }
        }
    }
}

/// Runs the operation and returns the credential it issued, if any.
async fn run(
    setup: &Setup,
    operation: Operation,
) -> wasmtime::Result<Result<Option<Credential>, Error>> {
    let host = &setup.fixture.host;
    let target = || setup.target.as_ref().expect("the operation has a target");
    match operation {
        Operation::Issue => Ok(host.try_issue_credential("dev", None).await?.map(Some)),
        Operation::Renew => {
            let renewal = host
                .try_renew_lease(&target().lease_id, Some("30h"))
                .await?;
            Ok(renewal.map(|_| None))
        }
        Operation::Revoke => Ok(host
            .try_revoke_lease(&target().lease_id)
            .await?
            .map(|()| None)),
        Operation::Tidy => Ok(host.try_tidy().await?.map(|_| None)),
    }
}

/// Checks that a store error ended in a clear storage error and a crash in a trap, with
/// no secret in either, and returns the credential of a successful issue.
fn check_outcome(
    outcome: wasmtime::Result<Result<Option<Credential>, Error>>,
    effect: &Effect,
    case: &str,
) -> Option<Credential> {
    match outcome {
        Ok(Ok(issued)) => {
            assert_ne!(effect, &Effect::Trap, "{case}: a crash must trap");
            issued
        }
        Ok(Err(error)) => {
            assert_ne!(
                effect,
                &Effect::Trap,
                "{case}: a crash must trap, got {error:?}"
            );
            check_no_secret(&format!("{error:?}"), "the error", case);
            let Error::Storage(message) = &error else {
                panic!("{case}: expected a storage error, got {error:?}");
            };
            assert!(
                message.contains(FAULT_MESSAGE),
                "{case}: the error does not name the store's failure: {message}"
            );
            None
        }
        Err(trap) => {
            assert_eq!(effect, &Effect::Trap, "{case}: unexpected trap {trap:?}");
            let text = format!("{trap:?}");
            check_no_secret(&text, "the trap", case);
            assert!(
                text.contains("injected crash"),
                "{case}: the trap does not name the crash: {text}"
            );
            None
        }
    }
}

fn check_no_secret(text: &str, source: &str, case: &str) {
    assert!(
        !text.contains(SECRET_PREFIX),
        "{case}: {source} contains a key starting with {SECRET_PREFIX:?}"
    );
}

/// Checks that a revocation that returned success deleted the lease and its key.
fn check_revoked(fixture: &Fixture, credential: &Credential, case: &str) {
    let storage_key = lease_storage_key(&credential.lease_id);
    assert!(
        fixture.host.kv.get_text(&storage_key).is_none(),
        "{case}: revoke succeeded but lease {storage_key} is still stored"
    );
    let key = fixture.litellm.key_by_hash(&sha256_hex(&credential.key));
    assert!(
        key.is_some_and(|key| key.deleted),
        "{case}: revoke succeeded but the key of {} is still live",
        credential.lease_id
    );
}

/// Checks that every live key in LiteLLM has a lease or a pending entry, so tidy can find it.
fn check_keys_tracked(fixture: &Fixture, case: &str) {
    let leases = stored_records(fixture, "lease/");
    let pending = stored_records(fixture, "pending/");
    for key in fixture.litellm.live_keys() {
        let has_lease = leases
            .iter()
            .any(|(_, lease)| lease["token_hash"] == key.token.as_str());
        let has_pending = key
            .key_alias
            .as_deref()
            .is_some_and(|alias| pending.iter().any(|(_, entry)| entry["key_alias"] == alias));
        assert!(
            has_lease || has_pending,
            "{case}: key {:?} in LiteLLM has neither a lease nor a pending entry",
            key.key_alias
        );
    }
}

/// Moves the clock a step at a time and runs tidy until a step finds no work.
async fn recover(fixture: &Fixture, case: &str) {
    for _ in 0..MAX_RECOVERY_ROUNDS {
        fixture.host.clock.advance(RECOVERY_STEP_SECONDS);
        let mut work = 0;
        let mut complete = false;
        for _ in 0..MAX_TIDY_CALLS {
            let report = tidy(fixture, case).await;
            work += report.revoked_leases + report.cleaned_pending + report.failed;
            if report.complete {
                complete = true;
                break;
            }
        }
        assert!(
            complete,
            "{case}: tidy returned complete: false {MAX_TIDY_CALLS} times in a row"
        );
        if work == 0 {
            return;
        }
    }
    panic!("{case}: tidy still found work after {MAX_RECOVERY_ROUNDS} recovery rounds");
}

async fn tidy(fixture: &Fixture, case: &str) -> TidyReport {
    match fixture.host.try_tidy().await {
        Ok(Ok(report)) => report,
        other => panic!("{case}: tidy on the recovered store failed: {other:?}"),
    }
}

/// Checks the state after recovery. Every stored lease is unexpired and has a live key that
/// outlives it, and every live key has a lease. No pending entry is left. Each credential
/// the client received is either still stored or expired with its key deleted.
fn check_consistent(fixture: &Fixture, received: &[Credential], case: &str) {
    let now = fixture.host.clock.now_seconds();
    let leases = stored_records(fixture, "lease/");

    for (storage_key, lease) in &leases {
        let expires_at = lease["expires_at"].as_u64().expect("lease has expires_at");
        assert!(
            expires_at > now,
            "{case}: lease {storage_key} expired at {expires_at} and tidy kept it (now {now})"
        );
        let token_hash = lease["token_hash"].as_str().expect("lease has token_hash");
        let Some(key) = fixture.litellm.key_by_hash(token_hash) else {
            panic!("{case}: lease {storage_key} has no key in LiteLLM");
        };
        assert!(
            !key.deleted,
            "{case}: lease {storage_key} is stored but LiteLLM deleted its key"
        );
        assert!(
            key.expires
                .is_some_and(|key_expires| key_expires >= expires_at),
            "{case}: the key of lease {storage_key} expires at {:?}, before the lease at \
             {expires_at}",
            key.expires
        );
    }

    for key in fixture.litellm.live_keys() {
        assert!(
            leases
                .iter()
                .any(|(_, lease)| lease["token_hash"] == key.token.as_str()),
            "{case}: key {:?} in LiteLLM has no lease",
            key.key_alias
        );
    }
    assert_eq!(
        fixture.stored("pending/"),
        Vec::<String>::new(),
        "{case}: pending entries left after tidy"
    );

    for credential in received {
        let storage_key = lease_storage_key(&credential.lease_id);
        let token_hash = sha256_hex(&credential.key);
        match leases.iter().find(|(key, _)| *key == storage_key) {
            Some((_, lease)) => assert_eq!(
                lease["token_hash"],
                token_hash.as_str(),
                "{case}: lease {storage_key} names another key"
            ),
            None => {
                assert!(
                    credential.expires_at <= now,
                    "{case}: lease {} was lost before it expired",
                    credential.lease_id
                );
                let key = fixture.litellm.key_by_hash(&token_hash);
                assert!(
                    key.is_some_and(|key| key.deleted),
                    "{case}: lease {} is gone but its key is live",
                    credential.lease_id
                );
            }
        }
    }
}

/// Checks that a new credential can be issued and revoked on the recovered store.
async fn check_next_request(fixture: &Fixture, case: &str) {
    let credential = match fixture.host.try_issue_credential("dev", None).await {
        Ok(Ok(credential)) => credential,
        other => panic!("{case}: issue after recovery failed: {other:?}"),
    };
    match fixture.host.try_revoke_lease(&credential.lease_id).await {
        Ok(Ok(())) => {}
        other => panic!("{case}: revoke after recovery failed: {other:?}"),
    }
    check_revoked(fixture, &credential, case);
    assert_eq!(
        fixture.stored("pending/"),
        Vec::<String>::new(),
        "{case}: the issue after recovery left a pending entry"
    );
}

/// Returns the stored records under `prefix` with their storage keys.
fn stored_records(fixture: &Fixture, prefix: &str) -> Vec<(String, Value)> {
    fixture
        .stored(prefix)
        .into_iter()
        .map(|key| {
            let record = fixture
                .host
                .kv
                .get_json(&key)
                .unwrap_or_else(|| panic!("stored record {key} is not JSON"));
            (key, record)
        })
        .collect()
}

/// Returns `key` with its numeric and hex id segments replaced by `*`, so keys of two runs
/// compare equal: `due/29301234/count` becomes `due/*/count`.
fn key_shape(key: &str) -> String {
    key.split('/')
        .map(|segment| {
            if segment.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                "*"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Returns the storage key `lease/<role>/<id>` of a lease id `litellm/creds/<role>/<id>`.
fn lease_storage_key(lease_id: &str) -> String {
    let rest = lease_id
        .strip_prefix("litellm/creds/")
        .expect("lease id under the default mount");
    format!("lease/{rest}")
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
