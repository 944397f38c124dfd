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
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, ServeArgs};
use crate::kv::{BUCKET, Backend, FileStore, RedisStore};
use crate::runtime::{EngineError, Runtime};

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
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let wasm = component_bytes(&args)?;
    let kv = open_storage(&args).await?;

    let admin = admin::resolve(
        &kv,
        args.admin_token.clone(),
        args.rotate_admin_token,
        |token| {
            println!("Admin token (shown once; keep it in a secret store): {token}");
        },
    )
    .await?;
    if args.encryption_key.is_none() {
        tracing::warn!("no --encryption-key: LiteLLM master keys are stored unencrypted");
    }
    let settings = component_settings(&args, &admin);

    let runtime = Runtime::new(&wasm, args.max_concurrency + 1, kv, settings)
        .map_err(|error| anyhow::anyhow!("{error:?}"))?;
    check_settings(&runtime).await?;

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {} failed (--listen)", args.listen))?;
    let address = listener.local_addr()?;
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

    server::serve(
        listener,
        runtime,
        args.max_concurrency,
        stop,
        args.shutdown_timeout,
    )
    .await;
    if let Some(tidy) = tidy {
        let _ = tidy.await;
    }
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

/// Builds the `wasi:config` values the component reads.
fn component_settings(args: &ServeArgs, admin: &admin::AdminSetting) -> BTreeMap<String, String> {
    let mut settings = BTreeMap::new();
    let (admin_key, admin_value) = admin.setting();
    settings.insert(admin_key.to_owned(), admin_value.to_owned());
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

/// Runs one engine call before serving, so that a bad setting stops the host at start
/// with the component's own message instead of failing every request.
async fn check_settings(runtime: &Runtime) -> anyhow::Result<()> {
    let checked = runtime
        .check_settings()
        .await
        .map_err(|trap| anyhow::anyhow!("the engine trapped at start: {trap:?}"))?;
    match checked {
        Ok(_) => Ok(()),
        Err(EngineError::InvalidInput(message)) => {
            anyhow::bail!("{message} (flags: see --help)")
        }
        Err(error) => anyhow::bail!("the engine cannot start: {}", tidy::describe(&error)),
    }
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
