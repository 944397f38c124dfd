//! The harness's secret scan, which checks every engine result, HTTP response and log in
//! this test process, itself fails on a leak.

use std::panic::catch_unwind;

use litellm_secrets_tests::fixture::{Fixture, MASTER_KEY};
use litellm_secrets_tests::secret_scan;

#[tokio::test(flavor = "multi_thread")]
async fn secret_scan_catches_leaks() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["gpt-4o-mini"], "1h", "24h").await;
    let credential = fixture.issue("dev").await;
    let key = credential.key.clone();

    let other_response = format!(r#"{{"data":{{"note":"{key}"}}}}"#);
    let leaked_key =
        catch_unwind(|| secret_scan::check("a planted response", &other_response, None));
    assert!(
        leaked_key.is_err(),
        "a minted key in another response passed the scan"
    );

    let log_line = format!("calling LiteLLM with Bearer {MASTER_KEY}");
    let leaked_master = catch_unwind(|| secret_scan::check("a planted log line", &log_line, None));
    assert!(
        leaked_master.is_err(),
        "the master key in a log line passed the scan"
    );

    let own_response = format!(r#"{{"data":{{"key":"{key}"}}}}"#);
    secret_scan::check("its own creds response", &own_response, Some(&key));

    let (checked, minted) = secret_scan::counts();
    println!(
        "secret scan: {checked} texts checked, {minted} minted keys known in this process so far"
    );
}
