//! `wasi:keyvalue@0.2.0-draft2`: what Spin links; adds compare-and-swap and signed counters.
//!
//! Deliberately parallel to the other draft's file: each draft's bindings generate their own
//! types, so the `impl`s have the same shape with other types; what they share is in `mod.rs`
//! and its macros.

use wasmtime::component::{Linker, Resource};

use super::{Bucket, Cas, HasKv, KvError, KvState, KvView};

pub(super) mod generated {
    wasmtime::component::bindgen!({
        path: "../../modules/wit/keyvalue-draft2",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::keyvalue::Bucket,
            "wasi:keyvalue/atomics.cas": crate::keyvalue::Cas,
        },
    });
}

use generated::wasi::keyvalue::{atomics, batch, store};

type GuestResult<T> = wasmtime::Result<Result<T, store::Error>>;

fn error(e: KvError) -> store::Error {
    store::Error::Other(e.message())
}

fn answer<T>(r: Result<T, KvError>) -> GuestResult<T> {
    Ok(r.map_err(error))
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
        cursor: Option<String>,
    ) -> GuestResult<store::KeyResponse> {
        let space = self.table.get(&bucket)?.space.clone();
        // The cursor is simply the last key of the previous page.
        let page = self
            .access()
            .list(&space, cursor.as_deref().map(str::as_bytes))
            .await;
        answer(page.map(|(keys, more)| store::KeyResponse {
            keys,
            cursor: more.map(|k| String::from_utf8_lossy(&k).into_owned()),
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
        delta: i64,
    ) -> GuestResult<i64> {
        let space = self.table.get(&bucket)?.space.clone();
        answer(self.access().increment(&space, key, delta).await)
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let handle = self.table.delete(cas)?;
        let result = self
            .access()
            .compare_and_swap(&handle.space, &handle.key, handle.current.clone(), value)
            .await;
        Ok(match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(current)) => {
                // Hand back a fresh handle on what the key holds now, for an easy retry.
                let fresh = self.table.push(Cas {
                    space: handle.space,
                    key: handle.key,
                    current,
                })?;
                Err(atomics::CasError::CasFailed(fresh))
            }
            Err(e) => Err(atomics::CasError::StoreError(error(e))),
        })
    }
}

impl atomics::HostCas for KvView<'_> {
    async fn new(&mut self, bucket: Resource<Bucket>, key: String) -> GuestResult<Resource<Cas>> {
        let space = self.table.get(&bucket)?.space.clone();
        match self.access().get(&space, &key).await {
            Ok(current) => Ok(Ok(self.table.push(Cas {
                space,
                key,
                current,
            })?)),
            Err(e) => answer(Err(e)),
        }
    }

    async fn current(&mut self, cas: Resource<Cas>) -> GuestResult<Option<Vec<u8>>> {
        Ok(Ok(self.table.get(&cas)?.current.clone()))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for KvView<'_> {
    super::batch_methods!();
}
