//! The data of one request's wasmtime `Store`: every capability's context, and its limits.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::WasiConfigVariables;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::blobstore::{BlobCtx, BlobState, BlobView};
use crate::keyvalue::{KvCtx, KvState, KvView};

/// Everything a guest can reach during one request.
pub struct RequestState {
    pub(crate) table: ResourceTable,
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) hooks: crate::outbound::Outbound,
    pub(crate) kv: KvCtx,
    pub(crate) blobs: BlobCtx,
    pub(crate) config: Arc<WasiConfigVariables>,
    pub(crate) limiter: MemoryLimiter,
    /// The service's log, for `wasi:logging`.
    pub(crate) log: Arc<crate::logs::ServiceLog>,
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl KvState for RequestState {
    fn kv(&mut self) -> KvView<'_> {
        KvView::new(&mut self.kv, &mut self.table)
    }
}

impl BlobState for RequestState {
    fn blobs(&mut self) -> BlobView<'_> {
        BlobView::new(&mut self.blobs, &mut self.table)
    }
}

/// Enforces a service's memory limit and remembers whether it was hit, so that the log can say
/// why an instance died instead of only that it did. The limit counts everything an instance
/// holds — all its linear memories and all its tables — not each memory on its own, and the
/// number of core instances, memories and tables one instance of a component may have is
/// bounded too (a component declaring thousands of them is refused at instantiation).
pub(crate) struct MemoryLimiter {
    pub(crate) max_memory: usize,
    pub(crate) hit: Option<usize>,
    /// Bytes of memories and tables held now.
    pub(crate) used: usize,
}

/// What one table element is counted as (a reference).
const TABLE_ELEMENT_BYTES: usize = 8;
/// Core instances one component instance may have (a Rust component has a few; adapters and
/// composed components a few dozen).
pub(crate) const MAX_CORE_INSTANCES: usize = 64;
/// Linear memories one component instance may have.
pub(crate) const MAX_MEMORIES: usize = 8;
/// Tables one component instance may have.
pub(crate) const MAX_TABLES: usize = 32;

impl MemoryLimiter {
    pub(crate) fn new(max_memory: usize) -> MemoryLimiter {
        MemoryLimiter {
            max_memory,
            hit: None,
            used: 0,
        }
    }

    /// Whether growing something from `current` to `desired` bytes keeps the total within the
    /// limit; counts it if so.
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.max_memory {
            self.hit = Some(total);
            return false;
        }
        self.used = total;
        true
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        ))
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::ResourceLimiter as _;

    use super::*;

    #[test]
    fn the_limit_counts_every_memory_and_table_of_an_instance() {
        let mut limiter = MemoryLimiter::new(100 << 20);
        // Two memories of 40 MiB each fit; a third does not, though each is under the limit.
        assert!(limiter.memory_growing(0, 40 << 20, None).unwrap());
        assert!(limiter.memory_growing(0, 40 << 20, None).unwrap());
        assert!(!limiter.memory_growing(0, 40 << 20, None).unwrap());
        assert_eq!(limiter.hit, Some(120 << 20));
        // Growing one of them counts the difference only.
        assert!(limiter.memory_growing(40 << 20, 50 << 20, None).unwrap());
        // A table grown in a loop reaches the limit too.
        let mut elements = 0;
        while limiter
            .table_growing(elements, elements + 100_000, None)
            .unwrap()
        {
            elements += 100_000;
        }
        assert!(limiter.used <= 100 << 20);
        assert!(elements * TABLE_ELEMENT_BYTES <= 10 << 20);
    }
}
