//! Where a lake is, as data ([`LakeLocation`]: its URLs, never its credentials), and the lakes
//! this process can reach by location ([`LakeRegistry`]).
//!
//! A plan that travels (another process, a worker of a distributed engine) names its lake by
//! location; the process that executes or decodes it finds the lake it opened itself under the
//! same URLs, with its own credentials: [`LakeRegistry::resolve`], the one lookup used by the
//! scan and by the codec.

use super::Lake;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Where a lake is: its metadata database URL (without password) and object store URL.
/// Credentials never travel with a plan: the process that executes it opens the lake itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LakeLocation {
    /// `postgres://…` or `sqlite:…`, password removed.
    pub database_url: String,
    /// `file://…`, `s3://…`, `gs://…`, `az://…`, `memory://…`.
    pub store_url: String,
}

impl LakeLocation {
    /// The location of an open lake.
    pub fn of(lake: &Lake) -> Self {
        Self {
            database_url: lake.database_url().to_string(),
            store_url: lake.store_url().to_string(),
        }
    }
}

/// The lakes a process can execute plans on, by location.
#[derive(Debug, Default)]
pub struct LakeRegistry {
    lakes: Mutex<HashMap<LakeLocation, Lake>>,
}

impl LakeRegistry {
    /// The registry of this process, which `register` fills.
    pub fn global() -> Arc<Self> {
        static GLOBAL: OnceLock<Arc<LakeRegistry>> = OnceLock::new();
        GLOBAL.get_or_init(Default::default).clone()
    }

    /// Makes a lake available to the plans that name its location (the first one opened for a
    /// location is kept: one pool per URL per process).
    pub fn add(&self, lake: &Lake) {
        let mut lakes = self.lakes.lock().unwrap_or_else(|e| e.into_inner());
        lakes
            .entry(LakeLocation::of(lake))
            .or_insert_with(|| lake.clone());
    }

    /// The lake at a location, if one was added.
    pub fn find(&self, location: &LakeLocation) -> Option<Lake> {
        let lakes = self.lakes.lock().unwrap_or_else(|e| e.into_inner());
        lakes.get(location).cloned()
    }

    /// The lake a plan names: in `session`'s registry (a session's own, installed by
    /// `register` as a config extension) first, else in the process's.
    pub fn resolve(session: Option<Arc<LakeRegistry>>, location: &LakeLocation) -> Result<Lake> {
        [session, Some(Self::global())]
            .into_iter()
            .flatten()
            .find_map(|r| r.find(location))
            .ok_or_else(|| Error::UnregisteredLake {
                database_url: location.database_url.clone(),
                store_url: location.store_url.clone(),
            })
    }
}
