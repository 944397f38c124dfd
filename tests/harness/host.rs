//! The wasmtime host: loads the built component once and runs every engine call in a
//! fresh instance, as Spin does per request.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config as EngineConfig, Engine, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::clock::Clock;
use crate::keyvalue::KvStore;
use crate::outbound::OutboundPolicy;
use crate::secret_scan;

/// Bindings for the `engine-core` world, generated from the project's `wit/`.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "litellm-secrets:engine/engine-core",
        imports: { default: trappable },
        exports: { default: async },
        require_store_data_send: true,
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:random": wasmtime_wasi::p2::bindings::random,
            "wasi:cli": wasmtime_wasi::p2::bindings::cli,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:keyvalue/store.bucket": crate::keyvalue::BucketHandle,
            "wasi:keyvalue/atomics.cas": crate::keyvalue::CasHandle,
        },
    });
}

pub use bindings::exports::litellm_secrets::engine::types::{
    Config, ConfigRequest, Credential, Error, Lease, Renewal, Role, RoleRequest, RoleWrite,
    TidyReport, UpstreamError,
};
use bindings::{EngineCore, EngineCorePre};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// Largest amount of guest stderr kept per call, in bytes.
const STDERR_CAPACITY: usize = 1024 * 1024;

/// Store data of one instance.
pub struct Ctx {
    pub(crate) table: ResourceTable,
    pub(crate) kv: KvStore,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outbound: OutboundPolicy,
    settings: BTreeMap<String, String>,
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Ctx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

impl bindings::wasi::config::store::Host for Ctx {
    fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, bindings::wasi::config::store::Error>> {
        Ok(Ok(self.settings.get(&key).cloned()))
    }

    fn get_all(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, bindings::wasi::config::store::Error>> {
        Ok(Ok(self.settings.clone().into_iter().collect()))
    }
}

/// The compiled component and its linker, shared by all tests.
pub(crate) struct Runtime {
    engine: Engine,
    component: Component,
    pre: EngineCorePre<Ctx>,
    /// The same component seen through its `wasi:http/incoming-handler` export.
    pub(crate) proxy: ProxyPre<Ctx>,
}

pub(crate) fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::load().expect("loading the engine component failed"))
}

impl Runtime {
    fn load() -> wasmtime::Result<Self> {
        let path = component_path();
        check_fresh(&path);
        let engine = Engine::new(&EngineConfig::new())?;
        let component = Component::from_file(&engine, &path)?;

        let mut linker = Linker::<Ctx>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        bindings::wasi::keyvalue::store::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |ctx| {
            ctx
        })?;
        bindings::wasi::keyvalue::atomics::add_to_linker::<Ctx, HasSelf<Ctx>>(
            &mut linker,
            |ctx| ctx,
        )?;
        bindings::wasi::keyvalue::batch::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |ctx| {
            ctx
        })?;
        bindings::wasi::config::store::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |ctx| ctx)?;

        let instance_pre = linker.instantiate_pre(&component)?;
        let pre = EngineCorePre::new(instance_pre.clone())?;
        let proxy = ProxyPre::new(instance_pre)?;
        Ok(Self {
            engine,
            component,
            pre,
            proxy,
        })
    }
}

