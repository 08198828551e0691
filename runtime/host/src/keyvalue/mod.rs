//! `wasi:keyvalue` for guests, in both drafts real components are built against:
//! `0.2.0-draft` (wasmtime, wasmCloud) and `0.2.0-draft2` (Spin, the spec's head, adds `cas`).
//!
//! Both drafts are thin translations (in [`draft`] and [`draft2`]) over one [`KvCtx`], which maps
//! a guest's bucket names into its own service's namespace and checks the service's limits before
//! anything reaches the [`Store`].

// The methods below are the same token for token in both drafts; only the generated trait they
// implement differs. Each draft module defines `GuestResult<T>` and `answer()` for its own error type.
macro_rules! open_method {
    () => {
        async fn open(&mut self, identifier: String) -> GuestResult<Resource<Bucket>> {
            match self.access().open_bucket(&identifier) {
                Ok(bucket) => Ok(Ok(self.table.push(bucket)?)),
                Err(e) => answer(Err(e)),
            }
        }
    };
}

macro_rules! bucket_methods {
    () => {
        async fn get(
            &mut self,
            bucket: Resource<Bucket>,
            key: String,
        ) -> GuestResult<Option<Vec<u8>>> {
            let space = self.table.get(&bucket)?.space.clone();
            answer(self.access().get(&space, &key).await)
        }

        async fn set(
            &mut self,
            bucket: Resource<Bucket>,
            key: String,
            value: Vec<u8>,
        ) -> GuestResult<()> {
            let space = self.table.get(&bucket)?.space.clone();
            answer(self.access().set(&space, key, value).await)
        }

        async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> GuestResult<()> {
            let space = self.table.get(&bucket)?.space.clone();
            answer(self.access().delete(&space, key).await)
        }

        async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> GuestResult<bool> {
            let space = self.table.get(&bucket)?.space.clone();
            answer(self.access().get(&space, &key).await.map(|v| v.is_some()))
        }
    };
}

macro_rules! batch_methods {
    () => {
        async fn get_many(
            &mut self,
            bucket: Resource<Bucket>,
            keys: Vec<String>,
        ) -> GuestResult<Vec<Option<(String, Vec<u8>)>>> {
            let space = self.table.get(&bucket)?.space.clone();
            answer(self.access().get_many(&space, keys).await)
        }

        async fn set_many(
            &mut self,
            bucket: Resource<Bucket>,
            key_values: Vec<(String, Vec<u8>)>,
        ) -> GuestResult<()> {
            let space = self.table.get(&bucket)?.space.clone();
            answer(self.access().set_many(&space, key_values).await)
        }

        async fn delete_many(
            &mut self,
            bucket: Resource<Bucket>,
            keys: Vec<String>,
        ) -> GuestResult<()> {
            let space = self.table.get(&bucket)?.space.clone();
            answer(self.access().delete_many(&space, keys).await)
        }
    };
}

use {batch_methods, bucket_methods, open_method};

mod draft;
mod draft2;
pub(crate) mod fuzzing;
mod local;

pub use local::{HostLocalBytes, LOCAL_BUCKET, LocalBucket};

use std::sync::Arc;

use doppel_api::Limits;
use doppel_store::{ApplyError, Command, Op, Outcome, Space, Store, StoreError, Writer};
use wasmtime::component::{HasData, Linker, ResourceTable};

/// How many keys one `list-keys` call returns.
const PAGE: usize = 1000;
/// Longest bucket name a guest may open.
const MAX_BUCKET_NAME: usize = 255;

/// The per-request key-value context: which service is asking, its limits, the store.
pub struct KvCtx {
    access: Access,
    /// Draft 1 pages with an opaque `u64` cursor; this remembers the last key of each page handed
    /// out, and the cursor is an index into it. It lives as long as the request.
    cursors: Vec<Vec<u8>>,
}

impl KvCtx {
    /// A context for one request of `service`.
    /// Writes carry `writer` (this host and the service's epoch here when the request started),
    /// so that the store refuses them if this host has been deposed for the service meanwhile.
    /// `local` is the service's [`LOCAL_BUCKET`] on this host.
    pub fn new(
        service: Arc<str>,
        limits: Arc<Limits>,
        store: Arc<dyn Store>,
        writer: Option<Writer>,
        local: Arc<LocalBucket>,
    ) -> Self {
        KvCtx {
            access: Access {
                service,
                limits,
                store,
                writer,
                local,
            },
            cursors: Vec::new(),
        }
    }
}

