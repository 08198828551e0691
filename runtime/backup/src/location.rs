//! Where a backup lives: any S3-compatible store (`s3://BUCKET/PREFIX`, credentials and endpoint
//! from the usual `AWS_*` environment variables) or a directory (`file:///path`), through
//! `object_store`. The cluster's side only ever [`Location::create`]s: an object that exists is
//! never written again, and nothing here deletes except [`Location::delete`], which only
//! `doppel backup prune` (run by an operator with the store's own credentials) calls.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

use crate::BackupError;

/// One backup target's storage.
#[derive(Clone)]
pub struct Location {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
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
                let mut builder =
                    object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
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
                let s3 = builder
                    .build()
                    .map_err(|e| BackupError::BadLocation(format!("cannot use {url}: {e}")))?;
                (Arc::new(s3), parsed.path().trim_matches('/').to_string())
            }
        };
        Ok(Location {
            store,
            prefix: ObjectPath::from(prefix),
            url: url.to_string(),
        })
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, name: &str) -> ObjectPath {
        name.split('/')
            .fold(self.prefix.clone(), |path, part| path.child(part))
    }

    /// Creates the object `name`; [`BackupError::Exists`] if it exists (nothing is overwritten).
    pub async fn create(&self, name: &str, data: Vec<u8>) -> Result<(), BackupError> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        self.store
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
