//! Helpers shared by the end-to-end tests: running `ambit`, and a local cluster that is torn down on drop.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const AMBIT: &str = env!("CARGO_BIN_EXE_ambit");

pub fn require_root() {
    let uid = Command::new("id").arg("-u").output().expect("run id -u");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the netns end-to-end tests need root (they create network namespaces); run them as root"
    );
}

pub fn ambit(args: &[&str]) -> Output {
    Command::new(AMBIT).args(args).output().expect("run ambit")
}

/// Runs `ambit` with `input` on its standard input.
pub fn ambit_with_input(args: &[&str], input: &str) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(AMBIT)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ambit");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().expect("wait for ambit")
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn ok(args: &[&str]) -> String {
    let out = ambit(args);
    assert!(out.status.success(), "ambit {args:?} failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}{}-{tag}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

pub fn host_links() -> BTreeSet<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|s| s.trim().to_string()))
        .collect()
}

pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
            .unwrap_or(true)
}

/// A running test cluster, removed on drop.
pub struct TestCluster {
    pub name: String,
    pub dir: PathBuf,
    pub up_output: String,
}

impl TestCluster {
    /// Brings up a cluster from `manifest` under a unique name (`t<pid><n>-<tag>`), waiting up to 60 s for it.
    pub fn start(tag: &str, manifest: &str) -> Self {
        require_root();
        let name = unique(tag);
        let dir = std::env::temp_dir().join(format!("ambit-e2e-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cluster.yaml");
        std::fs::write(&file, manifest).unwrap();
        let mut cluster = Self {
            name,
            dir,
            up_output: String::new(),
        };
        let out = ambit(&[
            "cluster",
            "up",
            "-f",
            file.to_str().unwrap(),
            "--name",
            &cluster.name,
            "--wait",
            "60",
        ]);
        cluster.up_output = text(&out);
        assert!(out.status.success(), "cluster up failed: {}", cluster.up_output);
        cluster
    }

    pub fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = args.to_vec();
        v.extend(["--cluster", &self.name]);
        v
    }

