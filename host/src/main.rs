//! `litellm-secrets-host`: runs the LiteLLM secrets engine component on wasmtime with
//! durable storage, serves its HTTP API and runs tidy on a timer.

mod admin;
mod cli;
mod kv;
mod logging;
mod runtime;
mod server;
mod tidy;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, ServeArgs};
use crate::kv::{BUCKET, Backend, FileStore, RedisStore};
use crate::runtime::{EngineError, Runtime};

/// Shortest tidy interval accepted, other than 0 (off).
const MIN_TIDY_INTERVAL: Duration = Duration::from_secs(1);

/// The engine component, built by `build.rs`.
static EMBEDDED_COMPONENT: &[u8] = include_bytes!(env!("LITELLM_SECRETS_COMPONENT_PATH"));

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Serve(args) = cli.command;
    if let Err(error) = logging::init(&args.log, args.log_format) {
        eprintln!("error: {error:#}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the async runtime failed: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    check_args(&args)?;
    let wasm = component_bytes(&args)?;
    let kv = open_storage(&args).await?;
    if args.encryption_key.is_none() {
        tracing::warn!("no --encryption-key: LiteLLM master keys are stored unencrypted");
    }

    // One instance more for the tidy timer, and a few for health checks.
    let runtime = Runtime::new(
        &wasm,
        args.max_concurrency + 1 + server::HEALTH_INSTANCES,
        kv.clone(),
        component_settings(&args),
    )
    .map_err(|error| match &args.component {
        Some(path) => anyhow::anyhow!(
            "the component {} cannot run here (--component): {error:#}",
            path.display()
        ),
        None => anyhow::anyhow!("loading the built-in component failed: {error:#}"),
    })?;
    check_settings(&runtime).await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {} failed (--listen)", args.listen))?;
    let address = listener.local_addr()?;

    // The token comes last, so that a start that fails on a setting or a busy port does
    // not use up a generated token.
    let admin = admin::resolve(
        &kv,
        args.admin_token.clone(),
        args.rotate_admin_token,
        print_admin_token,
    )
    .await?;
    let (admin_key, admin_value) = admin.setting();
    let runtime = runtime.with_setting(admin_key, admin_value);
    tracing::info!(
        %address,
        startup_ms = started.elapsed().as_millis() as u64,
        mount = %args.mount,
        "serving the HTTP API"
    );

    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone()));
    let tidy = (!args.tidy_interval.is_zero())
        .then(|| tokio::spawn(tidy::run(runtime.clone(), args.tidy_interval, stop.clone())));

    let drain_tidy = async {
        stop.cancelled().await;
        let Some(mut tidy) = tidy else { return };
        if tokio::time::timeout(args.shutdown_timeout, &mut tidy)
            .await
            .is_err()
        {
            tidy.abort();
            tracing::warn!(
                timeout = ?args.shutdown_timeout,
                "a tidy run was still in progress at the shutdown timeout; the next start resumes it"
            );
        }
    };
    tokio::join!(
        server::serve(
            listener,
            runtime,
            args.max_concurrency,
            stop.clone(),
            args.shutdown_timeout,
        ),
        drain_tidy,
    );
    tracing::info!("stopped");
    Ok(())
}

fn component_bytes(args: &ServeArgs) -> anyhow::Result<Vec<u8>> {
    match &args.component {
        Some(path) => std::fs::read(path).with_context(|| {
            format!(
                "reading the component {} failed (--component)",
                path.display()
            )
        }),
        None => Ok(EMBEDDED_COMPONENT.to_vec()),
    }
}

async fn open_storage(args: &ServeArgs) -> anyhow::Result<Backend> {
    match &args.redis_url {
        Some(url) => {
            let store = RedisStore::connect(url, &args.redis_prefix).await?;
            tracing::info!(prefix = %args.redis_prefix, "storage: Redis");
            Ok(Backend::Redis(store))
        }
        None => {
            let store = FileStore::open(&args.data)?;
            tracing::info!(path = %args.data.display(), "storage: data file");
            Ok(Backend::File(store))
        }
    }
}

