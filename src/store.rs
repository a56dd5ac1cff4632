//! Crash-safe persistence of one JSON document.
//!
//! A save writes a temporary file in the same directory, syncs it, renames it over the
//! previous file and syncs the directory, so after `kill -9` at any instant the file holds
//! either the old or the new document, never a torn one.

use std::{
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
};

use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;

/// Why the state could not be loaded or saved.
#[derive(Debug, Error)]
pub enum StoreError {
    /// File system trouble.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file exists but does not hold a valid document; it is left untouched.
    #[error("{path} is not a valid state file ({source}); move it away to start afresh")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// One JSON document in a directory.
#[derive(Debug, Clone)]
pub struct JsonStore {
    path: PathBuf,
}

impl JsonStore {
    /// The document `file_name` inside `dir` (created if missing).
    pub fn open(dir: &Path, file_name: &str) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })?;
        Ok(JsonStore {
            path: dir.join(file_name),
        })
    }

    /// Where the document lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored document, or `None` if there is none yet.
    pub fn load<T: DeserializeOwned>(&self) -> Result<Option<T>, StoreError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Corrupt {
                path: self.path.clone(),
                source,
            })
    }

    /// Replace the stored document atomically and durably.
    pub fn save<T: Serialize>(&self, value: &T) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| io(std::io::Error::other(e)))?;
        let tmp = self.path.with_extension("tmp");
        let mut file = File::create(&tmp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = JsonStore::open(dir.path(), "state.json").unwrap();
        assert_eq!(store.load::<Vec<u32>>().unwrap(), None);
        store.save(&vec![1u32, 2, 3]).unwrap();
        assert_eq!(store.load::<Vec<u32>>().unwrap(), Some(vec![1, 2, 3]));
        fs::write(store.path(), b"{torn").unwrap();
        assert!(matches!(
            store.load::<Vec<u32>>(),
            Err(StoreError::Corrupt { .. })
        ));
        // The corrupt file is left for the operator to inspect.
        assert_eq!(fs::read(store.path()).unwrap(), b"{torn");
    }
}