    /// `ambit apply -f -` of `manifest`; panics if it fails; its standard output.
    pub fn apply(&self, manifest: &str) -> String {
        let out = ambit_with_input(&self.args(&["apply", "-f", "-"]), manifest);
        assert!(out.status.success(), "ambit apply failed: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ambit delete -f -` of `manifest`; panics if it fails; its standard output.
    pub fn delete(&self, manifest: &str) -> String {
        let out = ambit_with_input(&self.args(&["delete", "-f", "-"]), manifest);
        assert!(out.status.success(), "ambit delete failed: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pods of `namespace` as `ambit get pods -o json` lists them.
    pub fn get_pods(&self, namespace: &str) -> serde_json::Value {
        let out = ok(&self.args(&["get", "pods", "-n", namespace, "-o", "json"]));
        serde_json::from_str(&out).expect("pods as JSON")
    }

    /// The IP of pod `namespace/name`.
    pub fn pod_ip(&self, namespace: &str, name: &str) -> String {
        let pods = self.get_pods(namespace);
        let pod = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["metadata"]["name"] == name);
        let pod = pod.unwrap_or_else(|| panic!("no pod {namespace}/{name}"));
        pod["status"]["podIP"].as_str().unwrap().to_string()
    }

    /// Runs a shell command in a pod.
    pub fn exec(&self, namespace: &str, pod: &str, script: &str) -> Output {
        let mut args = self.args(&["exec", "-n", namespace, pod]);
        args.extend(["--", "sh", "-c", script]);
        ambit(&args)
    }

    pub fn exec_ok(&self, namespace: &str, pod: &str, script: &str) -> String {
        let out = self.exec(namespace, pod, script);
        assert!(
            out.status.success(),
            "`{script}` in {namespace}/{pod} failed: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The cluster's runtime directory.
    pub fn run_dir(&self) -> PathBuf {
        PathBuf::from(format!("/run/ambit/{}", self.name))
    }

    pub fn status(&self) -> serde_json::Value {
        let status = std::fs::read(format!("/run/ambit/{}/status.json", self.name)).unwrap();
        serde_json::from_slice(&status).unwrap()
    }

    pub fn supervisor_pid(&self) -> u32 {
        self.status()["supervisor_pid"].as_u64().unwrap() as u32
    }

    /// Every pid of a running container.
    pub fn container_pids(&self) -> Vec<u32> {
        self.status()["pods"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["containers"].as_array().unwrap().iter())
            .filter_map(|c| c["state"]["Running"]["pid"].as_u64().map(|p| p as u32))
            .collect()
    }

    pub fn down(&self) {
        ok(&["cluster", "down", "--name", &self.name]);
    }

    pub fn assert_gone(&self, pids: &[u32]) {
        let prefix = format!("ambit.{}.", self.name);
        assert_eq!(netns_with_prefix(&prefix), Vec::<String>::new(), "namespaces left");
        assert!(
            !Path::new(&format!("/run/ambit/{}", self.name)).exists(),
            "runtime dir left"
        );
        let etc: Vec<String> = std::fs::read_dir("/etc/netns")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            !etc.iter().any(|n| n.starts_with(&prefix)),
            "/etc/netns entries left: {etc:?}"
        );
        let alive: Vec<_> = pids.iter().filter(|p| pid_alive(**p)).collect();
        assert!(alive.is_empty(), "processes left: {alive:?}");
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = Command::new(AMBIT)
            .args(["cluster", "down", "--name", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `curl` from a pod: (succeeded, body).
pub fn curl(c: &TestCluster, ns: &str, pod: &str, url: &str) -> (bool, String) {
    let out = c.exec(ns, pod, &format!("curl -sS -m 5 {url}"));
    (out.status.success(), text(&out))
}

/// The node proxy's Prometheus exposition (`:15020/metrics`), read inside the node's namespace.
pub fn node_metrics(c: &TestCluster, node: &str) -> String {
    let ns = format!("ambit.{}.node.{node}", c.name);
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "curl",
            "-sS",
            "-m",
            "5",
            "http://127.0.0.1:15020/metrics",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "metrics of {node}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The series of `metric` whose labels include every `label="value"` of `labels`.
pub fn series<'a>(metrics: &'a str, metric: &str, labels: &[&str]) -> Vec<&'a str> {
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{metric}{{")))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .collect()
}

/// A packet capture on one fabric port, stopped (and read) by [`Capture::finish`].
pub struct Capture {
    child: Child,
    file: std::path::PathBuf,
}

impl Capture {
    /// Starts tcpdump on `port` inside the fabric namespace; returns once it captures.
    pub fn start(c: &TestCluster, port: &str) -> Self {
        let file = c.dir.join(format!("{port}.pcap"));
        let fabric = format!("ambit.{}.fabric", c.name);
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &fabric,
                "tcpdump",
                "-i",
                port,
                "-n",
                "-U",
                "--immediate-mode",
                "-s",
                "0",
                "-w",
            ])
            .arg(&file)
            .arg("tcp")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("tcpdump must be installed (make deps installs it)");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        assert!(line.contains("listening on"), "tcpdump did not start: {line}");
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Self { child, file }
    }

    /// Stops the capture and returns its IPv4 TCP segments.
    pub fn finish(mut self) -> Vec<Segment> {
        // Let the last packets reach the file before stopping.
        std::thread::sleep(Duration::from_millis(500));
        let pid = self.child.id().to_string();
        // tcpdump runs as the child of `ip netns exec`, which execs it: the pid is tcpdump's.
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let _ = self.child.wait();
        parse_pcap(&std::fs::read(&self.file).expect("read the capture"))
    }
}

/// One captured TCP segment.
#[derive(Debug)]
pub struct Segment {
    pub src: (Ipv4Addr, u16),
    pub dst: (Ipv4Addr, u16),
    pub payload: Vec<u8>,
}

/// The IPv4 TCP segments of an Ethernet pcap file (microsecond or nanosecond, little-endian as written here).
pub fn parse_pcap(data: &[u8]) -> Vec<Segment> {
    let u32le = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let u16be = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    assert!(data.len() >= 24, "capture too short");
    let magic = u32le(&data[0..4]);
    assert!(
        magic == 0xa1b2c3d4 || magic == 0xa1b23c4d,
        "not a little-endian pcap file"
    );
    assert_eq!(u32le(&data[20..24]), 1, "not an Ethernet capture");
    let mut segments = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let len = u32le(&data[at + 8..at + 12]) as usize;
        let frame = &data[at + 16..(at + 16 + len).min(data.len())];
        at += 16 + len;
        if frame.len() < 14 + 20 || u16be(&frame[12..14]) != 0x0800 {
            continue;
        }
        let ip = &frame[14..];
        let header = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16be(&ip[2..4])).min(ip.len());
        if ip[9] != 6 || total < header + 20 {
            continue;
        }
        let tcp = &ip[header..total];
        let offset = usize::from(tcp[12] >> 4) * 4;
        let addr = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
        segments.push(Segment {
            src: (addr(&ip[12..16]), u16be(&tcp[0..2])),
            dst: (addr(&ip[16..20]), u16be(&tcp[2..4])),
            payload: tcp[offset.min(tcp.len())..].to_vec(),
        });
    }
    segments
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Retries `check` every 100 ms for up to `limit`; returns whether it held.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pid of the `ambit node` process of `node`.
pub fn node_proxy_pid(c: &TestCluster, node: &str) -> Option<u32> {
    let ns = format!("ambit.{}.node.{node}", c.name);
    let out = Command::new("ip").args(["netns", "pids", &ns]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|pid| pid.parse::<u32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.get(1) == Some(&&b"node"[..]) && args.windows(2).any(|w| w[0] == b"--node" && w[1] == node.as_bytes())
        })
}
