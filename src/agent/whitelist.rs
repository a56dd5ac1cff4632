//! The whitelist of commands the node agent may run: a directory of root-owned
//! executables, in the manner of Ganeti's restricted commands.
//!
//! The cluster (or whoever reaches the agent with the cluster's key) only ever names a
//! command; what that name may run is decided by whoever is root on the node, by putting
//! a file into the directory. So the directory and the file must be writable by root
//! alone: owned 0:0, no group or other write bits, no setuid/setgid/sticky bits. Symlinks
//! are refused outright (Ganeti follows them; we prefer not to have to reason about where
//! they point).

use std::{
    fs::Metadata,
    os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use thiserror::Error;

/// The mode bits a whitelisted file or directory may have at most (`rwxr-xr-x`).
pub const MAX_MODE: u32 = 0o755;

/// The longest command name (a file name on Linux).
pub const MAX_NAME_LEN: usize = 255;

/// Why a command was refused.
#[derive(Debug, Error)]
pub enum WhitelistError {
    /// The name is not a bare, plain file name.
    #[error("refused command name {name:?}: {reason}")]
    BadName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The whitelist directory is missing or cannot be inspected.
    #[error("whitelist directory {path}: {source}")]
    DirUnreadable {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The whitelist directory is a symlink or not a directory at all.
    #[error("whitelist directory {path} is not a real directory (it is a {kind})")]
    DirNotDirectory {
        /// The directory.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The whitelist directory is not owned by root.
    #[error("whitelist directory {path} must be owned by {want_uid}:{want_gid}, but is owned by {uid}:{gid}")]
    DirOwner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// Its group.
        gid: u32,
        /// The required owner.
        want_uid: u32,
        /// The required group.
        want_gid: u32,
    },
    /// The whitelist directory's mode allows more than `rwxr-xr-x`.
    #[error("whitelist directory {path} must have mode 0755 or stricter, but has {mode:04o}")]
    DirMode {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// No such file in the whitelist directory.
    #[error("command {path} does not exist")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be inspected.
    #[error("command {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is a symlink.
    #[error("command {path} is a symlink; symlinks are refused")]
    Symlink {
        /// The file.
        path: PathBuf,
    },
    /// The file is a directory, socket, device, ...
    #[error("command {path} is not a regular file (it is a {kind})")]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The file is not owned by root.
    #[error("command {path} must be owned by uid {want}, but is owned by uid {uid}")]
    WrongOwner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// The required owner.
        want: u32,
    },
    /// The file's group is not root.
    #[error("command {path} must have group gid {want}, but has gid {gid}")]
    WrongGroup {
        /// The file.
        path: PathBuf,
        /// Its group.
        gid: u32,
        /// The required group.
        want: u32,
    },
    /// The file's mode allows more than `rwxr-xr-x`.
    #[error("command {path} must have mode 0755 or stricter (no group/other write, no setuid/setgid/sticky), but has {mode:04o}")]
    Mode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The owner may not execute the file.
    #[error("command {path} is not executable by its owner (mode {mode:04o})")]
    NotExecutable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// A whitelist directory and the owner its entries must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whitelist {
    dir: PathBuf,
    uid: u32,
    gid: u32,
}

impl Whitelist {
    /// The whitelist in `dir`, whose entries must be owned by root (0:0).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Whitelist {
            dir: dir.into(),
            uid: 0,
            gid: 0,
        }
    }

    /// The whitelist directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of `name` if it may be run; every check is made afresh on each call, so
    /// a file removed or loosened is refused from then on.
    pub fn check(&self, name: &str) -> Result<PathBuf, WhitelistError> {
        check_name(name)?;
        self.check_dir()?;
        let path = self.dir.join(name);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(WhitelistError::Missing { path })
            }
            Err(source) => return Err(WhitelistError::Unreadable { path, source }),
        };
        let file_type = meta.file_type();
        if file_type.is_symlink() {
            return Err(WhitelistError::Symlink { path });
        }
        if !file_type.is_file() {
            return Err(WhitelistError::NotRegular {
                path,
                kind: kind(&meta),
            });
        }
        if meta.uid() != self.uid {
            return Err(WhitelistError::WrongOwner {
                path,
                uid: meta.uid(),
                want: self.uid,
            });
        }
        if meta.gid() != self.gid {
            return Err(WhitelistError::WrongGroup {
                path,
                gid: meta.gid(),
                want: self.gid,
            });
        }
        let mode = permission_bits(&meta);
        if mode & !MAX_MODE != 0 {
            return Err(WhitelistError::Mode { path, mode });
        }
        if mode & 0o100 == 0 {
            return Err(WhitelistError::NotExecutable { path, mode });
        }
        Ok(path)
    }

    fn check_dir(&self) -> Result<(), WhitelistError> {
        let path = &self.dir;
        let meta =
            std::fs::symlink_metadata(path).map_err(|source| WhitelistError::DirUnreadable {
                path: path.clone(),
                source,
            })?;
        if !meta.file_type().is_dir() {
            return Err(WhitelistError::DirNotDirectory {
                path: path.clone(),
                kind: kind(&meta),
            });
        }
        if meta.uid() != self.uid || meta.gid() != self.gid {
            return Err(WhitelistError::DirOwner {
                path: path.clone(),
                uid: meta.uid(),
                gid: meta.gid(),
                want_uid: self.uid,
                want_gid: self.gid,
            });
        }
        let mode = permission_bits(&meta);
        if mode & !MAX_MODE != 0 {
            return Err(WhitelistError::DirMode {
                path: path.clone(),
                mode,
            });
        }
        Ok(())
    }
}

