//! `wasi:keyvalue@0.2.0-draft`: what `wasmtime serve -S keyvalue` and wasmCloud link.
//!
//! Deliberately parallel to the other draft's file: each draft's bindings generate their own
//! types, so the `impl`s have the same shape with other types; what they share is in `mod.rs`
//! and its macros.

use wasmtime::component::{Linker, Resource};

use super::{Bucket, HasKv, KvError, KvState, KvView};

pub(super) mod generated {
    wasmtime::component::bindgen!({
        path: "../../modules/wit/keyvalue-draft",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::keyvalue::Bucket,
        },
    });
}

use generated::wasi::keyvalue::{atomics, batch, store};

type GuestResult<T> = wasmtime::Result<Result<T, store::Error>>;

fn answer<T>(r: Result<T, KvError>) -> GuestResult<T> {
    Ok(r.map_err(|e| store::Error::Other(e.message())))
}

pub(super) fn add_to_linker<T: KvState + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    store::add_to_linker::<T, HasKv>(linker, T::kv)?;
    atomics::add_to_linker::<T, HasKv>(linker, T::kv)?;
    batch::add_to_linker::<T, HasKv>(linker, T::kv)?;
    Ok(())
}

impl store::Host for KvView<'_> {
    super::open_method!();
}

impl store::HostBucket for KvView<'_> {
    super::bucket_methods!();

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> GuestResult<store::KeyResponse> {
        let space = self.table.get(&bucket)?.space.clone();
        let after = match cursor {
            None => None,
            Some(c) => match self.ctx.cursors.get(c as usize) {
                Some(key) => Some(key.clone()),
                None => return answer(Err(KvError::Refused(format!("unknown cursor {c}")))),
            },
        };
        let page = self.access().list(&space, after.as_deref()).await;
        answer(page.map(|(keys, more)| {
            let cursor = more.map(|last| {
                self.ctx.cursors.push(last);
                (self.ctx.cursors.len() - 1) as u64
            });
            store::KeyResponse { keys, cursor }
        }))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for KvView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> GuestResult<u64> {
        let space = self.table.get(&bucket)?.space.clone();
        let Ok(delta) = i64::try_from(delta) else {
            return answer(Err(KvError::Refused("delta is larger than 2^63-1".into())));
        };
        let result = self.access().increment(&space, key, delta).await;
        answer(result.and_then(|n| {
            u64::try_from(n).map_err(|_| KvError::Refused(format!("the counter is negative ({n})")))
        }))
    }
}

impl batch::Host for KvView<'_> {
    super::batch_methods!();
}
