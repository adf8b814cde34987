//! Hosts for the EVPN tests: each a network namespace of its own (`tse-<pid>-<n>`), running
//! gobgpd (its API on the namespace's loopback) or FRR, removed on drop (daemons killed by
//! PID, namespace deleted), also when a test fails.
#![allow(dead_code)] // each test binary uses part of it

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tapswitch_evpn::GobgpClient;

pub const API: &str = "127.0.0.1:50051";
pub const ASN: u16 = 65000;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[macro_export]
macro_rules! require_root_and_gobgpd {
    () => {
        if !common::is_root() {
            eprintln!("skipped: needs root (network namespaces)");
            return;
        }
        if std::process::Command::new("gobgpd")
            .arg("--version")
            .output()
            .is_err()
        {
            panic!("gobgpd is not installed (Debian package gobgpd; scripts/install-deps.sh)");
        }
    };
}

pub fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("running ip");
    assert!(status.success(), "ip {args:?} failed");
}

/// A namespace with its loopback up, running one gobgpd; removed on drop.
pub struct Host {
    pub netns: String,
    pub dir: PathBuf,
    daemons: Vec<Child>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}-{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Host {
    pub fn new() -> Host {
        let netns = unique("tse-");
        ip(&["netns", "add", &netns]);
        let dir = std::env::temp_dir().join(&netns);
        let host = Host {
            netns,
            dir,
            daemons: Vec::new(),
        };
        ip(&["-n", &host.netns, "link", "set", "lo", "up"]);
        std::fs::create_dir_all(&host.dir).unwrap();
        host
    }

    /// Starts gobgpd with this config (TOML) and waits until its API answers.
    pub fn start_gobgpd(&mut self, config: &str) {
        let path = self.dir.join("gobgpd.toml");
        std::fs::write(&path, config).unwrap();
        let config = path.to_str().expect("a UTF-8 temp dir").to_owned();
        self.start_daemon(
            "gobgpd",
            "gobgpd",
            &["-p", "--pprof-disable", "--api-hosts", API, "-f", &config],
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = self.run(|| async {
                match GobgpClient::connect(API).await {
                    Ok(mut client) => client.global().await.is_ok(),
                    Err(_) => false,
                }
            });
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gobgpd in {} did not answer on {API}: {}",
                self.netns,
                std::fs::read_to_string(self.dir.join("gobgpd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts a daemon in this namespace (in the foreground, logging to `DIR/<name>.log`);
    /// it is killed by PID on drop.
    pub fn start_daemon(&mut self, name: &str, program: &str, args: &[&str]) {
        let log = File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        self.daemons.push(child);
    }

    /// Kills every daemon of this host (by PID) and waits for them.
    pub fn stop_daemons(&mut self) {
        for mut child in self.daemons.drain(..) {
            // `ip netns exec` execs the daemon, so this PID is the daemon's own.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs a command in this namespace and returns its stdout.
    pub fn output(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `body` on a current-thread tokio runtime on a thread inside this namespace, so
    /// every socket it opens (the gRPC connection) is the namespace's.
    pub fn run<F, Fut, T>(&self, body: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        self.spawn(body)
            .join()
            .expect("the namespace thread panicked")
    }

    /// Like [`Host::run`], without waiting for the body to end.
    pub fn spawn<F, Fut, T>(&self, body: F) -> std::thread::JoinHandle<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let netns = File::open(format!("/run/netns/{}", self.netns)).unwrap();
        std::thread::spawn(move || {
            // SAFETY: `netns` is an open namespace file; setns moves only this thread,
            // which exists for this body alone and ends with it.
            let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(body())
        })
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop_daemons();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A veth between two hosts, `a_addr/24` on A's end and `b_addr/24` on B's, both up.
pub fn connect(a: &Host, a_addr: Ipv4Addr, b: &Host, b_addr: Ipv4Addr) {
    let link = unique("tse");
    let (link_a, link_b) = (format!("{link}a"), format!("{link}b"));
    ip(&[
        "-n", &a.netns, "link", "add", &link_a, "type", "veth", "peer", "name", &link_b, "netns",
        &b.netns,
    ]);
    for (host, addr, dev) in [(a, a_addr, &link_a), (b, b_addr, &link_b)] {
        let addr = format!("{addr}/24");
        ip(&["-n", &host.netns, "addr", "add", &addr, "dev", dev]);
        ip(&["-n", &host.netns, "link", "set", dev, "up"]);
    }
}

/// Polls `check` every 200 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn gobgpd_config(router_id: Ipv4Addr, neighbors: &[Ipv4Addr]) -> String {
    let mut config = format!(
        "[global.config]\nas = {ASN}\nrouter-id = \"{router_id}\"\nlocal-address-list = [\"{router_id}\"]\n"
    );
    for neighbor in neighbors {
        config.push_str(&format!(
            "[[neighbors]]\n[neighbors.config]\nneighbor-address = \"{neighbor}\"\npeer-as = {ASN}\n\
             [neighbors.transport.config]\nlocal-address = \"{router_id}\"\n\
             [[neighbors.afi-safis]]\n[neighbors.afi-safis.config]\nafi-safi-name = \"l2vpn-evpn\"\n"
        ));
    }
    config
}
