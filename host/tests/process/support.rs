//! The host binary started as a child process on 127.0.0.1, with its own data directory,
//! JSON logs captured, and a client for its API.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use litellm_secrets_tests::http_client::{self, Reply};
use litellm_secrets_tests::secret_scan;
use serde_json::Value;

/// Admin token the tests give the host unless a test is about generated tokens.
pub const ADMIN: &str = "process-test-admin-token";

/// Maximum wait for a host to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Returns the arguments for a host on the data file `data`, with the test admin token and
/// the tidy timer off.
pub fn file_args(data: &str) -> Vec<&str> {
    vec![
        "--data",
        data,
        "--admin-token",
        ADMIN,
        "--tidy-interval",
        "0",
    ]
}

/// A directory under the system's temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let unique = NEXT.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("lse-host-{name}-{}-{unique}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating a temporary directory");
        Self(path)
    }

    /// Returns the path of the host's data file in this directory.
    pub fn data_file(&self) -> String {
        self.0.join("data.redb").display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running host process. Dropping it kills the process.
pub struct HostProcess {
    child: Child,
    address: SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// Time from spawning the process to its "serving" log line.
    pub startup: Duration,
}

impl HostProcess {
    /// Starts `serve` on a free loopback port with `args` added, and waits until it serves.
    pub fn start(args: &[&str]) -> anyhow::Result<Self> {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_litellm-secrets-host"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .env_remove("LITELLM_SECRETS_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = capture(child.stdout.take().expect("piped stdout"));
        let stderr = capture(child.stderr.take().expect("piped stderr"));

        let address = loop {
            if let Some(address) = serving_address(&stderr.lock().unwrap()) {
                break address;
            }
            if let Some(status) = child.try_wait()? {
                std::thread::sleep(Duration::from_millis(100));
                anyhow::bail!(
                    "the host exited with {status} before serving:\n{}",
                    stderr.lock().unwrap()
                );
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                anyhow::bail!("the host did not serve within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(Self {
            child,
            address,
            stdout,
            stderr,
            startup: started.elapsed(),
        })
    }

    /// Runs the binary with `args` to completion and returns its status, stdout and stderr.
    pub fn run_to_end(args: &[&str]) -> (ExitStatus, String, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_litellm-secrets-host"))
            .args(args)
            .env_remove("LITELLM_SECRETS_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .output()
            .expect("running the host binary");
        (
            output.status,
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Everything the host wrote to stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything the host logged so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for the exit, at most `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-s", "TERM", &pid]).status();
        assert!(
            sent.is_ok_and(|status| status.success()),
            "kill -s TERM {pid}"
        );
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the host") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the host did not stop within {timeout:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the host with SIGKILL, as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL to the host");
        self.child.wait().expect("reaping the host");
    }

    /// Sends `method path` with the admin token and an optional JSON body.
    pub async fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        self.call(ADMIN, method, path, body).await
    }

    /// Writes the config for the LiteLLM at `url` with `master_key`, and expects 204.
    pub async fn write_config(&self, url: &str, master_key: &str) {
        secret_scan::note_secret(master_key);
        let body = serde_json::json!({ "url": url, "master_key": master_key });
        let reply = self.admin("POST", "/v1/litellm/config", Some(&body)).await;
        assert_eq!(reply.status, 204, "{}", reply.text());
    }

    /// Looks up `lease_id` with the admin token.
    pub async fn lookup_lease(&self, lease_id: &str) -> Reply {
        let body = serde_json::json!({ "lease_id": lease_id });
        self.admin("PUT", "/v1/sys/leases/lookup", Some(&body))
            .await
    }

    /// Lists the ids of the leases stored for `role`.
    pub async fn stored_leases(&self, role: &str) -> BTreeSet<String> {
        let prefix = format!("litellm/creds/{role}/");
        let reply = self
            .admin("LIST", &format!("/v1/sys/leases/lookup/{prefix}"), None)
            .await;
        let Some(keys) = reply.json()["data"]["keys"].as_array().cloned() else {
            return BTreeSet::new();
        };
        keys.iter()
            .map(|id| format!("{prefix}{}", id.as_str().expect("lease ids are strings")))
            .collect()
    }

    /// Sends `method path` with `token` and an optional JSON body.
    pub async fn call(&self, token: &str, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let reply = http_client::send(method, &format!("{}{path}", self.url()), token, body)
            .await
            .unwrap_or_else(|error| panic!("{method} {path} failed: {error:#}"));
        let own_key = reply.json()["data"]["key"].as_str().map(str::to_owned);
        if let Some(key) = &own_key {
            secret_scan::note_minted(key);
        }
        secret_scan::check("an HTTP response", &reply.text(), own_key.as_deref());
        reply
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !std::thread::panicking() {
            secret_scan::note_secret(ADMIN);
            secret_scan::check("the host's log", &self.logs(), None);
        }
    }
}

/// Copies a child's output into a shared string on a thread of its own.
fn capture(stream: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let mut sink = sink.lock().unwrap();
            sink.push_str(&line);
            sink.push('\n');
        }
    });
    text
}

/// Returns the address in the "serving the HTTP API" log line, once it is there.
fn serving_address(logs: &str) -> Option<SocketAddr> {
    logs.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["fields"]["message"] == "serving the HTTP API")
        .and_then(|event| event["fields"]["address"].as_str()?.parse().ok())
}

/// JSON log events whose message is `message`.
pub fn events(logs: &str, message: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["fields"]["message"] == message)
        .collect()
}
