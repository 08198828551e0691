//! Hooks for `benches/instantiate.rs`: our per-request instantiation next to wasmtime's bare one,
//! on the same engine and component. Not a stable API.

use std::sync::Arc;

use doppel_api::DeployRequest;
use doppel_store::{LocalStore, Store};
use wasmtime::component::{Component, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::WasiConfigVariables;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::invoke::new_store;
use crate::modules::ModuleCache;
use crate::outbound::Outbound;
use crate::placement::Placements;
use crate::runtime::Runtime;
use crate::services::{Registry, Service};

/// The least a store needs to instantiate an HTTP component with wasi and config.
struct Bare {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: Outbound,
    config: WasiConfigVariables,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Bare {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// One component, deployed as a doppel service and pre-instantiated bare, on one engine.
pub struct Instantiation {
    runtime: Arc<Runtime>,
    store: Arc<dyn Store>,
    service: Arc<Service>,
    bare: ProxyPre<Bare>,
}

impl Instantiation {
    /// Deploys `component` into a fresh store under `dir` and prepares both paths.
    pub async fn new(component: Vec<u8>, dir: &std::path::Path) -> anyhow::Result<Instantiation> {
        let runtime = Runtime::new()?;
        let store: Arc<dyn Store> = Arc::new(LocalStore::open(dir.join("store"))?);
        let registry = Registry::new(
            runtime.clone(),
            store.clone(),
            ModuleCache::new(&dir.join("cache"), &runtime.engine)?,
            Arc::new(Placements::new(1, store.clone())),
        );
        let module = registry.upload(component.clone(), None).await?;
        registry
            .deploy(
                "bench",
                DeployRequest {
                    module: module.digest,
                    ..DeployRequest::default()
                },
                "bench",
            )
            .await?;
        let service = registry
            .get("bench")
            .ok_or_else(|| anyhow::anyhow!("not deployed"))?;

        let mut linker = wasmtime::component::Linker::<Bare>::new(&runtime.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)?;
        wasmtime_wasi_config::add_to_linker(&mut linker, |s: &mut Bare| {
            wasmtime_wasi_config::WasiConfig::from(&s.config)
        })
        .map_err(anyhow::Error::from)?;
        let compiled = Component::new(&runtime.engine, &component).map_err(anyhow::Error::from)?;
        let bare = ProxyPre::new(
            linker
                .instantiate_pre(&compiled)
                .map_err(anyhow::Error::from)?,
        )
        .map_err(anyhow::Error::from)?;
        Ok(Instantiation {
            runtime,
            store,
            service,
            bare,
        })
    }

    /// One instantiation the way the ingress does it for every request.
    pub async fn ours(&self) -> anyhow::Result<()> {
        let mut store = new_store(&self.runtime, &self.store, &self.service, None);
        self.service
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(anyhow::Error::from)?;
        Ok(())
    }

    /// One instantiation with a bare store (wasmtime's own minimum).
    pub async fn bare(&self) -> anyhow::Result<()> {
        let mut store = wasmtime::Store::new(
            &self.runtime.engine,
            Bare {
                table: ResourceTable::new(),
                wasi: WasiCtx::builder().build(),
                http: WasiHttpCtx::new(),
                hooks: Outbound::new(Default::default(), Default::default()),
                config: WasiConfigVariables::new(),
            },
        );
        store.set_epoch_deadline(u64::MAX / 2);
        self.bare
            .instantiate_async(&mut store)
            .await
            .map_err(anyhow::Error::from)?;
        Ok(())
    }
}