/// Returns the names of the component's imports and of its exports.
pub fn component_interfaces() -> (Vec<String>, Vec<String>) {
    let runtime = runtime();
    let component_type = runtime.component.component_type();
    let imports = component_type
        .imports(&runtime.engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let exports = component_type
        .exports(&runtime.engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    (imports, exports)
}

/// Path of the component built with the `component` profile; `ENGINE_WASM` overrides it.
pub fn component_path() -> PathBuf {
    if let Some(path) = std::env::var_os("ENGINE_WASM") {
        return PathBuf::from(path);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip2/component/litellm_secrets_engine.wasm")
}

/// Panics when the component is missing or older than its sources, so that tests never
/// run against a stale build.
fn check_fresh(path: &Path) {
    let build = "cargo build --profile component --target wasm32-wasip2";
    let built = std::fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .unwrap_or_else(|_| {
            panic!(
                "component {} not found; run `{build}` first",
                path.display()
            )
        });
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let newest_source = ["src", "wit"]
        .iter()
        .filter_map(|dir| newest_modification(&root.join(dir)))
        .max();
    if let Some(source) = newest_source {
        assert!(
            source <= built,
            "component {} is older than its sources; run `{build}` first",
            path.display()
        );
    }
}

fn newest_modification(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let modified = if path.is_dir() {
            newest_modification(&path)
        } else {
            entry
                .metadata()
                .and_then(|metadata| metadata.modified())
                .ok()
        };
        newest = newest.max(modified);
    }
    newest
}

/// A host as a deployment would run it: one key-value store, settings, a clock and an
/// outbound policy, with a fresh component instance per call.
#[derive(Clone)]
pub struct TestHost {
    /// The key-value store all instances share.
    pub kv: KvStore,
    /// The wall clock the component reads.
    pub clock: Clock,
    settings: BTreeMap<String, String>,
    outbound: OutboundPolicy,
    logs: Arc<Mutex<String>>,
}

impl Default for TestHost {
    fn default() -> Self {
        Self::new()
    }
}

impl TestHost {
    /// Creates a host with an empty store, no settings and unrestricted outbound HTTP.
    pub fn new() -> Self {
        Self {
            kv: KvStore::new(),
            clock: Clock::new(),
            settings: BTreeMap::new(),
            outbound: OutboundPolicy::allow_all(),
            logs: Arc::default(),
        }
    }

    /// Creates a host that shares this host's store and clock, as a second replica would.
    pub fn replica(&self) -> Self {
        Self {
            logs: Arc::default(),
            ..self.clone()
        }
    }

    /// Sets the `wasi:config` value `key`.
    pub fn with_setting(mut self, key: &str, value: &str) -> Self {
        self.settings.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Allows outbound requests only to these `host:port` authorities.
    pub fn with_allowed_hosts(mut self, authorities: &[&str]) -> Self {
        self.outbound = OutboundPolicy::allow_only(authorities);
        self
    }

    /// Everything the component wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.logs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Creates a store for one instance, with its stderr captured in the returned pipe.
    pub(crate) fn new_store(&self) -> (Store<Ctx>, MemoryOutputPipe) {
        let runtime = runtime();
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .wall_clock(self.clock.clone())
            .build();
        let ctx = Ctx {
            table: ResourceTable::new(),
            kv: self.kv.clone(),
            wasi,
            http: WasiHttpCtx::new(),
            outbound: self.outbound.clone(),
            settings: self.settings.clone(),
        };
        (Store::new(&runtime.engine, ctx), stderr)
    }

    async fn instantiate(&self) -> wasmtime::Result<(Store<Ctx>, EngineCore, MemoryOutputPipe)> {
        let (mut store, stderr) = self.new_store();
        let instance = runtime().pre.instantiate_async(&mut store).await?;
        Ok((store, instance, stderr))
    }

    /// Instantiates the component's `wasi:http` export once and returns how long
    /// `instantiate_async` on the shared `InstancePre` took. Creating the store and dropping
    /// the instance are not timed.
    pub async fn time_instantiation(&self) -> wasmtime::Result<Duration> {
        let (mut store, _stderr) = self.new_store();
        let started = Instant::now();
        runtime().proxy.instantiate_async(&mut store).await?;
        Ok(started.elapsed())
    }

    /// Sets the admin token of the HTTP API.
    pub fn with_admin_token(self, token: &str) -> Self {
        self.with_setting("admin_token", token)
    }

    pub(crate) fn keep_logs(&self, stderr: &MemoryOutputPipe) {
        let text = String::from_utf8_lossy(&stderr.contents()).into_owned();
        secret_scan::check("the component's log", &text, None);
        self.logs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push_str(&text);
    }
}

/// Defines a `TestHost` method per engine function. Each runs in a fresh instance and
/// returns `Err` only for a trap; the engine's own result is inside.
macro_rules! engine_calls {
    ($($name:ident => $call:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        impl TestHost {
            $(
                #[doc = concat!("Calls `", stringify!($call), "` in a fresh instance.")]
                pub async fn $name(&self, $($arg: $ty),*) -> wasmtime::Result<Result<$ret, Error>> {
                    let (mut store, instance, stderr) = self.instantiate().await?;
                    let engine = instance.litellm_secrets_engine_engine();
                    let result = engine.$call(&mut store, $($arg),*).await;
                    self.keep_logs(&stderr);
                    scan_result(stringify!($call), &result);
                    result
                }
            )*
        }
    };
}

engine_calls! {
    write_config_unscanned => call_write_config(request: &ConfigRequest) -> Config;
    try_read_config => call_read_config() -> Config;
    try_delete_config => call_delete_config() -> ();
    try_write_role => call_write_role(name: &str, request: &RoleRequest) -> RoleWrite;
    try_read_role => call_read_role(name: &str) -> Role;
    try_delete_role => call_delete_role(name: &str) -> ();
    try_list_roles => call_list_roles() -> Vec<String>;
    issue_credential_owned => call_issue_credential(role: &str, ttl: Option<&String>) -> Credential;
    renew_lease_owned => call_renew_lease(lease_id: &str, increment: Option<&String>) -> Renewal;
    try_revoke_lease => call_revoke_lease(lease_id: &str) -> ();
    try_lookup_lease => call_lookup_lease(lease_id: &str) -> Lease;
    try_list_leases => call_list_leases(prefix: &str) -> Vec<String>;
    try_tidy => call_tidy() -> TidyReport;
}

/// Checks an engine call's result for secrets, and records the key a credential carries.
fn scan_result<T: std::fmt::Debug + 'static>(
    call: &str,
    result: &wasmtime::Result<Result<T, Error>>,
) {
    let credential = (result as &dyn Any)
        .downcast_ref::<wasmtime::Result<Result<Credential, Error>>>()
        .and_then(|result| result.as_ref().ok()?.as_ref().ok());
    let own_key = credential.map(|credential| credential.key.as_str());
    if let Some(key) = own_key {
        secret_scan::note_minted(key);
    }
    secret_scan::check(call, &format!("{result:?}"), own_key);
}

impl TestHost {
    /// Calls `write-config` in a fresh instance, after recording its master key for the
    /// secret scan.
    pub async fn try_write_config(
        &self,
        request: &ConfigRequest,
    ) -> wasmtime::Result<Result<Config, Error>> {
        if let Some(master_key) = &request.master_key {
            secret_scan::note_secret(master_key);
        }
        self.write_config_unscanned(request).await
    }

    /// Calls `issue-credential` in a fresh instance.
    pub async fn try_issue_credential(
        &self,
        role: &str,
        ttl: Option<&str>,
    ) -> wasmtime::Result<Result<Credential, Error>> {
        let ttl = ttl.map(str::to_owned);
        self.issue_credential_owned(role, ttl.as_ref()).await
    }

    /// Calls `renew-lease` in a fresh instance.
    pub async fn try_renew_lease(
        &self,
        lease_id: &str,
        increment: Option<&str>,
    ) -> wasmtime::Result<Result<Renewal, Error>> {
        let increment = increment.map(str::to_owned);
        self.renew_lease_owned(lease_id, increment.as_ref()).await
    }
}
