//! `ambit ca check`: the CA certificate's validity and the status of every certificate in the ledger.

use std::fmt;
use std::time::{Duration, SystemTime};

use super::ledger::LedgerEntry;

/// A certificate that expires within this long is reported as expiring.
pub const EXPIRING_WITHIN: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertStatus {
    Valid,
    /// Valid now, but not for [`EXPIRING_WITHIN`] longer.
    Expiring,
    Expired,
}

impl CertStatus {
    pub fn at(not_after: SystemTime, now: SystemTime) -> Self {
        if not_after <= now {
            CertStatus::Expired
        } else if not_after <= now + EXPIRING_WITHIN {
            CertStatus::Expiring
        } else {
            CertStatus::Valid
        }
    }
}

impl fmt::Display for CertStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertStatus::Valid => "valid",
            CertStatus::Expiring => "expiring",
            CertStatus::Expired => "expired",
        })
    }
}

/// One ledger entry and its status at the time of the check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertReport {
    pub entry: LedgerEntry,
    pub status: CertStatus,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    pub ca_not_after: SystemTime,
    pub ca_status: CertStatus,
    /// In ledger order (oldest issue first).
    pub certificates: Vec<CertReport>,
}

impl CheckReport {
    /// Whether the CA certificate itself has expired (the check then fails).
    pub fn ca_expired(&self) -> bool {
        self.ca_status == CertStatus::Expired
    }
}

/// Classifies the CA certificate and every ledger entry at `now`.
pub fn check(ca_not_after: SystemTime, entries: Vec<LedgerEntry>, now: SystemTime) -> CheckReport {
    let certificates = entries
        .into_iter()
        .map(|entry| CertReport {
            status: CertStatus::at(entry.not_after, now),
            entry,
        })
        .collect();
    CheckReport {
        ca_not_after,
        ca_status: CertStatus::at(ca_not_after, now),
        certificates,
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn entry(not_after: u64) -> LedgerEntry {
        LedgerEntry {
            identity: "spiffe://cluster.local/ns/demo/sa/client".parse().unwrap(),
            serial: "0a".to_string(),
            not_before: UNIX_EPOCH,
            not_after: UNIX_EPOCH + Duration::from_secs(not_after),
            caller: "node-1".to_string(),
        }
    }

    #[test]
    fn statuses_at_the_boundaries() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        let report = check(
            now + Duration::from_secs(1),
            vec![entry(9_999), entry(10_000), entry(13_600), entry(13_601)],
            now,
        );
        let statuses: Vec<_> = report.certificates.iter().map(|c| c.status).collect();
        use CertStatus::*;
        assert_eq!(statuses, [Expired, Expired, Expiring, Valid]);
        assert_eq!(report.ca_status, Expiring);
        assert!(!report.ca_expired());
        assert!(check(now, vec![], now).ca_expired());
    }
}
