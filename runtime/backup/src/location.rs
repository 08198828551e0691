//! Where a backup lives: any S3-compatible store (`s3://BUCKET/PREFIX`, credentials and endpoint
//! from the usual `AWS_*` environment variables) or a directory (`file:///path`), through
//! `object_store`. The cluster's side only ever [`Location::create`]s: an object that exists is
//! never written again, and nothing here deletes except [`Location::delete`], which only
//! `doppel backup prune` (run by an operator with the store's own credentials) calls.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt as _;
use object_store::aws::{AmazonS3Builder, Checksum};
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientConfigKey, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};

use crate::BackupError;

/// One backup target's storage.
#[derive(Clone)]
pub struct Location {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
    /// S3 Object Lock for every object created, when asked for.
    lock: Option<Arc<Lock>>,
}

/// How often the client that sends the Object Lock headers is made again (its retain-until
/// date is fixed when it is made).
const LOCK_REFRESH: Duration = Duration::from_secs(600);

/// S3 Object Lock in compliance mode: every object created is kept, by the store itself, until
/// at least `retain` after its creation — nobody, the cluster's credentials and the bucket's
/// owner included, can delete or overwrite it before. The bucket must have Object Lock enabled.
struct Lock {
    bucket: String,
    retain: Duration,
    /// The client for creates and when it was made.
    client: Mutex<Option<(Instant, Arc<dyn ObjectStore>)>>,
}

impl Lock {
    /// A client whose requests carry the lock headers, retaining until at least `retain` from
    /// now (a client lives [`LOCK_REFRESH`], so the date it sends is that much further on).
    fn client(&self) -> Result<Arc<dyn ObjectStore>, BackupError> {
        let mut cached = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((made, client)) = cached.as_ref()
            && made.elapsed() < LOCK_REFRESH
        {
            return Ok(client.clone());
        }
        let until_ms = crate::now_ms()
            + u64::try_from((self.retain + LOCK_REFRESH).as_millis()).unwrap_or(u64::MAX);
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "x-amz-object-lock-mode",
            http::HeaderValue::from_static("COMPLIANCE"),
        );
        let until = http::HeaderValue::from_str(&lock_date(until_ms))
            .map_err(|e| BackupError::BadLocation(e.to_string()))?;
        headers.insert("x-amz-object-lock-retain-until-date", until);
        let client: Arc<dyn ObjectStore> = Arc::new(
            s3_builder(&self.bucket, Some(headers))
                // S3 wants a checksum on every write to a locked bucket.
                .with_checksum_algorithm(Checksum::SHA256)
                .build()
                .map_err(|e| {
                    BackupError::BadLocation(format!("cannot use {}: {e}", self.bucket))
                })?,
        );
        *cached = Some((Instant::now(), client.clone()));
        Ok(client)
    }
}

/// `ms` since the epoch as S3 wants a retain-until date (ISO 8601, UTC, whole seconds).
fn lock_date(ms: u64) -> String {
    crate::rfc3339(ms / 1000 * 1000)
}

/// An S3 client for `bucket`, configured from the environment (`AWS_*`), sending `headers` on
/// every request.
fn s3_builder(bucket: &str, headers: Option<http::HeaderMap>) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(headers) = headers {
        // Client options are replaced whole: carry over those the environment sets (a proxy,
        // timeouts), as `from_env` reads them.
        let mut options = ClientOptions::new().with_default_headers(headers);
        for (name, value) in std::env::vars() {
            if let Some(key) = name.strip_prefix("AWS_")
                && let Ok(key) = key.to_ascii_lowercase().parse::<ClientConfigKey>()
            {
                options = options.with_config(key, value);
            }
        }
        builder = builder.with_client_options(options);
    }
    // An on-prem store (MinIO, Ceph) is often plain HTTP on a private network.
    if std::env::var("AWS_ENDPOINT")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .is_ok_and(|e| e.starts_with("http://"))
    {
        builder = builder.with_allow_http(true);
    }
    if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
        builder = builder.with_endpoint(endpoint);
    }
    builder
}

fn storage(e: object_store::Error) -> BackupError {
    match e {
        object_store::Error::NotFound { path, .. } => {
            BackupError::NotFound(format!("{path} does not exist"))
        }
        object_store::Error::AlreadyExists { path, .. } => BackupError::Exists(path),
        other => BackupError::Storage(other.to_string()),
    }
}

/// Refuses what no target URL may be: credentials written into it (they would be stored in the
/// cluster and shown by `doppel backup ls`), or a scheme we do not speak.
pub fn check_url(text: &str) -> Result<url::Url, BackupError> {
    let url = url::Url::parse(text).map_err(|e| {
        BackupError::BadLocation(format!(
            "{text:?} is not a URL ({e}); use s3://BUCKET/PREFIX or file:///DIRECTORY"
        ))
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BackupError::BadLocation(
            "a target URL must not carry credentials; give them to every host as AWS_ACCESS_KEY_ID \
             and AWS_SECRET_ACCESS_KEY"
                .into(),
        ));
    }
    match url.scheme() {
        "s3" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(url),
        "file" if url.path().starts_with('/') && url.path().len() > 1 => Ok(url),
        "s3" => Err(BackupError::BadLocation(format!(
            "{text:?} names no bucket"
        ))),
        "file" => Err(BackupError::BadLocation(format!(
            "{text:?} names no directory"
        ))),
        other => Err(BackupError::BadLocation(format!(
            "{other}:// targets are not supported; use s3://BUCKET/PREFIX or file:///DIRECTORY"
        ))),
    }
}

