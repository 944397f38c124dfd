//! Command line: every option also reads an environment variable, so the host runs the
//! same under a shell, systemd or a container.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Runs the LiteLLM dynamic secrets engine: a Vault-compatible HTTP API that mints LiteLLM
/// virtual keys bound to leases, and revokes them when the leases end.
#[derive(Debug, Parser)]
#[command(name = "litellm-secrets-host", version, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serves the HTTP API until SIGTERM or SIGINT, and runs tidy on a timer.
    Serve(ServeArgs),
}

/// Options of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Keep it on loopback unless a TLS proxy is in front.
    #[arg(long, env = "LITELLM_SECRETS_LISTEN", default_value = "127.0.0.1:8200")]
    pub listen: SocketAddr,

    /// File that contains the engine's data (created with mode 0600 if missing). Ignored
    /// when --redis-url is set.
    #[arg(
        long,
        env = "LITELLM_SECRETS_DATA",
        default_value = "litellm-secrets.redb"
    )]
    pub data: PathBuf,

    /// Keep the data in Redis instead of a file, so that several hosts share it, e.g.
    /// redis://127.0.0.1:6379/0.
    #[arg(long, env = "LITELLM_SECRETS_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key the host writes.
    #[arg(
        long,
        env = "LITELLM_SECRETS_REDIS_PREFIX",
        default_value = "litellm-secrets"
    )]
    pub redis_prefix: String,

    /// Admin token of the HTTP API. Without it the host uses the token whose digest it
    /// stored, or on first start generates one, prints it once and stores its digest. Prefer
    /// the variable: other users can read arguments in `ps`.
    #[arg(long, env = "LITELLM_SECRETS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Replace the stored admin token with a new one, printed once.
    #[arg(long, conflicts_with = "admin_token")]
    pub rotate_admin_token: bool,

    /// Key that stored master keys are encrypted with: 64 hex digits (openssl rand -hex
    /// 32). Without it master keys are stored in plaintext. Prefer the variable: other users
    /// can read arguments in `ps`.
    #[arg(long, env = "LITELLM_SECRETS_ENCRYPTION_KEY", hide_env_values = true)]
    pub encryption_key: Option<String>,

    /// The encryption key before a rotation, still accepted for opening sealed master
    /// keys until the next config write re-seals them.
    #[arg(
        long,
        env = "LITELLM_SECRETS_PREVIOUS_ENCRYPTION_KEY",
        hide_env_values = true
    )]
    pub previous_encryption_key: Option<String>,

    /// First segment of API paths and lease ids.
    #[arg(long, env = "LITELLM_SECRETS_MOUNT", default_value = "litellm")]
    pub mount: String,

    /// Lease TTL when neither the request nor the role sets one (e.g. 30m, 1h).
    #[arg(long, env = "LITELLM_SECRETS_DEFAULT_TTL", default_value = "1h")]
    pub default_ttl: String,

    /// Cap on any lease's lifetime.
    #[arg(long, env = "LITELLM_SECRETS_MAX_TTL", default_value = "768h")]
    pub max_ttl: String,

    /// Wait for the start of each LiteLLM response, at most 120s.
    #[arg(long, env = "LITELLM_SECRETS_LITELLM_TIMEOUT", default_value = "30s")]
    pub litellm_timeout: String,

    /// Time between tidy runs, which revoke expired leases and clean up interrupted
    /// issuance: at least 1s, or 0s to turn the timer off.
    #[arg(long, env = "LITELLM_SECRETS_TIDY_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub tidy_interval: Duration,

    /// Maximum number of requests served at once, 1 to 2000. Each runs in its own component
    /// instance, and further requests wait for one. Health checks do not count.
    #[arg(long, env = "LITELLM_SECRETS_MAX_CONCURRENCY", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=2_000))]
    pub max_concurrency: u32,

    /// How long a shutdown waits for requests in flight before it drops them.
    #[arg(long, env = "LITELLM_SECRETS_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Run this component file instead of the one built into the binary.
    #[arg(long, env = "LITELLM_SECRETS_COMPONENT")]
    pub component: Option<PathBuf>,

    /// Log filter, in tracing's env-filter syntax (e.g. info, litellm_secrets_host=debug).
    #[arg(long, env = "LITELLM_SECRETS_LOG", default_value = "info")]
    pub log: String,

    /// Log line format.
    #[arg(long, env = "LITELLM_SECRETS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Format of the log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// Parses `90`, `90s`, `5m` or `1h 30m`; a bare number is seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text)
        .map_err(|error| format!("{error}; write a duration such as 30s, 5m or 1h"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_bare_seconds_and_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        let error = parse_duration("soon").unwrap_err();
        assert!(error.contains("such as 30s"), "{error}");
    }

    #[test]
    fn defaults_listen_on_loopback() {
        let cli = Cli::try_parse_from(["litellm-secrets-host", "serve"]).unwrap();
        let Command::Serve(args) = cli.command;
        assert_eq!(args.listen.to_string(), "127.0.0.1:8200");
        assert_eq!(args.tidy_interval, Duration::from_secs(60));
        assert_eq!(args.max_concurrency, 128);
    }
}
