//! Settings the operator gave at deploy (`doppel deploy --config KEY=VALUE`), via `wasi:config`.

use crate::Error;
use crate::bindings::wasi::config::store;

/// The value of `key`, if set.
pub fn get(key: &str) -> Result<Option<String>, Error> {
    store::get(key).map_err(|e| Error::unavailable(format!("cannot read config {key:?}: {e:?}")))
}

/// The value of `key`, or `default` when unset.
pub fn get_or(key: &str, default: &str) -> Result<String, Error> {
    Ok(get(key)?.unwrap_or_else(|| default.to_string()))
}
