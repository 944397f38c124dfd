//! The compiled component, its linker and the per-instance store data. One `InstancePre`
//! serves every request and tidy run; each gets a fresh instance from the pooling
//! allocator, as Spin runs one instance per request.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config as EngineConfig, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::kv::Backend;

/// Bindings for the `engine-core` world. Key-value and config imports are async, so a
/// Redis round trip does not block a runtime thread.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "litellm-secrets:engine/engine-core",
        imports: { default: async | trappable },
        exports: { default: async },
        require_store_data_send: true,
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:random": wasmtime_wasi::p2::bindings::random,
            "wasi:cli": wasmtime_wasi::p2::bindings::cli,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:keyvalue/store.bucket": crate::kv::BucketHandle,
            "wasi:keyvalue/atomics.cas": crate::kv::CasHandle,
        },
    });
}

use bindings::EngineCorePre;
pub use bindings::exports::litellm_secrets::engine::types::{Error as EngineError, TidyReport};

/// Largest guest stderr kept per instance, in bytes.
const STDERR_CAPACITY: usize = 256 * 1024;

/// Largest linear memory of one instance. The engine keeps one request and one response
/// in memory at a time, each at most a few MiB.
const MAX_MEMORY_BYTES: usize = 256 * 1024 * 1024;

/// Core instances and tables reserved per component instance in the pool.
const CORE_INSTANCES_PER_INSTANCE: u32 = 8;

/// Linear memories reserved per component instance in the pool.
const MEMORIES_PER_INSTANCE: u32 = 2;

/// Store data of one instance.
pub struct Ctx {
    pub(crate) table: ResourceTable,
    pub(crate) kv: Backend,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    settings: Arc<BTreeMap<String, String>>,
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
            hooks: Default::default(),
        }
    }
}

impl bindings::wasi::config::store::Host for Ctx {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, bindings::wasi::config::store::Error>> {
        Ok(Ok(self.settings.get(&key).cloned()))
    }

    async fn get_all(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, bindings::wasi::config::store::Error>> {
        Ok(Ok(self
            .settings
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()))
    }
}

/// The component, ready to instantiate, with the storage and settings every instance
/// gets. Clones share everything.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    core: EngineCorePre<Ctx>,
    proxy: ProxyPre<Ctx>,
    kv: Backend,
    settings: Arc<BTreeMap<String, String>>,
}

impl Runtime {
    /// Compiles `wasm` and links it against WASI, `wasi:http`, `kv` and `settings`.
    /// `instances` is how many instances may exist at once.
    pub fn new(
        wasm: &[u8],
        instances: u32,
        kv: Backend,
        settings: BTreeMap<String, String>,
    ) -> wasmtime::Result<Self> {
        let engine = Engine::new(&engine_config(instances))?;
        let component = Component::new(&engine, wasm)
            .map_err(|error| error.context("compiling the engine component"))?;

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

        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|error| error.context("linking the engine component"))?;
        Ok(Self {
            engine,
            core: EngineCorePre::new(instance_pre.clone())?,
            proxy: ProxyPre::new(instance_pre)?,
            kv,
            settings: Arc::new(settings),
        })
    }

    /// Returns the component seen through `wasi:http/incoming-handler`.
    pub fn proxy(&self) -> &ProxyPre<Ctx> {
        &self.proxy
    }

    /// Creates a store for one instance; the guest's stderr goes to the returned pipe.
    pub fn new_store(&self) -> (Store<Ctx>, MemoryOutputPipe) {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let wasi = WasiCtxBuilder::new().stderr(stderr.clone()).build();
        let ctx = Ctx {
            table: ResourceTable::new(),
            kv: self.kv.clone(),
            wasi,
            http: WasiHttpCtx::new(),
            settings: Arc::clone(&self.settings),
        };
        (Store::new(&self.engine, ctx), stderr)
    }

    /// Calls the engine's `tidy` in a fresh instance.
    pub async fn tidy(&self) -> wasmtime::Result<Result<TidyReport, EngineError>> {
        let (mut store, stderr) = self.new_store();
        let instance = self.core.instantiate_async(&mut store).await?;
        let result = instance
            .litellm_secrets_engine_engine()
            .call_tidy(&mut store)
            .await;
        crate::logging::forward_guest_log(&stderr);
        result
    }

    /// Checks the settings and the stored config in fresh instances: `list-roles` reads and
    /// checks every setting, and `read-config` opens the stored master key with the
    /// encryption settings. A missing config is fine.
    pub async fn check_settings(&self) -> wasmtime::Result<Result<(), EngineError>> {
        let (mut store, stderr) = self.new_store();
        let instance = self.core.instantiate_async(&mut store).await?;
        let roles = instance
            .litellm_secrets_engine_engine()
            .call_list_roles(&mut store)
            .await;
        crate::logging::forward_guest_log(&stderr);
        if let Err(error) = roles? {
            return Ok(Err(error));
        }

        let (mut store, stderr) = self.new_store();
        let instance = self.core.instantiate_async(&mut store).await?;
        let config = instance
            .litellm_secrets_engine_engine()
            .call_read_config(&mut store)
            .await;
        crate::logging::forward_guest_log(&stderr);
        match config? {
            Ok(_) | Err(EngineError::NotFound(_)) => Ok(Ok(())),
            Err(error) => Ok(Err(error)),
        }
    }

    /// Returns a runtime that gives instances `key` = `value` as an extra setting.
    pub fn with_setting(mut self, key: &str, value: &str) -> Self {
        let mut settings = (*self.settings).clone();
        settings.insert(key.to_owned(), value.to_owned());
        self.settings = Arc::new(settings);
        self
    }
}

fn engine_config(instances: u32) -> EngineConfig {
    let mut pooling = PoolingAllocationConfig::default();
    // A component instance contains several core instances and tables (the guest module and
    // its WASI adapter shims); the totals leave room for that.
    pooling
        .total_component_instances(instances)
        .total_core_instances(instances * CORE_INSTANCES_PER_INSTANCE)
        .total_memories(instances * MEMORIES_PER_INSTANCE)
        .total_tables(instances * CORE_INSTANCES_PER_INSTANCE)
        .max_memory_size(MAX_MEMORY_BYTES);
    let mut config = EngineConfig::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    config
}
