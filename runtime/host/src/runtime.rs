//! The wasmtime engine and linker every service shares.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::state::RequestState;

/// How often the epoch advances. A request's timeout is checked at every tick, and a busy guest
/// yields to other tasks at every tick, so a loop in one service cannot starve another.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The largest memory limit a service may ask for. Pool slots are sized for it.
pub const MAX_MEMORY_LIMIT: u64 = 4 << 30;

/// How many instances may be alive at once across all services (the pool's size). A request
/// that finds the pool full gets a 503; each service's share is smaller (`admission::Slots`).
const POOL_INSTANCES: u32 = doppel_api::POOL_INSTANCES as u32;

/// The engine, the linker with the whole guest contract, and the thread that ticks epochs.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<RequestState>,
    /// The host's own listeners, which guests' outbound calls never reach (set once bound).
    pub(crate) own_listeners: std::sync::OnceLock<crate::outbound::OwnListeners>,
}

impl Runtime {
    /// The host's own listeners, as known so far.
    pub(crate) fn own_listeners(&self) -> crate::outbound::OwnListeners {
        self.own_listeners.get().cloned().unwrap_or_default()
    }
}

impl Runtime {
    /// Builds the engine (pooling allocator, copy-on-write memory images, epoch interruption) and
    /// links every interface of the guest contract.
    pub fn new() -> anyhow::Result<Arc<Runtime>> {
        Runtime::build(|_| {})
    }

    /// The same engine with cranelift's optimisations off, for the upload fuzz target: what it
    /// tests is the checking and linking of an upload, not the speed of the code compiled from
    /// it, and unoptimised compilation leaves it several times the inputs per second.
    pub(crate) fn unoptimised() -> anyhow::Result<Arc<Runtime>> {
        Runtime::build(|config| {
            config.cranelift_opt_level(wasmtime::OptLevel::None);
        })
    }

    fn build(adjust: impl FnOnce(&mut Config)) -> anyhow::Result<Arc<Runtime>> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 4)
            .total_memories(POOL_INSTANCES * 2)
            .total_tables(POOL_INSTANCES * 4)
            .max_memory_size(MAX_MEMORY_LIMIT as usize)
            // Keeping a little of each slot's memory resident saves a page-fault storm per request.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(1 << 16)
            // ...and, where Linux can say which pages a request dirtied (PAGEMAP_SCAN, 6.7+),
            // only those are reset, instead of a memset of the whole resident part each time.
            .pagemap_scan(Enabled::Auto);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .memory_init_cow(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        adjust(&mut config);
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("while creating the wasmtime engine")?;
        let linker = crate::linker::build(&engine)?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("doppel-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .context("while starting the epoch thread")?;
        Ok(Arc::new(Runtime {
            engine,
            linker,
            own_listeners: std::sync::OnceLock::new(),
        }))
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}