/// Rejects option values that the component would read as unset or that cannot work,
/// before anything is opened.
fn check_args(args: &ServeArgs) -> anyhow::Result<()> {
    if args
        .encryption_key
        .as_deref()
        .is_some_and(|key| key.trim().is_empty())
    {
        anyhow::bail!(
            "--encryption-key (LITELLM_SECRETS_ENCRYPTION_KEY) is empty; set 64 hex digits \
             (openssl rand -hex 32), or unset it to store master keys unencrypted"
        );
    }
    if let Some(token) = &args.admin_token {
        let length = token.trim().chars().count();
        if length < admin::MIN_TOKEN_CHARS {
            anyhow::bail!(
                "the admin token is too short ({length} characters); use at least {}, e.g. \
                 from `openssl rand -hex 24`",
                admin::MIN_TOKEN_CHARS
            );
        }
    }
    if args.mount.trim().is_empty() {
        anyhow::bail!("--mount (LITELLM_SECRETS_MOUNT) is empty; use a path such as litellm");
    }
    if !args.tidy_interval.is_zero() && args.tidy_interval < MIN_TIDY_INTERVAL {
        anyhow::bail!(
            "--tidy-interval {:?} is below {}s; use {}s or more, or 0s to turn the timer off",
            args.tidy_interval,
            MIN_TIDY_INTERVAL.as_secs(),
            MIN_TIDY_INTERVAL.as_secs()
        );
    }
    Ok(())
}

/// Builds the `wasi:config` values the component reads, all but the admin token's.
fn component_settings(args: &ServeArgs) -> BTreeMap<String, String> {
    let mut settings = BTreeMap::new();
    settings.insert("mount".to_owned(), args.mount.clone());
    settings.insert("key_value_store".to_owned(), BUCKET.to_owned());
    settings.insert("default_ttl".to_owned(), args.default_ttl.clone());
    settings.insert("max_ttl".to_owned(), args.max_ttl.clone());
    settings.insert("litellm_timeout".to_owned(), args.litellm_timeout.clone());
    if let Some(key) = &args.encryption_key {
        settings.insert("encryption_key".to_owned(), key.clone());
    }
    if let Some(key) = &args.previous_encryption_key {
        settings.insert("previous_encryption_key".to_owned(), key.clone());
    }
    settings
}

/// Runs engine calls before serving, so that a bad setting or an encryption key that does
/// not open the stored master key stops the host at start with the component's message.
async fn check_settings(runtime: &Runtime) -> anyhow::Result<()> {
    let checked = runtime
        .check_settings()
        .await
        .map_err(|trap| anyhow::anyhow!("the engine trapped at start: {trap:#}"))?;
    match checked {
        Ok(()) => Ok(()),
        Err(EngineError::InvalidInput(message)) => anyhow::bail!("{}", with_flags(&message)),
        Err(error) => anyhow::bail!(
            "the engine cannot start: {}",
            with_flags(&tidy::describe(&error))
        ),
    }
}

/// Host settings and the options that set them.
const SETTING_OPTIONS: [(&str, &str); 6] = [
    ("mount", "--mount"),
    ("default_ttl", "--default-ttl"),
    ("max_ttl", "--max-ttl"),
    ("litellm_timeout", "--litellm-timeout"),
    ("encryption_key", "--encryption-key"),
    ("previous_encryption_key", "--previous-encryption-key"),
];

/// Appends the options that set the settings a component message names.
fn with_flags(message: &str) -> String {
    let named: Vec<String> = SETTING_OPTIONS
        .iter()
        .filter(|(setting, _)| names_setting(message, setting))
        .map(|(setting, option)| format!("{option} or LITELLM_SECRETS_{}", setting.to_uppercase()))
        .collect();
    if named.is_empty() {
        return message.to_owned();
    }
    format!("{message} (set with {})", named.join("; "))
}

/// Returns whether `message` contains `setting` as a whole word.
fn names_setting(message: &str, setting: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    message.match_indices(setting).any(|(start, _)| {
        let before = message[..start].chars().next_back();
        let after = message[start + setting.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// Prints a newly generated admin token on stdout, the only place it ever appears.
fn print_admin_token(token: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "Admin token (shown once; keep it in a secret store): {token}"
    )?;
    stdout.flush()
}

/// Cancels `stop` on the first SIGTERM or SIGINT; a second one exits at once.
async fn stop_on_signal(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};

    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("installing signal handlers failed; stop the host with SIGKILL");
        return;
    };
    for round in 0..2 {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        if round == 0 {
            tracing::info!(signal = name, "stopping");
            stop.cancel();
        } else {
            tracing::warn!(signal = name, "second signal: exiting without waiting");
            std::process::exit(130);
        }
    }
}
