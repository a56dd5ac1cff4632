//! Crash-safe persistence of one JSON document.
//!
//! A save writes a temporary file in the same directory, syncs it, renames it over the
//! previous file and syncs the directory, so after `kill -9` at any instant the file holds
//! either the old or the new document, never a torn one.

use std::{
    fs::{self, File},
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
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
    #[error("{path} is not a valid state file ({source}); maintd never overwrites it: inspect it with `maintd state check`, then move it away or archive it with `maintd state reset` to start empty")]
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
    /// When set, every save fails: fault drills and tests of what maintd does when its
    /// state cannot be saved (a full disk, EIO).
    fail_saves: Arc<AtomicBool>,
    /// Permission bits of the file, set on the temporary file before anything is written
    /// to it; `None`: the process's default (0666 less the umask).
    mode: Option<u32>,
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
            fail_saves: Arc::default(),
            mode: None,
        })
    }

    /// Give the document the permission bits `mode` (e.g. `0o600`) from the moment it is
    /// first written: the temporary file has them before it holds anything.
    pub fn with_mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }

    /// A switch that makes every save of this store (and its clones) fail while it is on.
    pub fn save_fault_switch(&self) -> Arc<AtomicBool> {
        self.fail_saves.clone()
    }

    /// Check that the directory takes new files: create, sync and remove a probe file.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let probe = dir.join(".maintd-write-check");
        let io = |source| StoreError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut file = File::create(&probe).map_err(io)?;
        let written = file.write_all(b"ok").and_then(|()| file.sync_all());
        let removed = fs::remove_file(&probe);
        written.map_err(io)?;
        removed.map_err(io)
    }

    /// Move the document aside as `<file>.<suffix>` (e.g. a timestamp), leaving no
    /// document; returns the new path, or `None` if there was none.
    pub fn archive(&self, suffix: &str) -> Result<Option<PathBuf>, StoreError> {
        let mut name = self.path.file_name().unwrap_or_default().to_owned();
        name.push(format!(".{suffix}"));
        let target = self.path.with_file_name(name);
        match fs::rename(&self.path, &target) {
            Ok(()) => Ok(Some(target)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io {
                path: self.path.clone(),
                source,
            }),
        }
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
        if self.fail_saves.load(Ordering::Relaxed) {
            return Err(io(std::io::Error::other("save failure injected")));
        }
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| io(std::io::Error::other(e)))?;
        let tmp = self.path.with_extension("tmp");
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        if let Some(mode) = self.mode {
            options.mode(mode);
        }
        let mut file = options.open(&tmp).map_err(io)?;
        if let Some(mode) = self.mode {
            // A temporary file left by a crash keeps its old bits: set them anyway.
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(io)?;
        }
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
        // Archiving moves it aside.
        let archived = store.archive("20261206T000000").unwrap().unwrap();
        assert_eq!(fs::read(&archived).unwrap(), b"{torn");
        assert_eq!(store.load::<Vec<u32>>().unwrap(), None);
        assert_eq!(store.archive("again").unwrap(), None);
    }

    #[test]
    fn writability_is_checked_and_saves_fail_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let store = JsonStore::open(dir.path(), "state.json").unwrap();
        store.check_writable().unwrap();
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no probe left"
        );
        let switch = store.save_fault_switch();
        switch.store(true, Ordering::Relaxed);
        let clone = store.clone();
        assert!(clone.save(&1u32).is_err());
        assert_eq!(store.load::<u32>().unwrap(), None);
        switch.store(false, Ordering::Relaxed);
        clone.save(&1u32).unwrap();
        // /proc/self takes no files, even for root.
        let proc_store = JsonStore {
            path: PathBuf::from("/proc/self/state.json"),
            fail_saves: Arc::default(),
            mode: None,
        };
        assert!(proc_store.check_writable().is_err());
    }

    #[test]
    fn a_mode_is_given_to_the_file_from_its_first_byte() {
        let dir = tempfile::tempdir().unwrap();
        let store = JsonStore::open(dir.path(), "secret.json")
            .unwrap()
            .with_mode(0o600);
        // A leftover temporary file with loose bits is tightened before it is reused.
        fs::write(store.path().with_extension("tmp"), b"old").unwrap();
        fs::set_permissions(
            store.path().with_extension("tmp"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        store.save(&1u32).unwrap();
        let mode = fs::metadata(store.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(store.load::<u32>().unwrap(), Some(1));
    }
}