/// What a guest's bucket handle points at.
pub struct Bucket {
    space: Space,
}

/// A draft2 compare-and-swap handle: the value `swap` is conditional on.
pub struct Cas {
    space: Space,
    key: String,
    current: Option<Vec<u8>>,
}

/// A guest-visible failure; each draft turns it into its own `error` variant.
#[derive(Debug)]
pub(crate) enum KvError {
    /// A limit or rule of this host was broken by the guest.
    Refused(String),
    /// The store failed.
    Store(String),
}

impl From<StoreError> for KvError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected(refused) => KvError::Refused(refused.to_string()),
            other => KvError::Store(other.to_string()),
        }
    }
}

impl KvError {
    fn message(self) -> String {
        match self {
            KvError::Refused(m) | KvError::Store(m) => m,
        }
    }
}

/// The borrowed view the generated `Host` traits are implemented on.
pub struct KvView<'a> {
    ctx: &'a mut KvCtx,
    table: &'a mut ResourceTable,
}

/// Gives the linker access to a request's key-value state.
pub trait KvState: Send {
    /// The key-value context and the resource table of this store.
    fn kv(&mut self) -> KvView<'_>;
}

impl<'a> KvView<'a> {
    /// Borrows a context and table.
    pub fn new(ctx: &'a mut KvCtx, table: &'a mut ResourceTable) -> Self {
        KvView { ctx, table }
    }
}

struct HasKv;

impl HasData for HasKv {
    type Data<'a> = KvView<'a>;
}

/// Links both keyvalue drafts.
pub fn add_to_linker<T: KvState + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    draft::add_to_linker(linker)?;
    draft2::add_to_linker(linker)
}

/// What every operation needs, cheap to clone so that no future borrows the resource table.
#[derive(Clone)]
pub(crate) struct Access {
    service: Arc<str>,
    limits: Arc<Limits>,
    store: Arc<dyn Store>,
    /// This host and the service's epoch here when the request started.
    writer: Option<Writer>,
    /// The service's host-local bucket.
    local: Arc<LocalBucket>,
}

/// Whether `space` is the host-local bucket (a guest only ever holds spaces of its own service).
fn is_local(space: &Space) -> bool {
    space.bucket == LOCAL_BUCKET
}

fn local_refuses(what: &str) -> KvError {
    KvError::Refused(format!(
        "the {LOCAL_BUCKET} bucket is this host's memory, not replicated state: it keeps get, \
         set, delete and exists only, not {what}"
    ))
}

impl KvView<'_> {
    fn access(&self) -> Access {
        self.ctx.access.clone()
    }
}

impl Access {
    fn open_bucket(&self, name: &str) -> Result<Bucket, KvError> {
        if name.len() > MAX_BUCKET_NAME {
            return Err(KvError::Refused(format!(
                "bucket names are at most {MAX_BUCKET_NAME} bytes; this one is {}",
                name.len()
            )));
        }
        if name.starts_with("doppel:") && name != LOCAL_BUCKET {
            return Err(KvError::Refused(format!(
                "bucket names starting with doppel: are the host's; {LOCAL_BUCKET} is the only \
                 one a service opens"
            )));
        }
        // "" and "default" are the same bucket: components written for wasmtime use one, for
        // Spin the other.
        let bucket = if name.is_empty() { "default" } else { name };
        Ok(Bucket {
            space: Space::bucket(&*self.service, bucket),
        })
    }

