//! Block payloads in an object store, addressed by URL: `file://`, `memory://`, and (behind
//! the `s3`, `gcs`, `azure` features) `s3://`, `gs://`, `az://`. The URL's path is the lake
//! root; credentials come from the usual `object_store` environment variables.

use crate::error::{Error, Result};
use bytes::Bytes;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::sync::Arc;
use url::Url;

/// The object store of a lake.
#[derive(Debug, Clone)]
pub(crate) struct BlobStore {
    store: Arc<dyn ObjectStore>,
    url: String,
}

impl BlobStore {
    /// Opens the store at `url`.
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = Url::parse(url)
            .map_err(|e| Error::Config(format!("object store URL {url:?} is not a URL: {e}")))?;
        let (store, root) = object_store::parse_url_opts(&parsed, std::env::vars())
            .map_err(|e| unsupported(url, &parsed, e))?;
        let store: Arc<dyn ObjectStore> = if root.as_ref().is_empty() {
            Arc::from(store)
        } else {
            Arc::new(PrefixStore::new(store, root))
        };
        Ok(Self {
            store,
            url: url.to_owned(),
        })
    }

    /// The store at `url`, read and written through `store` (rooted at the lake's root).
    pub fn with_store(url: &str, store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            url: url.to_owned(),
        }
    }

    /// The object store, rooted at the lake's root.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The URL the store was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Reads a blob; `Ok(None)` if it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let path = Path::from(key);
        match self.store.get(&path).await {
            Ok(result) => result
                .bytes()
                .await
                .map(Some)
                .map_err(|e| Error::ObjectStore {
                    context: format!("reading {key}"),
                    source: e,
                }),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::ObjectStore {
                context: format!("reading {key}"),
                source: e,
            }),
        }
    }

    /// Writes a blob if it does not exist yet (blobs are immutable: an existing one is kept).
    pub async fn put_new(&self, key: &str, bytes: Bytes) -> Result<()> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&Path::from(key), PutPayload::from(bytes), options)
            .await
        {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(Error::ObjectStore {
                context: format!("writing {key}"),
                source: e,
            }),
        }
    }
}

fn unsupported(url: &str, parsed: &Url, e: object_store::Error) -> Error {
    let scheme = parsed.scheme();
    let missing_feature = match scheme {
        "s3" | "s3a" if !cfg!(feature = "s3") => Some("s3"),
        "gs" if !cfg!(feature = "gcs") => Some("gcs"),
        "az" | "adl" | "azure" | "abfs" | "abfss" if !cfg!(feature = "azure") => Some("azure"),
        _ => None,
    };
    match missing_feature {
        Some(f) => Error::Config(format!(
            "object store URL {url:?}: the {scheme}:// scheme needs this crate's `{f}` feature"
        )),
        None => Error::Config(format!(
            "unsupported object store URL {url:?}: {e}; use file://, memory://, s3://, gs:// or az://"
        )),
    }
}
