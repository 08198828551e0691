//! The keyvalue fuzz harness: a guest's calls through the same trait methods the linker binds,
//! in both drafts, with any arguments a guest can pass (handles that were never handed out or
//! were dropped, oversized keys and values, unknown cursors, extreme deltas), against a real
//! store on disk. Every call must come back as a guest-visible error or a trap, never a panic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use doppel_api::Limits;
use doppel_store::{LocalStore, Store};
use wasmtime::component::{Resource, ResourceTable};

use super::draft::generated::wasi::keyvalue as v1;
use super::draft2::generated::wasi::keyvalue as v2;
use super::{Bucket, Cas, KvCtx, KvView};

/// At most this many calls per input, so that one input cannot run for long.
const MAX_CALLS: usize = 64;

/// Bytes read front to back into call arguments; once they run out, the calls stop.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*first)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([
            self.byte()?,
            self.byte()?,
            self.byte()?,
            self.byte()?,
        ]))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from(self.u32()?) << 32 | u64::from(self.u32()?))
    }

    /// Up to 1,023 bytes: past the harness's key and value limits, so refusals are reached.
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = (usize::from(self.byte()?) << 8 | usize::from(self.byte()?)) % 1024;
        let len = len.min(self.0.len());
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(taken.to_vec())
    }

    fn string(&mut self) -> Option<String> {
        Some(String::from_utf8_lossy(&self.bytes()?).into_owned())
    }

    fn strings(&mut self) -> Option<Vec<String>> {
        (0..self.byte()? % 8).map(|_| self.string()).collect()
    }

    /// A bucket name: any text, where `L` stands for the host-local bucket (which random bytes
    /// would hardly ever spell).
    fn bucket_name(&mut self) -> Option<String> {
        let name = self.string()?;
        Some(if name == "L" {
            super::LOCAL_BUCKET.into()
        } else {
            name
        })
    }

    /// A handle the guest was given, or any number at all.
    fn handle(&mut self, given: &[u32]) -> Option<u32> {
        let pick = self.byte()?;
        match given.get(usize::from(pick)) {
            Some(rep) if pick < 200 => Some(*rep),
            _ => self.u32(),
        }
    }
}

fn store() -> Arc<dyn Store> {
    static STORE: OnceLock<Arc<dyn Store>> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let dir = doppel_replication::fuzzing::scratch_dir("keyvalue");
            let _ = std::fs::remove_dir_all(&dir);
            Arc::new(LocalStore::open(&dir).expect("the fuzzing store"))
        })
        .clone()
}

fn tokio() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the fuzzing runtime")
    })
}

/// Runs the calls `data` decodes to, as one request of a service of its own (so that inputs do
/// not share a quota), with small limits so that every limit is reached.
pub(crate) fn calls(data: &[u8]) {
    static SERVICES: AtomicU64 = AtomicU64::new(0);
    let service = format!("fuzz-{}", SERVICES.fetch_add(1, Ordering::Relaxed));
    let limits = Limits {
        max_key: 64,
        max_value: 512,
        quota: 16 << 10,
        ..Limits::default()
    };
    let local = Arc::new(super::LocalBucket::new(super::HostLocalBytes::default()));
    let mut ctx = KvCtx::new(service.into(), Arc::new(limits), store(), None, local);
    let mut table = ResourceTable::new();
    let mut view = KvView::new(&mut ctx, &mut table);
    let mut input = Input(data);
    tokio().block_on(async {
        let mut given = Vec::new();
        for _ in 0..MAX_CALLS {
            if call(&mut view, &mut input, &mut given).await.is_none() {
                break;
            }
        }
    });
}

fn bucket(rep: u32) -> Resource<Bucket> {
    Resource::new_own(rep)
}

fn cas(rep: u32) -> Resource<Cas> {
    Resource::new_own(rep)
}

