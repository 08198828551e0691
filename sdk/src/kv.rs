//! Typed state: JSON values in named buckets of the service's own key-value store.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::bindings::wasi::keyvalue0_2_0_draft::{atomics, batch, store};
use crate::bindings::wasi::keyvalue0_2_0_draft2 as draft2;

/// How often [`Bucket::update`] retries when other requests keep changing the key.
const UPDATE_ATTEMPTS: usize = 64;

fn store_error(e: impl std::fmt::Debug) -> Error {
    Error::unavailable(format!("the key-value store failed: {e:?}"))
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::internal(format!("stored value {key:?} does not decode: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::internal(format!("cannot encode a value: {e}")))
}

/// One page of a listing.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, in key order.
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next: Option<String>,
}

/// A bucket of the service's key-value state. Values are JSON.
pub struct Bucket {
    name: String,
    inner: store::Bucket,
}

impl Bucket {
    /// Opens the bucket `name` (`""` or `"default"`: the service's default bucket).
    pub fn open(name: &str) -> Result<Bucket, Error> {
        let inner = store::open(name).map_err(store_error)?;
        Ok(Bucket {
            name: name.to_string(),
            inner,
        })
    }

    /// The service's default bucket (`""`). Portable: `wasmtime serve -S keyvalue` provides this
    /// one bucket only; doppel also maps `"default"` (what Spin calls it) to it, and gives every
    /// other name a bucket of its own.
    pub fn open_default() -> Result<Bucket, Error> {
        Bucket::open("")
    }

    /// The value at `key`, decoded.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        match self.inner.get(key).map_err(store_error)? {
            Some(bytes) => decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Stores `value` at `key`, replacing what was there.
    pub fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), Error> {
        self.inner.set(key, &encode(value)?).map_err(store_error)
    }

    /// Removes `key` (a missing key is fine).
    pub fn delete(&self, key: &str) -> Result<(), Error> {
        self.inner.delete(key).map_err(store_error)
    }

    /// Whether `key` has a value.
    pub fn exists(&self, key: &str) -> Result<bool, Error> {
        self.inner.exists(key).map_err(store_error)
    }

    /// The raw bytes at `key`.
    pub fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.inner.get(key).map_err(store_error)
    }

    /// Stores raw bytes at `key`.
    pub fn put_bytes(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.inner.set(key, value).map_err(store_error)
    }

    /// Every key starting with `prefix`, sorted. Reads the bucket's whole key list (the standard
    /// interface has no prefix scan): keep one kind of record per bucket so that lists stay short.
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>, Error> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.inner.list_keys(cursor).map_err(store_error)?;
            keys.extend(page.keys.into_iter().filter(|k| k.starts_with(prefix)));
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Up to `limit` values whose keys start with `prefix` and come after `after`, in key order.
    pub fn page<T: DeserializeOwned>(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<T>, Error> {
        let keys: Vec<String> = self
            .keys(prefix)?
            .into_iter()
            .filter(|k| after.is_none_or(|a| k.as_str() > a))
            .collect();
        let chosen: Vec<String> = keys.iter().take(limit.max(1)).cloned().collect();
        let next = if keys.len() > chosen.len() {
            chosen.last().cloned()
        } else {
            None
        };
        let mut items = Vec::with_capacity(chosen.len());
        for found in batch::get_many(&self.inner, &chosen)
            .map_err(store_error)?
            .into_iter()
            .flatten()
        {
            items.push(decode(&found.0, &found.1)?);
        }
        Ok(Page { items, next })
    }

    /// The values at `keys`, decoded, in the same order (`None` where a key has none), read in
    /// one call (`wasi:keyvalue/batch`).
    pub fn get_many<T: DeserializeOwned>(&self, keys: &[&str]) -> Result<Vec<Option<T>>, Error> {
        let owned: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        batch::get_many(&self.inner, &owned)
            .map_err(store_error)?
            .into_iter()
            .map(|found| found.map(|(key, bytes)| decode(&key, &bytes)).transpose())
            .collect()
    }

    /// Stores every `(key, value)` pair in one call, as one write: all of them or none.
    pub fn put_many<T: Serialize>(&self, pairs: &[(&str, T)]) -> Result<(), Error> {
        let encoded = pairs
            .iter()
            .map(|(key, value)| Ok((key.to_string(), encode(value)?)))
            .collect::<Result<Vec<_>, Error>>()?;
        batch::set_many(&self.inner, &encoded).map_err(store_error)
    }

    /// Removes every key of `keys` in one call, as one write (missing keys are fine).
    pub fn delete_many(&self, keys: &[&str]) -> Result<(), Error> {
        let owned: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        batch::delete_many(&self.inner, &owned).map_err(store_error)
    }

    /// Adds `delta` to the counter at `key` (missing counts as 0) and returns the new value.
    /// Atomic: concurrent increments never lose one another.
    pub fn increment(&self, key: &str, delta: u64) -> Result<u64, Error> {
        atomics::increment(&self.inner, key, delta).map_err(store_error)
    }

    /// Read-modify-write without lost updates: `change` gets the current value and returns the
    /// new value and a result; if another request changed the key meanwhile, `change` runs again
    /// on the fresh value. `change` may refuse with an error, which leaves the key untouched.
    ///
    /// Uses compare-and-swap (`wasi:keyvalue@0.2.0-draft2`).
    pub fn update<T, R>(
        &self,
        key: &str,
        mut change: impl FnMut(Option<T>) -> Result<(T, R), Error>,
    ) -> Result<R, Error>
    where
        T: Serialize + DeserializeOwned,
    {
        let bucket = draft2::store::open(&self.name).map_err(store_error)?;
        let mut cas = draft2::atomics::Cas::new(&bucket, key).map_err(store_error)?;
        for _ in 0..UPDATE_ATTEMPTS {
            let current = match cas.current().map_err(store_error)? {
                Some(bytes) => Some(decode(key, &bytes)?),
                None => None,
            };
            let (next, result) = change(current)?;
            match draft2::atomics::swap(cas, &encode(&next)?) {
                Ok(()) => return Ok(result),
                Err(draft2::atomics::CasError::CasFailed(fresh)) => cas = fresh,
                Err(draft2::atomics::CasError::StoreError(e)) => return Err(store_error(e)),
            }
        }
        Err(Error::conflict(format!(
            "{key:?} changed {UPDATE_ATTEMPTS} times while this request tried to update it; retry"
        )))
    }
}