/// Check that `name` is a bare file name: 1 to 255 bytes of `[A-Za-z0-9._-]`, not
/// starting with a dot (so neither `.`, `..` nor hidden files).
pub fn check_name(name: &str) -> Result<(), WhitelistError> {
    let refuse = |reason| {
        Err(WhitelistError::BadName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return refuse("longer than 255 bytes");
    }
    if name.contains('/') {
        return refuse("contains a slash; only a bare file name is allowed");
    }
    if name.starts_with('.') {
        return refuse("starts with a dot");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return refuse("only letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Permission bits including setuid, setgid and sticky (`07777`).
fn permission_bits(meta: &Metadata) -> u32 {
    meta.permissions().mode() & 0o7777
}

fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        "symlink"
    } else if t.is_dir() {
        "directory"
    } else if t.is_file() {
        "regular file"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() || t.is_char_device() {
        "device"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use std::{
        fs,
        os::unix::fs::{chown, symlink},
    };

    use super::*;

    const NOBODY: u32 = 65534;

    fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A root-owned 0755 whitelist directory with a good command `ok` (tests run as root).
    fn setup() -> (tempfile::TempDir, Whitelist) {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("commands");
        fs::create_dir(&list).unwrap();
        chown(&list, Some(0), Some(0)).unwrap();
        set_mode(&list, 0o755);
        command(&list, "ok", 0o755);
        (dir, Whitelist::new(list))
    }

    fn command(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, "#!/bin/sh\necho hi\n").unwrap();
        chown(&path, Some(0), Some(0)).unwrap();
        set_mode(&path, mode);
        path
    }

    #[test]
    fn a_root_owned_executable_is_accepted() {
        let (_tmp, list) = setup();
        assert_eq!(list.check("ok").unwrap(), list.dir().join("ok"));
        for mode in [0o700, 0o500, 0o100, 0o750, 0o711] {
            command(list.dir(), "strict", mode);
            list.check("strict")
                .unwrap_or_else(|e| panic!("{mode:o}: {e}"));
        }
        command(list.dir(), "a-b_c.d9", 0o755);
        list.check("a-b_c.d9").unwrap();
    }

    #[test]
    fn bad_names_are_refused() {
        let (_tmp, list) = setup();
        let long = "a".repeat(256);
        for name in [
            "", "..", ".", ".hidden", "a/b", "../ok", "/bin/sh", "a b", "ok;", "é", &long,
        ] {
            let err = list.check(name).unwrap_err();
            assert!(
                matches!(err, WhitelistError::BadName { .. }),
                "{name:?}: {err}"
            );
        }
        assert!(check_name(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn a_missing_file_is_refused() {
        let (_tmp, list) = setup();
        let err = list.check("absent").unwrap_err();
        assert!(matches!(err, WhitelistError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("absent"), "{err}");
    }

    #[test]
    fn wrong_owner_or_group_is_refused() {
        let (_tmp, list) = setup();
        let path = command(list.dir(), "c", 0o755);
        chown(&path, Some(NOBODY), None).unwrap();
        let err = list.check("c").unwrap_err();
        assert!(
            matches!(err, WhitelistError::WrongOwner { uid: NOBODY, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("65534"), "{err}");
        chown(&path, Some(0), Some(NOBODY)).unwrap();
        let err = list.check("c").unwrap_err();
        assert!(
            matches!(err, WhitelistError::WrongGroup { gid: NOBODY, .. }),
            "{err}"
        );
    }

    #[test]
    fn loose_modes_are_refused() {
        let (_tmp, list) = setup();
        for mode in [0o777, 0o775, 0o757, 0o4755, 0o2755, 0o1755, 0o765] {
            let path = command(list.dir(), "c", mode);
            // chown clears setuid/setgid, so set the mode after it.
            set_mode(&path, mode);
            let err = list.check("c").unwrap_err();
            assert!(
                matches!(err, WhitelistError::Mode { mode: m, .. } if m == mode),
                "{mode:o}: {err}"
            );
            assert!(err.to_string().contains(&format!("{mode:04o}")), "{err}");
        }
    }

    #[test]
    fn not_owner_executable_is_refused() {
        let (_tmp, list) = setup();
        for mode in [0o644, 0o655, 0o400] {
            command(list.dir(), "c", mode);
            let err = list.check("c").unwrap_err();
            assert!(
                matches!(err, WhitelistError::NotExecutable { .. }),
                "{mode:o}: {err}"
            );
        }
    }

    #[test]
    fn symlinks_and_non_files_are_refused() {
        let (_tmp, list) = setup();
        symlink(list.dir().join("ok"), list.dir().join("link")).unwrap();
        let err = list.check("link").unwrap_err();
        assert!(matches!(err, WhitelistError::Symlink { .. }), "{err}");
        symlink("/bin/sh", list.dir().join("sh")).unwrap();
        assert!(matches!(
            list.check("sh"),
            Err(WhitelistError::Symlink { .. })
        ));
        let sub = list.dir().join("sub");
        fs::create_dir(&sub).unwrap();
        set_mode(&sub, 0o755);
        let err = list.check("sub").unwrap_err();
        assert!(
            matches!(
                err,
                WhitelistError::NotRegular {
                    kind: "directory",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_bad_directory_is_refused() {
        let (tmp, list) = setup();
        set_mode(list.dir(), 0o775);
        let err = list.check("ok").unwrap_err();
        assert!(
            matches!(err, WhitelistError::DirMode { mode: 0o775, .. }),
            "{err}"
        );
        set_mode(list.dir(), 0o757);
        assert!(matches!(
            list.check("ok"),
            Err(WhitelistError::DirMode { .. })
        ));
        set_mode(list.dir(), 0o755);
        chown(list.dir(), Some(NOBODY), None).unwrap();
        let err = list.check("ok").unwrap_err();
        assert!(
            matches!(err, WhitelistError::DirOwner { uid: NOBODY, .. }),
            "{err}"
        );
        chown(list.dir(), Some(0), Some(NOBODY)).unwrap();
        assert!(matches!(
            list.check("ok"),
            Err(WhitelistError::DirOwner { gid: NOBODY, .. })
        ));
        chown(list.dir(), Some(0), Some(0)).unwrap();
        list.check("ok").unwrap();

        // A symlink to a good directory is not a real directory.
        let link = tmp.path().join("link");
        symlink(list.dir(), &link).unwrap();
        let err = Whitelist::new(&link).check("ok").unwrap_err();
        assert!(
            matches!(
                err,
                WhitelistError::DirNotDirectory {
                    kind: "symlink",
                    ..
                }
            ),
            "{err}"
        );
        let missing = Whitelist::new(tmp.path().join("nowhere"));
        assert!(matches!(
            missing.check("ok"),
            Err(WhitelistError::DirUnreadable { .. })
        ));
        let file = Whitelist::new(list.dir().join("ok"));
        assert!(matches!(
            file.check("ok"),
            Err(WhitelistError::DirNotDirectory { .. })
        ));
    }
}
