//! The pods a node proxy serves: which workloads of its node are enrolled, and where their network namespaces are.
//!
//! Until the node agent hands namespaces over its socket (ambient §2.2), whoever installs capture writes this file
//! (the local cluster does, once a pod's rules are in place) and the node proxy polls it. An entry is the same
//! information a ZDS `AddWorkload` carries: the workload's uid and its network namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::WorkloadUid;

/// The content of the enrollment file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentFile {
    #[serde(default)]
    pub pods: Vec<EnrolledPod>,
}

/// One enrolled pod whose capture rules are in place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolledPod {
    /// The workload's uid in the mesh state (`Kubernetes//Pod/<namespace>/<name>`).
    pub uid: WorkloadUid,
    /// The pod's network namespace, e.g. `/run/netns/NAME`.
    pub netns: PathBuf,
}

/// Why the enrollment file was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum EnrollmentError {
    #[error("cannot read the enrollment file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the enrollment file {} is malformed at {field}", path.display())]
    Malformed {
        path: PathBuf,
        field: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the enrollment file {} lists pod {uid} twice", path.display())]
    Duplicate { path: PathBuf, uid: WorkloadUid },
}

impl EnrollmentFile {
    /// Parses the file's text; `path` only names it in errors. A pod listed twice is an error.
    pub fn parse(path: &Path, text: &str) -> Result<BTreeMap<WorkloadUid, PathBuf>, EnrollmentError> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let file: EnrollmentFile =
            serde_path_to_error::deserialize(&mut deserializer).map_err(|e| EnrollmentError::Malformed {
                path: path.to_owned(),
                field: e.path().to_string(),
                source: e.into_inner(),
            })?;
        let mut pods = BTreeMap::new();
        for pod in file.pods {
            if pods.insert(pod.uid.clone(), pod.netns).is_some() {
                let (path, uid) = (path.to_owned(), pod.uid);
                return Err(EnrollmentError::Duplicate { path, uid });
            }
        }
        Ok(pods)
    }

    /// Reads and parses the file; a missing file means no pod is enrolled.
    pub fn read(path: &Path) -> Result<BTreeMap<WorkloadUid, PathBuf>, EnrollmentError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(source) => Err(EnrollmentError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes the file atomically (a temporary file renamed over it), so a poller never reads half of it.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pods_and_rejects_duplicates_and_unknown_fields() {
        let path = Path::new("pods.json");
        let text = r#"{"pods":[{"uid":"Kubernetes//Pod/default/a","netns":"/run/netns/a"}]}"#;
        let pods = EnrollmentFile::parse(path, text).unwrap();
        let uid = WorkloadUid::new("Kubernetes//Pod/default/a").unwrap();
        assert_eq!(pods.get(&uid), Some(&PathBuf::from("/run/netns/a")));

        let twice = r#"{"pods":[{"uid":"u","netns":"/a"},{"uid":"u","netns":"/b"}]}"#;
        let error = EnrollmentFile::parse(path, twice).unwrap_err();
        assert!(error.to_string().contains("lists pod u twice"), "{error}");

        let unknown = r#"{"pods":[{"uid":"u","netns":"/a","extra":1}]}"#;
        let error = EnrollmentFile::parse(path, unknown).unwrap_err();
        assert!(error.to_string().contains("pods[0]"), "{error}");
    }

    #[test]
    fn a_missing_file_enrolls_nothing_and_writes_are_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pods.json");
        assert!(EnrollmentFile::read(&path).unwrap().is_empty());
        let file = EnrollmentFile {
            pods: vec![EnrolledPod {
                uid: WorkloadUid::new("Kubernetes//Pod/ns/p").unwrap(),
                netns: PathBuf::from("/run/netns/p"),
            }],
        };
        file.write(&path).unwrap();
        assert_eq!(EnrollmentFile::read(&path).unwrap().len(), 1);
    }
}
