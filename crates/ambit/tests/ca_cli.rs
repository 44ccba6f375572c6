//! The `ambit ca` and `ambit control` commands as a user runs them: issuing, printing the root, checking, and
//! refusing to start on an unsafe CA key. No root needed; each test works in its own temporary directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use ambit_identity::cert::{TrustBundle, WorkloadCertificate};
use ambit_types::Identity;

const AMBIT: &str = env!("CARGO_BIN_EXE_ambit");

fn ambit(args: &[&str]) -> Output {
    Command::new(AMBIT).args(args).output().expect("run ambit")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ambit-ca-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn issue_root_and_check() {
    let dir = temp_dir("issue");
    let (ca, out) = (dir.join("ca"), dir.join("out"));
    let (ca, out) = (ca.to_str().unwrap(), out.to_str().unwrap());
    let id = "spiffe://cluster.local/ns/web/sa/frontend";
    let issued = ambit(&[
        "ca",
        "issue",
        "--identity",
        id,
        "--out",
        out,
        "--ttl",
        "2h",
        "--ca-dir",
        ca,
    ]);
    assert!(issued.status.success(), "{}", text(&issued));

    let key = Path::new(out).join("key.pem");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let chain: Vec<String> = read(&Path::new(out).join("cert-chain.pem"))
        .split_inclusive("-----END CERTIFICATE-----\n")
        .map(str::to_string)
        .collect();
    let cert = WorkloadCertificate::from_pem(&chain, &read(&key)).unwrap();
    let want: Identity = id.parse().unwrap();
    assert_eq!(cert.identity(), &want);
    let ttl = cert.not_after().duration_since(cert.not_before()).unwrap().as_secs();
    assert!((2 * 3600..=2 * 3600 + 120).contains(&ttl), "validity {ttl}s");

    let root = ambit(&["ca", "root", "--ca-dir", ca]);
    assert!(root.status.success(), "{}", text(&root));
    let bundle = TrustBundle::from_pem(&String::from_utf8_lossy(&root.stdout)).unwrap();
    assert_eq!(bundle.verify(cert.chain(), SystemTime::now()).unwrap(), want);
    assert_eq!(
        read(&Path::new(out).join("root-cert.pem")),
        String::from_utf8_lossy(&root.stdout)
    );

    let check = ambit(&["ca", "check", "--ca-dir", ca]);
    assert!(check.status.success(), "{}", text(&check));
    assert!(text(&check).contains(id), "{}", text(&check));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_identities_are_refused_and_nothing_is_written() {
    let dir = temp_dir("bad");
    let (ca, out) = (dir.join("ca"), dir.join("out"));
    let (ca, out) = (ca.to_str().unwrap(), out.to_str().unwrap());
    for (id, want) in [
        ("spiffe://cluster.local/ns/web", "/ns/<namespace>/sa/<service-account>"),
        ("https://cluster.local/ns/web/sa/x", "spiffe://"),
        ("spiffe://other.domain/ns/web/sa/x", "trust domain"),
    ] {
        let issued = ambit(&["ca", "issue", "--identity", id, "--out", out, "--ca-dir", ca]);
        assert!(!issued.status.success(), "{id} was issued");
        assert!(text(&issued).contains(want), "{id}: want {want:?} in {}", text(&issued));
        assert!(!Path::new(out).join("cert-chain.pem").exists());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_ca_key_readable_by_others_stops_start_up() {
    let dir = temp_dir("perm");
    let ca = dir.join("ca");
    let ca = ca.to_str().unwrap();
    assert!(ambit(&["ca", "root", "--ca-dir", ca]).status.success());
    let key = Path::new(ca).join("ca-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();

    let root = ambit(&["ca", "root", "--ca-dir", ca]);
    assert!(!root.status.success());
    assert!(text(&root).contains("chmod 600"), "{}", text(&root));

    // The control plane refuses to start on it too.
    let plan = ambit_cluster::manifest::load(&[ambit_cluster::manifest::Source {
        name: "cluster.yaml".into(),
        text: "apiVersion: ambit.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  nodes: [{name: n1}]\n"
            .into(),
    }])
    .unwrap()
    .plan;
    let plan_file = dir.join("plan.json");
    std::fs::write(&plan_file, serde_json::to_vec(&plan).unwrap()).unwrap();
    let creds = dir.join("node-credentials.json");
    std::fs::write(&creds, format!("{{\"n1\": \"{}\"}}", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let args = [
        "--plan",
        plan_file.to_str().unwrap(),
        "--node-credentials",
        creds.to_str().unwrap(),
    ];
    let control = ambit(&[&["control", "--listen", "127.0.0.1:0", "--ca-dir", ca], &args[..]].concat());
    assert!(!control.status.success());
    assert!(text(&control).contains("chmod 600"), "{}", text(&control));
    let _ = std::fs::remove_dir_all(&dir);
}