    fn check_key(&self, key: &str) -> Result<(), KvError> {
        let max = self.limits.max_key;
        if key.len() as u64 > max {
            return Err(KvError::Refused(format!(
                "key is {} bytes; the limit for this service is {max}",
                key.len()
            )));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), KvError> {
        let max = self.limits.max_value;
        if value.len() as u64 > max {
            return Err(KvError::Refused(format!(
                "value is {} bytes; the limit for this service is {max}",
                value.len()
            )));
        }
        Ok(())
    }

    async fn write(&self, op: Op) -> Result<Outcome, KvError> {
        let op = match self.local_write(op)? {
            Ok(outcome) => return Ok(outcome),
            Err(replicated) => replicated,
        };
        let mut command = Command::new(op).with_quota(self.limits.quota);
        command.writer = self.writer;
        Ok(self.store.apply(command).await?)
    }

    /// Carries out `op` on the host-local bucket if it is for that one; gives it back if not.
    fn local_write(&self, op: Op) -> Result<Result<Outcome, Op>, KvError> {
        let local = &self.local;
        match op {
            Op::Put { space, key, value } if is_local(&space) => local.set(key, value),
            Op::Delete { space, key } if is_local(&space) => local.delete(&key),
            Op::PutMany { space, pairs } if is_local(&space) => {
                pairs.into_iter().for_each(|(k, v)| local.set(k, v))
            }
            Op::DeleteMany { space, keys } if is_local(&space) => {
                keys.iter().for_each(|k| local.delete(k))
            }
            Op::Increment { space, .. } | Op::CompareAndSwap { space, .. } if is_local(&space) => {
                return Err(local_refuses("counters or compare-and-swap"));
            }
            replicated => return Ok(Err(replicated)),
        }
        Ok(Ok(Outcome::Done))
    }

    async fn get(&self, space: &Space, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.check_key(key)?;
        if is_local(space) {
            return Ok(self.local.get(key.as_bytes()));
        }
        Ok(self.store.get(space, key.as_bytes()).await?)
    }

    async fn set(&self, space: &Space, key: String, value: Vec<u8>) -> Result<(), KvError> {
        self.check_key(&key)?;
        self.check_value(&value)?;
        self.write(Op::Put {
            space: space.clone(),
            key: key.into_bytes(),
            value,
        })
        .await?;
        Ok(())
    }

    async fn delete(&self, space: &Space, key: String) -> Result<(), KvError> {
        self.check_key(&key)?;
        self.write(Op::Delete {
            space: space.clone(),
            key: key.into_bytes(),
        })
        .await?;
        Ok(())
    }

    /// One page of keys after `after`, and the last key if more may follow.
    async fn list(
        &self,
        space: &Space,
        after: Option<&[u8]>,
    ) -> Result<(Vec<String>, Option<Vec<u8>>), KvError> {
        if is_local(space) {
            return Err(local_refuses("listing"));
        }
        let raw = self.store.list_keys(space, after, PAGE).await?;
        let more = if raw.len() == PAGE {
            raw.last().cloned()
        } else {
            None
        };
        let keys = raw
            .into_iter()
            .map(|k| String::from_utf8_lossy(&k).into_owned())
            .collect();
        Ok((keys, more))
    }

    async fn increment(&self, space: &Space, key: String, delta: i64) -> Result<i64, KvError> {
        self.check_key(&key)?;
        match self
            .write(Op::Increment {
                space: space.clone(),
                key: key.into_bytes(),
                delta,
            })
            .await?
        {
            Outcome::Counter(n) => Ok(n),
            other => Err(KvError::Store(format!("unexpected outcome {other:?}"))),
        }
    }

    async fn get_many(
        &self,
        space: &Space,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, KvError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let value = self.get(space, &key).await?;
            out.push(value.map(|v| (key, v)));
        }
        Ok(out)
    }

    async fn set_many(&self, space: &Space, pairs: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        for (k, v) in &pairs {
            self.check_key(k)?;
            self.check_value(v)?;
        }
        let pairs = pairs
            .into_iter()
            .map(|(k, v)| (k.into_bytes(), v))
            .collect();
        self.write(Op::PutMany {
            space: space.clone(),
            pairs,
        })
        .await?;
        Ok(())
    }

    async fn delete_many(&self, space: &Space, keys: Vec<String>) -> Result<(), KvError> {
        for k in &keys {
            self.check_key(k)?;
        }
        let keys = keys.into_iter().map(String::into_bytes).collect();
        self.write(Op::DeleteMany {
            space: space.clone(),
            keys,
        })
        .await?;
        Ok(())
    }

    /// Writes `value` if the key still holds `expected`; on conflict returns what it holds now.
    async fn compare_and_swap(
        &self,
        space: &Space,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> Result<Result<(), Option<Vec<u8>>>, KvError> {
        self.check_key(key)?;
        self.check_value(&value)?;
        match self
            .write(Op::CompareAndSwap {
                space: space.clone(),
                key: key.as_bytes().to_vec(),
                expected,
                value,
            })
            .await?
        {
            Outcome::Done => Ok(Ok(())),
            Outcome::Conflict { current } => Ok(Err(current)),
            other => Err(KvError::Store(format!("unexpected outcome {other:?}"))),
        }
    }
}

impl From<ApplyError> for KvError {
    fn from(e: ApplyError) -> Self {
        KvError::Refused(e.to_string())
    }
}
