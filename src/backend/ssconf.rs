//! Ganeti's ssconf files: the configuration every node keeps a copy of, written by the
//! master on every change. A node's own copy says who the master is without asking
//! anyone, so a node that just lost the master role finds out even when the old master's
//! daemons are gone.

use std::{io, path::Path};

/// The file naming the master node.
pub const MASTER_NODE_FILE: &str = "ssconf_master_node";

/// The master node named by the ssconf copy in `dir`; `None` when the directory has no
/// such file (not a Ganeti node).
pub fn master_node(dir: &Path) -> Result<Option<String>, String> {
    let path = dir.join(MASTER_NODE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let name = text.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                Err(format!("{} holds no node name: {text:?}", path.display()))
            } else {
                Ok(Some(name.to_owned()))
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The file naming the cluster (the DNS name of the master's IP address).
pub const CLUSTER_NAME_FILE: &str = "ssconf_cluster_name";

/// The cluster's name from the ssconf copy in `dir`; `None` when there is none.
pub fn cluster_name(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(CLUSTER_NAME_FILE)).ok()?;
    let name = text.trim();
    (!name.is_empty() && !name.contains(char::is_whitespace)).then(|| name.to_owned())
}

/// The file listing the master candidates, one per line.
pub const MASTER_CANDIDATES_FILE: &str = "ssconf_master_candidates";

/// The master candidates named by the ssconf copy in `dir` (the master among them);
/// `None` when the directory has no such file (not a Ganeti node).
pub fn master_candidates(dir: &Path) -> Result<Option<Vec<String>>, String> {
    let path = dir.join(MASTER_CANDIDATES_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let names: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            if names.is_empty() || names.iter().any(|n| n.contains(char::is_whitespace)) {
                Err(format!("{} holds no node list: {text:?}", path.display()))
            } else {
                Ok(Some(names))
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_master_and_tells_missing_from_broken() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(master_node(dir.path()), Ok(None));
        std::fs::write(dir.path().join(MASTER_NODE_FILE), "node1.example.com\n").unwrap();
        assert_eq!(
            master_node(dir.path()),
            Ok(Some("node1.example.com".into()))
        );
        std::fs::write(dir.path().join(MASTER_NODE_FILE), " \n").unwrap();
        assert!(master_node(dir.path())
            .unwrap_err()
            .contains("no node name"));
    }

    #[test]
    fn reads_the_cluster_name() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(cluster_name(dir.path()), None);
        std::fs::write(dir.path().join(CLUSTER_NAME_FILE), "cluster.example.com\n").unwrap();
        assert_eq!(cluster_name(dir.path()), Some("cluster.example.com".into()));
        std::fs::write(dir.path().join(CLUSTER_NAME_FILE), "two words\n").unwrap();
        assert_eq!(cluster_name(dir.path()), None);
    }

    #[test]
    fn reads_the_master_candidates() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(master_candidates(dir.path()), Ok(None));
        let file = dir.path().join(MASTER_CANDIDATES_FILE);
        std::fs::write(&file, "node1.example.com\nnode2.example.com\n\n").unwrap();
        assert_eq!(
            master_candidates(dir.path()),
            Ok(Some(vec![
                "node1.example.com".into(),
                "node2.example.com".into()
            ]))
        );
        std::fs::write(&file, "\n").unwrap();
        assert!(master_candidates(dir.path())
            .unwrap_err()
            .contains("no node list"));
    }
}
