//! `ambit ca root|issue|check`: the CA's trust bundle, certificates issued directly with the CA key, and a report of
//! the CA's validity and of every certificate it issued.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use ambit_control::ca::check::{CheckReport, check};
use ambit_control::ca::ledger::{self, Ledger, LedgerEntry};
use ambit_control::ca::open_ca;
use ambit_control::config::{DEFAULT_CA_DIR, DEFAULT_TRUST_DOMAIN};
use ambit_identity::ca::{CaConfig, CertificateAuthority, ROOT_CERT_FILE};
use ambit_identity::manager::rfc3339;
use ambit_types::{Identity, TrustDomain};
use anyhow::Context;
use comfy_table::{Table, presets::NOTHING};

/// The caller recorded in the ledger for `ambit ca issue`.
const ISSUE_CALLER: &str = "local:ambit-ca-issue";

#[derive(clap::Subcommand, Debug)]
pub enum CaCommand {
    /// Print the trust bundle (PEM). Creates the self-signed root on first use, as `ambit control` does.
    Root(CaDir),
    /// Issue a certificate directly with the CA key (for tests and workloads outside the mesh).
    Issue(IssueArgs),
    /// Report the CA certificate's validity and every issued certificate; exit code 1 if the CA has expired.
    Check(CaDir),
}

/// Which CA: the self-signed root in `--ca-dir`, or the plug-in CA of `--cacerts`.
#[derive(clap::Args, Debug)]
pub struct CaDir {
    /// The self-signed root CA and the ledger of issued certificates.
    #[arg(long, default_value = DEFAULT_CA_DIR, value_name = "DIR")]
    ca_dir: PathBuf,
    /// Plug-in CA in Istio's cacerts layout; it replaces the root of --ca-dir (the ledger stays there).
    #[arg(long, value_name = "DIR")]
    cacerts: Option<PathBuf>,
    #[arg(long, default_value = DEFAULT_TRUST_DOMAIN, value_name = "TD", value_parser = super::control::parse_trust_domain)]
    trust_domain: TrustDomain,
}

#[derive(clap::Args, Debug)]
pub struct IssueArgs {
    /// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>
    #[arg(long, value_name = "SPIFFE_ID")]
    identity: Identity,
    /// Directory to write cert-chain.pem, key.pem (mode 0600) and root-cert.pem into.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Validity, e.g. 24h (default: the CA's default).
    #[arg(long, value_name = "DURATION", value_parser = ambit_apps::load::parse_duration)]
    ttl: Option<Duration>,
    #[command(flatten)]
    ca: CaDir,
}

pub fn run(cmd: CaCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CaCommand::Root(dir) => {
            print!("{}", dir.open()?.trust_bundle().to_pem());
            Ok(ExitCode::SUCCESS)
        }
        CaCommand::Issue(args) => issue(args),
        CaCommand::Check(dir) => run_check(&dir),
    }
}

impl CaDir {
    fn open(&self) -> anyhow::Result<CertificateAuthority> {
        let config = CaConfig::new(self.trust_domain.clone());
        Ok(open_ca(&self.ca_dir, self.cacerts.as_deref(), config)?)
    }
}

fn issue(args: IssueArgs) -> anyhow::Result<ExitCode> {
    let ca = args.ca.open()?;
    let cert = ca.issue(&args.identity, args.ttl, SystemTime::now())?;
    let ledger = Ledger::open(&args.ca.ca_dir)?;
    ledger.record(LedgerEntry::from_certificate(&cert, ISSUE_CALLER))?;
    let out = &args.out;
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write_file(&out.join("cert-chain.pem"), &cert.chain_pem().concat(), 0o644)?;
    write_file(&out.join("key.pem"), &cert.key_pem(), 0o600)?;
    write_file(&out.join("root-cert.pem"), &ca.trust_bundle().to_pem(), 0o644)?;
    let until = rfc3339(cert.not_after());
    println!(
        "issued {} (serial {}, valid until {until}) into {}",
        cert.identity(),
        cert.serial(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to `path` with exactly `mode` (also when the file already existed).
fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn run_check(dir: &CaDir) -> anyhow::Result<ExitCode> {
    if dir.cacerts.is_none() && !dir.ca_dir.join(ROOT_CERT_FILE).exists() {
        anyhow::bail!(
            "no CA in {}: `ambit control` creates it on first start",
            dir.ca_dir.display()
        );
    }
    let ca = dir.open()?;
    let ledger_file = dir.ca_dir.join(ledger::LEDGER_FILE);
    let entries = if ledger_file.exists() {
        ledger::read(&ledger_file)?
    } else {
        Vec::new()
    };
    let now = SystemTime::now();
    let report = check(ca.not_after(), entries, now);
    print_report(&report, now);
    Ok(if report.ca_expired() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_report(report: &CheckReport, now: SystemTime) {
    let until = rfc3339(report.ca_not_after);
    println!(
        "CA certificate: {} (not after {until}, {})",
        report.ca_status,
        relative(report.ca_not_after, now)
    );
    if report.certificates.is_empty() {
        println!("no certificate issued yet");
        return;
    }
    let mut table = Table::new();
    table.load_style(NOTHING);
    table.set_header(["IDENTITY", "SERIAL", "CALLER", "NOT AFTER", "STATUS"]);
    for cert in &report.certificates {
        let entry = &cert.entry;
        let not_after = format!("{} ({})", rfc3339(entry.not_after), relative(entry.not_after, now));
        let row = [
            entry.identity.to_string(),
            entry.serial.clone(),
            entry.caller.clone(),
            not_after,
            cert.status.to_string(),
        ];
        table.add_row(row);
    }
    println!("{table}");
}

/// `in 3h12m` or `2d4h ago`.
fn relative(at: SystemTime, now: SystemTime) -> String {
    match at.duration_since(now) {
        Ok(ahead) => format!("in {}", short_duration(ahead)),
        Err(behind) => format!("{} ago", short_duration(behind.duration())),
    }
}

/// The two largest units of a duration: `2d4h`, `3h12m`, `5m0s`, `42s`.
fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, minutes, seconds) = (s / 86_400, s % 86_400 / 3_600, s % 3_600 / 60, s % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) => format!("{minutes}m{seconds}s"),
        (0, _, _) => format!("{hours}h{minutes}m"),
        _ => format!("{days}d{hours}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_durations() {
        assert_eq!(short_duration(Duration::from_secs(42)), "42s");
        assert_eq!(short_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(short_duration(Duration::from_secs(3 * 3600 + 12 * 60 + 5)), "3h12m");
        assert_eq!(short_duration(Duration::from_secs(2 * 86_400 + 4 * 3600)), "2d4h");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(relative(now + Duration::from_secs(60), now), "in 1m0s");
        assert_eq!(relative(now - Duration::from_secs(60), now), "1m0s ago");
    }
}