impl Location {
    /// The storage behind `url`. A `file://` directory is created if missing.
    pub fn open(url: &str) -> Result<Location, BackupError> {
        let parsed = check_url(url)?;
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match parsed.scheme() {
            "file" => {
                let dir = parsed.path();
                std::fs::create_dir_all(dir).map_err(|e| {
                    BackupError::BadLocation(format!("cannot create the directory {dir}: {e}"))
                })?;
                let fs =
                    object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(storage)?;
                (Arc::new(fs), String::new())
            }
            _ => {
                let bucket = parsed.host_str().unwrap_or_default();
                let s3 = s3_builder(bucket, None)
                    .build()
                    .map_err(|e| BackupError::BadLocation(format!("cannot use {url}: {e}")))?;
                (Arc::new(s3), parsed.path().trim_matches('/').to_string())
            }
        };
        Ok(Location {
            store,
            prefix: ObjectPath::from(prefix),
            url: url.to_string(),
            lock: None,
        })
    }

    /// The storage behind `url`, with every object it creates locked by the store for at least
    /// `retain` (S3 Object Lock, compliance mode). Only an `s3://` target can lock.
    pub fn open_locked(url: &str, retain: Duration) -> Result<Location, BackupError> {
        let mut location = Location::open(url)?;
        let parsed = check_url(url)?;
        if parsed.scheme() != "s3" {
            return Err(BackupError::BadLocation(format!(
                "{url} cannot lock objects: retention needs an s3:// target whose bucket has \
                 Object Lock enabled"
            )));
        }
        location.lock = Some(Arc::new(Lock {
            bucket: parsed.host_str().unwrap_or_default().to_string(),
            retain,
            client: Mutex::new(None),
        }));
        Ok(location)
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, name: &str) -> ObjectPath {
        name.split('/')
            .fold(self.prefix.clone(), |path, part| path.join(part))
    }

    /// Creates the object `name`; [`BackupError::Exists`] if it exists (nothing is overwritten).
    pub async fn create(&self, name: &str, data: Vec<u8>) -> Result<(), BackupError> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let store = match &self.lock {
            Some(lock) => lock.client()?,
            None => self.store.clone(),
        };
        store
            .put_opts(&self.path(name), PutPayload::from(data), options)
            .await
            .map(|_| ())
            .map_err(|e| match storage(e) {
                BackupError::Exists(_) => BackupError::Exists(name.to_string()),
                other => other,
            })
    }

    /// The object `name`.
    pub async fn get(&self, name: &str) -> Result<Bytes, BackupError> {
        let read = async { self.store.get(&self.path(name)).await?.bytes().await };
        read.await.map_err(|e| match storage(e) {
            BackupError::NotFound(_) => BackupError::NotFound(format!("{name} is missing")),
            other => other,
        })
    }

    /// The names (below the target) of every object under `dir`, sorted, with their sizes.
    pub async fn list(&self, dir: &str) -> Result<Vec<(String, u64)>, BackupError> {
        let under = self.path(dir);
        let skip = self.prefix.parts().count();
        let mut names: Vec<(String, u64)> = self
            .store
            .list(Some(&under))
            .map_ok(|meta| {
                let name = meta
                    .location
                    .parts()
                    .skip(skip)
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/");
                (name, meta.size)
            })
            .try_collect()
            .await
            .map_err(storage)?;
        names.sort();
        Ok(names)
    }

    /// The names of the folders right under `dir` (one level, sorted).
    pub async fn list_folders(&self, dir: &str) -> Result<Vec<String>, BackupError> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.path(dir)))
            .await
            .map_err(storage)?;
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Deletes the object `name` (pruning only; the cluster never calls it).
    pub async fn delete(&self, name: &str) -> Result<(), BackupError> {
        self.store.delete(&self.path(name)).await.map_err(storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_credentials_or_strange_schemes_are_refused() {
        assert!(check_url("s3://bucket/prefix").is_ok());
        assert!(check_url("file:///var/backups/doppel").is_ok());
        for bad in [
            "s3://key:secret@bucket/p",
            "http://example.org/x",
            "file://",
            "not a url",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn an_object_is_created_once_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let location = Location::open(&url).unwrap();
        location.create("objects/1", b"one".to_vec()).await.unwrap();
        let again = location.create("objects/1", b"two".to_vec()).await;
        assert!(matches!(again, Err(BackupError::Exists(_))), "{again:?}");
        assert_eq!(&location.get("objects/1").await.unwrap()[..], b"one");
        let listed = location.list("objects").await.unwrap();
        assert_eq!(listed, vec![("objects/1".to_string(), 3)]);
        assert!(matches!(
            location.get("objects/2").await,
            Err(BackupError::NotFound(_))
        ));
    }
}
