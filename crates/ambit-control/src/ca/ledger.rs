//! The record of every certificate the CA issued: kept in memory and appended, one JSON object per line, to
//! `<ca dir>/issued.jsonl`, where `ambit ca check` reads it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use ambit_identity::ca::IssuedCertificate;
use ambit_identity::cert::WorkloadCertificate;
use ambit_types::Identity;
use serde::{Deserialize, Serialize};

/// The ledger's file name inside the CA directory.
pub const LEDGER_FILE: &str = "issued.jsonl";

/// One issued certificate. Times are whole seconds since the Unix epoch on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub identity: Identity,
    /// Lowercase hex of the leaf's serial number.
    pub serial: String,
    #[serde(with = "unix_seconds")]
    pub not_before: SystemTime,
    #[serde(with = "unix_seconds")]
    pub not_after: SystemTime,
    /// Who asked: the caller's node, or `local:<command>` for certificates issued directly with the CA key.
    pub caller: String,
}

impl LedgerEntry {
    pub fn new(issued: &IssuedCertificate, caller: &str) -> Self {
        Self {
            identity: issued.identity.clone(),
            serial: issued.serial.clone(),
            not_before: issued.not_before,
            not_after: issued.not_after,
            caller: caller.to_string(),
        }
    }

    /// The entry of a certificate issued directly with the CA key (`ambit ca issue`).
    pub fn from_certificate(cert: &WorkloadCertificate, caller: &str) -> Self {
        Self {
            identity: cert.identity().clone(),
            serial: cert.serial().to_string(),
            not_before: cert.not_before(),
            not_after: cert.not_after(),
            caller: caller.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot open the ledger {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot append to the ledger {path}: {source}")]
    Append { path: PathBuf, source: io::Error },
    #[error("ledger {path}, line {line}: {source}")]
    Parse {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
}

/// The ledger of a running CA: entries in memory plus the append-only file.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    entries: Vec<LedgerEntry>,
    file: File,
}

impl Ledger {
    /// Opens (or creates) `<ca dir>/issued.jsonl`, loading the entries already there.
    /// A last line cut short by a crash is removed, so the next entry starts on a line of its own.
    pub fn open(ca_dir: &Path) -> Result<Self, LedgerError> {
        let path = ca_dir.join(LEDGER_FILE);
        let open = |source| LedgerError::Open {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(open)?;
        let text = fs::read_to_string(&path).map_err(open)?;
        let entries = parse(&path, &text)?;
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        if complete < text.len() {
            file.set_len(complete as u64).map_err(open)?;
        }
        Ok(Self {
            path,
            state: Mutex::new(State { entries, file }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records an entry in memory, then appends it to the file (one `write` of one line, so concurrent writers
    /// of the same file never interleave). The entry stays in memory even if the file write fails.
    pub fn record(&self, entry: LedgerEntry) -> Result<(), LedgerError> {
        // A ledger entry (strings and integers) always serializes.
        let mut line = serde_json::to_vec(&entry).unwrap_or_default();
        line.push(b'\n');
        // A poisoned lock only means another thread panicked mid-append; the data is still usable.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.entries.push(entry);
        let append = |source| LedgerError::Append {
            path: self.path.clone(),
            source,
        };
        state.file.write_all(&line).map_err(append)
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> Vec<LedgerEntry> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .clone()
    }
}

/// Reads a ledger file. A last line cut short by a crash is ignored; any other bad line is an error.
pub fn read(path: &Path) -> Result<Vec<LedgerEntry>, LedgerError> {
    let text = fs::read_to_string(path).map_err(|source| LedgerError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

fn parse(path: &Path, text: &str) -> Result<Vec<LedgerEntry>, LedgerError> {
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut entries = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        match serde_json::from_str(line) {
            Ok(entry) => entries.push(entry),
            Err(_) if i + 1 == lines.len() && !complete => break,
            Err(source) => {
                return Err(LedgerError::Parse {
                    path: path.to_path_buf(),
                    line: i + 1,
                    source,
                });
            }
        }
    }
    Ok(entries)
}

/// `SystemTime` as whole seconds since the Unix epoch (times before it are clamped to it).
mod unix_seconds {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        Ok(UNIX_EPOCH + Duration::from_secs(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn entry(serial: &str) -> LedgerEntry {
        LedgerEntry {
            identity: "spiffe://cluster.local/ns/demo/sa/client".parse().unwrap(),
            serial: serial.to_string(),
            not_before: UNIX_EPOCH + Duration::from_secs(1_000),
            not_after: UNIX_EPOCH + Duration::from_secs(2_000),
            caller: "node-1".to_string(),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ambit-ledger-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn entries_are_appended_and_reloaded() {
        let dir = temp_dir("append");
        let ledger = Ledger::open(&dir).unwrap();
        ledger.record(entry("01")).unwrap();
        ledger.record(entry("02")).unwrap();
        let text = fs::read_to_string(dir.join(LEDGER_FILE)).unwrap();
        assert_eq!(
            text.lines().next().unwrap(),
            r#"{"identity":"spiffe://cluster.local/ns/demo/sa/client","serial":"01","not_before":1000,"not_after":2000,"caller":"node-1"}"#
        );
        drop(ledger);
        let reopened = Ledger::open(&dir).unwrap();
        assert_eq!(reopened.entries(), vec![entry("01"), entry("02")]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_ignored_but_other_garbage_is_not() {
        let dir = temp_dir("torn");
        let path = dir.join(LEDGER_FILE);
        let good = serde_json::to_string(&entry("01")).unwrap();
        fs::write(&path, format!("{good}\n{{\"identity\":\"spi")).unwrap();
        assert_eq!(read(&path).unwrap(), vec![entry("01")]);
        let ledger = Ledger::open(&dir).unwrap();
        ledger.record(entry("02")).unwrap();
        assert_eq!(read(&path).unwrap(), vec![entry("01"), entry("02")]);
        fs::write(&path, format!("oops\n{good}\n")).unwrap();
        let err = read(&path).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