/// One call; `None` when the input has run out. Handles the host gives back join `given`.
async fn call(view: &mut KvView<'_>, input: &mut Input<'_>, given: &mut Vec<u32>) -> Option<()> {
    use v1::store::{Host as _, HostBucket as V1Bucket};
    use v2::atomics::{Host as V2Atomics, HostCas as _};
    use v2::batch::Host as V2Batch;
    use v2::store::HostBucket as V2Bucket;

    match input.byte()? % 16 {
        0 => {
            let name = input.bucket_name()?;
            given.extend(
                view.open(name)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|b| b.rep()),
            );
        }
        1 => {
            let name = input.bucket_name()?;
            let opened = v2::store::Host::open(view, name).await;
            given.extend(opened.ok().and_then(Result::ok).map(|b| b.rep()));
        }
        2 => {
            let (b, key) = (input.handle(given)?, input.string()?);
            let _ = V2Bucket::get(view, bucket(b), key).await;
        }
        3 => {
            let (b, key, value) = (input.handle(given)?, input.string()?, input.bytes()?);
            let _ = V2Bucket::set(view, bucket(b), key, value).await;
        }
        4 => {
            let (b, key) = (input.handle(given)?, input.string()?);
            let _ = V1Bucket::delete(view, bucket(b), key).await;
        }
        5 => {
            let (b, key) = (input.handle(given)?, input.string()?);
            let _ = V1Bucket::exists(view, bucket(b), key).await;
        }
        6 => {
            let b = input.handle(given)?;
            let cursor = if input.byte()? % 2 == 0 {
                None
            } else {
                Some(input.string()?)
            };
            let _ = V2Bucket::list_keys(view, bucket(b), cursor).await;
        }
        7 => {
            let b = input.handle(given)?;
            let cursor = if input.byte()? % 2 == 0 {
                None
            } else {
                Some(input.u64()?)
            };
            let _ = V1Bucket::list_keys(view, bucket(b), cursor).await;
        }
        8 => {
            let (b, key, delta) = (input.handle(given)?, input.string()?, input.u64()?);
            let _ = V2Atomics::increment(view, bucket(b), key, delta as i64).await;
        }
        9 => {
            let (b, key, delta) = (input.handle(given)?, input.string()?, input.u64()?);
            let _ = v1::atomics::Host::increment(view, bucket(b), key, delta).await;
        }
        10 => {
            let (b, key) = (input.handle(given)?, input.string()?);
            let made = v2::atomics::HostCas::new(view, bucket(b), key).await;
            given.extend(made.ok().and_then(Result::ok).map(|c| c.rep()));
        }
        11 => {
            let (c, value) = (input.handle(given)?, input.bytes()?);
            if let Ok(Err(v2::atomics::CasError::CasFailed(fresh))) =
                V2Atomics::swap(view, cas(c), value).await
            {
                given.push(fresh.rep());
            }
        }
        12 => {
            let c = input.handle(given)?;
            let _ = view.current(cas(c)).await;
        }
        13 => {
            let (b, keys) = (input.handle(given)?, input.strings()?);
            let _ = V2Batch::get_many(view, bucket(b), keys).await;
        }
        14 => {
            let b = input.handle(given)?;
            let keys = input.strings()?;
            let mut pairs = Vec::with_capacity(keys.len());
            for key in keys {
                pairs.push((key, input.bytes()?));
            }
            if input.byte()? % 2 == 0 {
                let _ = V2Batch::set_many(view, bucket(b), pairs).await;
            } else {
                let keys = pairs.into_iter().map(|(k, _)| k).collect();
                let _ = v1::batch::Host::delete_many(view, bucket(b), keys).await;
            }
        }
        _ => {
            let h = input.handle(given)?;
            if input.byte()? % 2 == 0 {
                let _ = V2Bucket::drop(view, bucket(h)).await;
            } else {
                let _ = v2::atomics::HostCas::drop(view, cas(h)).await;
            }
        }
    }
    Some(())
}
