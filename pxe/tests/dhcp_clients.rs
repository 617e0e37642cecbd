//! herd's DHCP server against real clients (busybox udhcpc, ISC dhclient) and
//! a real second server (dnsmasq) on a bridge inside throwaway network namespaces.
//!
//! The server runs in-process on a thread that has entered the test's
//! namespace (`setns`), so these tests need only the library.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_pxe::dhcp::{BootConfig, Config, Event, EventKind, MacAddr, Mode, Pool, Server};
use herd_testkit::netns::Netns;
use herd_testkit::{process, require, wait};
use tokio_util::sync::CancellationToken;

const BRIDGE: &str = "hbr0";
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// Runs `f` on a fresh thread inside network namespace `ns`.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        // SAFETY: setns on a valid namespace fd affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// herd's DHCP server running in a namespace until dropped.
struct Running {
    token: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Running {
    fn start(ns: &Netns, config: Config) -> Running {
        // Server logs explain most failures; RUST_LOG=debug shows every dropped packet.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_test_writer()
            .try_init();
        let token = CancellationToken::new();
        let events = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (t, ev) = (token.clone(), events.clone());
        let thread = in_netns(ns.name(), move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
                let server = match Server::bind(config, tx).await {
                    Ok(s) => s,
                    Err(e) => {
                        ready_tx.send(Err(e.to_string())).unwrap();
                        return;
                    }
                };
                ready_tx.send(Ok(())).unwrap();
                let collector = tokio::spawn(async move {
                    while let Some(e) = rx.recv().await {
                        ev.lock().unwrap().push(e);
                    }
                });
                server.run(t).await.expect("server runs");
                collector.await.unwrap();
            });
        });
        ready_rx.recv().unwrap().expect("server binds");
        Running {
            token,
            thread: Some(thread),
            events,
        }
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    fn stop(mut self) {
        self.token.cancel();
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("server thread exits cleanly");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.token.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The server's namespace with a bridge, and a way to add client hosts.
struct Lab {
    ns: Netns,
    clients: Vec<Netns>,
    dir: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let ns = Netns::new();
        ns.bridge(BRIDGE, "10.77.0.1/24");
        let dir = std::env::temp_dir().join(format!("herd-dhcp-{}", ns.name()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Lab {
            ns,
            clients: Vec::new(),
            dir,
        }
    }

    fn config(&self) -> Config {
        let pool = Pool::new(
            "10.77.0.0/24".parse().unwrap(),
            Ipv4Addr::new(10, 77, 0, 100),
            Ipv4Addr::new(10, 77, 0, 150),
        )
        .unwrap();
        let mut c = Config::new(BRIDGE, SERVER_IP, pool, self.dir.join("state"));
        c.lease_time = Duration::from_secs(120);
        c.boot = BootConfig::new(SERVER_IP, "http://10.77.0.1:8080/boot.ipxe?mac=${mac}");
        c
    }

    /// A new host on the bridge (own namespace, interface `eth0`, given MAC).
    fn client(&mut self, mac: &str) -> usize {
        let host = Netns::new();
        let outer = self.ns.ifname("hv");
        let inner = self.ns.ifname("hc");
        // No address on the client side: that is what DHCP is for.
        self.ns.ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ]);
        self.ns.ip(&["link", "set", &outer, "master", BRIDGE]);
        self.ns.ip(&["link", "set", &outer, "up"]);
        self.ns.ip(&["link", "set", &inner, "netns", host.name()]);
        host.ip(&["link", "set", &inner, "name", "eth0"]);
        host.ip(&["link", "set", "eth0", "address", mac]);
        host.ip(&["link", "set", "eth0", "up"]);
        self.clients.push(host);
        self.clients.len() - 1
    }

    fn lease_file(&self) -> String {
        std::fs::read_to_string(self.dir.join("state").join("dhcp-leases.jsonl"))
            .unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A udhcpc event script that appends `EVENT ip=… boot_file=… siaddr=…` lines to `log`.
fn udhcpc_script(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let script = dir.join(format!("{name}.sh"));
    let mut f = std::fs::File::create(&script).unwrap();
    writeln!(
        f,
        // Configure first, log second: the test acts on the log line (e.g. sends
        // SIGUSR1 to renew), which needs the address in place.
        "#!/bin/sh\n\
         case $1 in\n\
         deconfig) ip addr flush dev $interface ;;\n\
         bound|renew) (ip addr flush dev $interface; ip addr add $ip/$subnet dev $interface) >> {log} 2>&1 ;;\n\
         esac\n\
         echo \"$1 ip=$ip mask=$subnet lease=$lease boot_file=$boot_file siaddr=$siaddr serverid=$serverid\" >> {log}",
        log = log.display()
    )
    .unwrap();
    drop(f);
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    (script, log)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits for a line starting with `event` in a udhcpc log and returns its `ip=`.
fn wait_event(log: &Path, event: &str, nth: usize) -> (Ipv4Addr, String) {
    wait::until(
        &format!("udhcpc `{event}` #{nth} in {}", log.display()),
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let text = read(log);
            let line = text
                .lines()
                .filter(|l| l.starts_with(&format!("{event} ")))
                .nth(nth - 1)?
                .to_owned();
            let ip = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("ip="))?
                .parse()
                .ok()?;
            Some((ip, line))
        },
    )
}

fn in_pool(ip: Ipv4Addr) -> bool {
    (u32::from(Ipv4Addr::new(10, 77, 0, 100))..=u32::from(Ipv4Addr::new(10, 77, 0, 150)))
        .contains(&u32::from(ip))
}

#[test]
fn udhcpc_lease_renew_release_and_restart() {
    let udhcpc = require::tool("udhcpc", "udhcpc");
    let mut lab = Lab::new();
    let a = lab.client("52:54:00:aa:00:01");
    let b = lab.client("52:54:00:aa:00:02");
    let server = Running::start(&lab.ns, lab.config());

    let (script, log) = udhcpc_script(&lab.dir, "a");
    let client = process::spawn(
        "udhcpc a",
        lab.clients[a]
            .command(&udhcpc)
            .args(["-f", "-i", "eth0", "-t", "10", "-T", "1", "-s"])
            .arg(&script),
    );
    let (ip_a, line) = wait_event(&log, "bound", 1);
    assert!(in_pool(ip_a), "{ip_a} outside the range: {line}");
    assert!(line.contains("mask=255.255.255.0"), "{line}");
    assert!(line.contains("serverid=10.77.0.1"), "{line}");
    assert!(
        line.contains("boot_file= "),
        "plain client got a boot file: {line}"
    );
    // The ACK was on disk before it was sent.
    let leases = lab.lease_file();
    assert!(
        leases.contains("52:54:00:aa:00:01") && leases.contains(&ip_a.to_string()),
        "lease not persisted: {leases}"
    );

    // Renew (SIGUSR1): same address, a new durable record.
    let binds_before = lab.lease_file().matches("\"bind\"").count();
    client.signal(libc::SIGUSR1);
    let (renewed, _) = wait_event(&log, "renew", 1);
    assert_eq!(renewed, ip_a);
    wait::until(
        "renewal persisted",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || (lab.lease_file().matches("\"bind\"").count() > binds_before).then_some(()),
    );

    // Release (SIGUSR2).
    client.signal(libc::SIGUSR2);
    wait::until(
        "release persisted",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || lab.lease_file().contains("\"release\"").then_some(()),
    );
    drop(client);

    // Bind again (a fresh udhcpc), then restart the server: the lease must survive.
    let (script2, log2) = udhcpc_script(&lab.dir, "a2");
    let _client = process::spawn(
        "udhcpc a2",
        lab.clients[a]
            .command(&udhcpc)
            .args(["-f", "-i", "eth0", "-t", "10", "-T", "1", "-s"])
            .arg(&script2),
    );
    let (again, _) = wait_event(&log2, "bound", 1);
    assert_eq!(again, ip_a, "a returning client gets its address back");
    let events = server.events();
    assert!(
        events.iter().any(|e| e.kind == EventKind::Acked
            && e.ip == Some(ip_a)
            && e.mac.to_string() == "52:54:00:aa:00:01"),
        "{events:?}"
    );
    server.stop();

    let _server = Running::start(&lab.ns, lab.config());
    let (script_b, log_b) = udhcpc_script(&lab.dir, "b");
    let _client_b = process::spawn(
        "udhcpc b",
        lab.clients[b]
            .command(&udhcpc)
            .args(["-f", "-q", "-i", "eth0", "-t", "10", "-T", "1", "-s"])
            .arg(&script_b),
    );
    let (ip_b, _) = wait_event(&log_b, "bound", 1);
    assert!(in_pool(ip_b));
    assert_ne!(
        ip_b, ip_a,
        "after a restart the server handed a's live lease to b"
    );
}

/// udhcpc does not set the broadcast bit, so RFC 2131 §4.1 wants the OFFER
/// and ACK unicast to the new address: herd adds the neighbour entry for
/// the client's MAC on the interface first (as dnsmasq does), which is
/// then in the server's neighbour table before the client has sent a
/// single ARP packet.
#[test]
fn replies_to_clients_without_the_broadcast_bit_are_unicast_via_an_injected_neighbour() {
    let udhcpc = require::tool("udhcpc", "udhcpc");
    let mut lab = Lab::new();
    let a = lab.client("52:54:00:aa:00:42");
    let server = Running::start(&lab.ns, lab.config());
    let (script, log) = udhcpc_script(&lab.dir, "unicast");
    let _client = process::spawn(
        "udhcpc unicast",
        lab.clients[a]
            .command(&udhcpc)
            .args(["-f", "-i", "eth0", "-t", "10", "-T", "1", "-s"])
            .arg(&script),
    );
    let (ip, line) = wait_event(&log, "bound", 1);
    assert!(in_pool(ip), "{line}");
    let neigh = lab
        .ns
        .command("ip")
        .args(["neigh", "show", &ip.to_string(), "dev", BRIDGE])
        .output()
        .unwrap();
    let neigh = String::from_utf8_lossy(&neigh.stdout).into_owned();
    assert!(
        neigh.contains("lladdr 52:54:00:aa:00:42"),
        "no neighbour entry for {ip}: {neigh:?}"
    );
    assert!(
        server
            .events()
            .iter()
            .any(|e| e.kind == EventKind::Acked && e.ip == Some(ip)),
        "{:?}",
        server.events()
    );
}

#[test]
fn udhcpc_as_pxe_firmware_gets_boot_file_and_reserved_address() {
    let udhcpc = require::tool("udhcpc", "udhcpc");
    let mut lab = Lab::new();
    let c = lab.client("52:54:00:bb:00:07");
    let mut config = lab.config();
    let reserved = Ipv4Addr::new(10, 77, 0, 140);
    config
        .reservations
        .insert("52:54:00:bb:00:07".parse::<MacAddr>().unwrap(), reserved);
    let server = Running::start(&lab.ns, config);

    // BIOS PXE ROM: option 93 = 0, vendor class PXEClient.
    let (script, log) = udhcpc_script(&lab.dir, "pxe");
    let _client = process::spawn(
        "udhcpc pxe",
        lab.clients[c]
            .command(&udhcpc)
            .args([
                "-f",
                "-q",
                "-i",
                "eth0",
                "-t",
                "10",
                "-T",
                "1",
                "-V",
                "PXEClient:Arch:00000:UNDI:002001",
                "-x",
                "0x5d:0000",
                "-s",
            ])
            .arg(&script),
    );
    let (ip, line) = wait_event(&log, "bound", 1);
    assert_eq!(ip, reserved, "{line}");
    assert!(line.contains("boot_file=undionly.kpxe"), "{line}");
    assert!(line.contains("siaddr=10.77.0.1"), "{line}");

    // The same machine after chain-loading iPXE (user class "iPXE") gets its script URL.
    let (script, log) = udhcpc_script(&lab.dir, "ipxe");
    let _client = process::spawn(
        "udhcpc ipxe",
        lab.clients[c]
            .command(&udhcpc)
            .args([
                "-f",
                "-q",
                "-i",
                "eth0",
                "-t",
                "10",
                "-T",
                "1",
                "-V",
                "PXEClient:Arch:00007:UNDI:003016",
                "-x",
                "0x5d:0007",
                "-x",
                "0x4d:69505845",
                "-s",
            ])
            .arg(&script),
    );
    let (ip, line) = wait_event(&log, "bound", 1);
    assert_eq!(ip, reserved);
    assert!(
        line.contains("boot_file=http://10.77.0.1:8080/boot.ipxe?mac=52:54:00:bb:00:07"),
        "{line}"
    );
    let events = server.events();
    assert!(
        events
            .iter()
            .any(|e| e.arch == Some(0) && e.boot_file.as_deref() == Some("undionly.kpxe")),
        "{events:?}"
    );
}

#[test]
fn dhclient_gets_a_lease_and_releases_it() {
    let dhclient = require::tool("dhclient", "isc-dhcp-client");
    let mut lab = Lab::new();
    let c = lab.client("52:54:00:cc:00:01");
    let _server = Running::start(&lab.ns, lab.config());
    let log = lab.dir.join("dhclient.log");
    let script = lab.dir.join("dhclient.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$reason ip=$new_ip_address mask=$new_subnet_mask\" >> {}\n\
             case $reason in\n\
             BOUND|RENEW|REBIND|REBOOT) ip addr flush dev $interface; ip addr add $new_ip_address/$new_subnet_mask dev $interface ;;\n\
             esac\n",
            log.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let lf = lab.dir.join("dhclient.leases");
    let pf = lab.dir.join("dhclient.pid");
    let args = |extra: &[&str]| {
        let mut cmd = lab.clients[c].command(&dhclient);
        cmd.args(extra)
            .arg("-sf")
            .arg(&script)
            .arg("-lf")
            .arg(&lf)
            .arg("-pf")
            .arg(&pf)
            .arg("eth0");
        cmd
    };
    let _client = process::spawn("dhclient", &mut args(&["-4", "-d", "-1", "-v"]));
    let (ip, line) = wait::until(
        "dhclient BOUND",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let text = read(&log);
            let line = text.lines().find(|l| l.starts_with("BOUND "))?.to_owned();
            let ip: Ipv4Addr = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("ip="))?
                .parse()
                .ok()?;
            Some((ip, line))
        },
    );
    assert!(in_pool(ip), "{line}");
    assert!(line.contains("mask=255.255.255.0"), "{line}");
    assert!(
        read(&lf).contains(&ip.to_string()),
        "dhclient's own lease file lacks {ip}"
    );
    let status = args(&["-4", "-r"]).status().expect("dhclient -r");
    assert!(status.success());
    wait::until(
        "release persisted",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || lab.lease_file().contains("\"release\"").then_some(()),
    );
}

/// Sends `packets` from a host on the bridge to the server's port 67.
fn blast(host: &Netns, packets: Vec<Vec<u8>>) {
    host.ip(&["addr", "add", "10.77.0.9/24", "dev", "eth0"]);
    in_netns(host.name(), move || {
        let s = UdpSocket::bind("10.77.0.9:0").unwrap();
        for p in packets {
            s.send_to(&p, SocketAddr::from((SERVER_IP, 67))).unwrap();
        }
    })
    .join()
    .unwrap();
    host.ip(&["addr", "flush", "dev", "eth0"]);
}

#[test]
fn malformed_packets_are_dropped_and_the_server_keeps_answering() {
    let udhcpc = require::tool("udhcpc", "udhcpc");
    let mut lab = Lab::new();
    let c = lab.client("52:54:00:dd:00:01");
    let _server = Running::start(&lab.ns, lab.config());

    let panic_packet = include_bytes!("data/dhcp-decoder-panic.bin").to_vec();
    let mut with_cookie = panic_packet.clone();
    with_cookie[0] = 1;
    with_cookie[236..240].copy_from_slice(&[99, 130, 83, 99]);
    let mut bogus_len = vec![0u8; 236];
    bogus_len[0] = 1;
    bogus_len[1] = 1;
    bogus_len[2] = 6;
    bogus_len.extend_from_slice(&[99, 130, 83, 99, 53, 1, 1, 61, 200, 1, 2]);
    let mut big_hlen = bogus_len.clone();
    big_hlen[2] = 200;
    let packets = vec![
        panic_packet,
        with_cookie,
        bogus_len,
        big_hlen,
        vec![],
        vec![1; 10],
        vec![1; 239],
        vec![0xff; 1400],
        vec![1; 60_000], // oversized
    ];
    blast(&lab.clients[c], packets);

    let (script, log) = udhcpc_script(&lab.dir, "after");
    let _client = process::spawn(
        "udhcpc",
        lab.clients[c]
            .command(&udhcpc)
            .args(["-f", "-q", "-i", "eth0", "-t", "10", "-T", "1", "-s"])
            .arg(&script),
    );
    let (ip, _) = wait_event(&log, "bound", 1);
    assert!(in_pool(ip));
}

/// Collects DHCP replies on port 68 for `window` after sending `request` to `to`.
fn exchange(
    host: &Netns,
    request: Vec<u8>,
    to: SocketAddr,
    window: Duration,
) -> Vec<(SocketAddr, dhcproto::v4::Message)> {
    exchange_on(host, 68, request, to, window)
}

/// Like [`exchange`], listening on `port` (67 for a relay agent).
fn exchange_on(
    host: &Netns,
    port: u16,
    request: Vec<u8>,
    to: SocketAddr,
    window: Duration,
) -> Vec<(SocketAddr, dhcproto::v4::Message)> {
    in_netns(host.name(), move || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        s.set_broadcast(true).unwrap();
        s.bind_device(Some(b"eth0")).unwrap();
        s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())
            .unwrap();
        let s: UdpSocket = s.into();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s.send_to(&request, to).unwrap();
        let deadline = std::time::Instant::now() + window;
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while std::time::Instant::now() < deadline {
            if let Ok((n, from)) = s.recv_from(&mut buf)
                && let Ok(msg) = herd_pxe::dhcp::handler::decode(&buf[..n])
            {
                out.push((from, msg));
            }
        }
        out
    })
    .join()
    .unwrap()
}

fn pxe_message(kind: dhcproto::v4::MessageType, mac: [u8; 6]) -> dhcproto::v4::Message {
    use dhcproto::v4::{DhcpOption, Flags, Message};
    let mut m = Message::new_with_id(
        0xfeed,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    m.set_flags(Flags::default().set_broadcast());
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ClassIdentifier(
        b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
    ));
    o.insert(DhcpOption::ClientSystemArchitecture(0u16.into()));
    o.insert(DhcpOption::ClientMachineIdentifier(
        [vec![0], vec![0x42; 16]].concat(),
    ));
    m
}

#[test]
fn proxy_dhcp_next_to_dnsmasq() {
    use dhcproto::Encodable;
    use dhcproto::v4::{DhcpOption, MessageType, OptionCode};
    let dnsmasq = require::tool("dnsmasq", "dnsmasq-base");
    let mut lab = Lab::new();
    // dnsmasq owns the addresses, on its own host on the bridge.
    let d = lab.client("52:54:00:ee:00:02");
    lab.clients[d].ip(&["addr", "add", "10.77.0.2/24", "dev", "eth0"]);
    let leasefile = lab.dir.join("dnsmasq.leases");
    let _dnsmasq = process::spawn(
        "dnsmasq",
        lab.clients[d]
            .command(&dnsmasq)
            .args([
                "--no-daemon",
                "--port=0",
                "--interface=eth0",
                "--bind-interfaces",
                "--dhcp-range=10.77.0.50,10.77.0.60,255.255.255.0,2m",
                "--no-ping",
                "--dhcp-authoritative",
                "--conf-file=/dev/null",
                "--pid-file=",
            ])
            .arg(format!("--dhcp-leasefile={}", leasefile.display())),
    );
    let mut config = lab.config();
    config.mode = Mode::Proxy;
    let server = Running::start(&lab.ns, config);
    let c = lab.client("52:54:00:ee:00:01");
    let mac = [0x52, 0x54, 0, 0xee, 0, 1];

    let discover = pxe_message(MessageType::Discover, mac).to_vec().unwrap();
    let offers = wait::until(
        "offers from dnsmasq and herd",
        Duration::from_secs(20),
        Duration::from_millis(10),
        || {
            let offers = exchange(
                &lab.clients[c],
                discover.clone(),
                SocketAddr::from((Ipv4Addr::BROADCAST, 67)),
                Duration::from_secs(2),
            );
            let from_dnsmasq = offers.iter().any(|(_, m)| {
                m.opts().get(OptionCode::ServerIdentifier)
                    == Some(&DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 77, 0, 2)))
            });
            let from_herd = offers.iter().any(|(_, m)| {
                m.opts().get(OptionCode::ServerIdentifier)
                    == Some(&DhcpOption::ServerIdentifier(SERVER_IP))
            });
            (from_dnsmasq && from_herd).then_some(offers)
        },
    );
    let dnsmasq_offer = offers
        .iter()
        .map(|(_, m)| m)
        .find(|m| {
            m.opts().get(OptionCode::ServerIdentifier)
                == Some(&DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 77, 0, 2)))
        })
        .unwrap();
    let ip = dnsmasq_offer.yiaddr();
    assert!((50..=60).contains(&ip.octets()[3]), "dnsmasq offered {ip}");
    let herd_offer = offers
        .iter()
        .map(|(_, m)| m)
        .find(|m| {
            m.opts().get(OptionCode::ServerIdentifier)
                == Some(&DhcpOption::ServerIdentifier(SERVER_IP))
        })
        .unwrap();
    assert_eq!(
        herd_offer.yiaddr(),
        Ipv4Addr::UNSPECIFIED,
        "proxyDHCP must not offer an address"
    );
    assert_eq!(
        herd_offer.opts().get(OptionCode::BootfileName),
        Some(&DhcpOption::BootfileName(b"undionly.kpxe".to_vec()))
    );
    assert_eq!(
        herd_offer.opts().get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    assert!(
        herd_offer
            .opts()
            .get(OptionCode::VendorExtensions)
            .is_some()
    );

    // Having taken dnsmasq's address, the ROM asks herd's port 4011 for the boot file.
    lab.clients[c].ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
    let mut request = pxe_message(MessageType::Request, mac);
    request.set_ciaddr(ip);
    let acks = exchange(
        &lab.clients[c],
        request.to_vec().unwrap(),
        SocketAddr::from((SERVER_IP, 4011)),
        Duration::from_secs(2),
    );
    let (from, ack) = acks
        .iter()
        .find(|(_, m)| m.opts().msg_type() == Some(MessageType::Ack))
        .expect("an ACK from port 4011");
    assert_eq!(*from, SocketAddr::from((SERVER_IP, 4011)));
    assert_eq!(
        ack.opts().get(OptionCode::BootfileName),
        Some(&DhcpOption::BootfileName(b"undionly.kpxe".to_vec()))
    );
    assert_eq!(
        ack.opts().get(OptionCode::ClientMachineIdentifier),
        Some(&DhcpOption::ClientMachineIdentifier(
            [vec![0], vec![0x42; 16]].concat()
        ))
    );
    let events = server.events();
    assert!(
        events
            .iter()
            .any(|e| e.kind == EventKind::ProxyAcked && e.uuid == Some([0x42; 16])),
        "{events:?}"
    );
    assert!(
        !lab.lease_file().contains("bind"),
        "proxy mode must not lease addresses"
    );
}

#[test]
fn relayed_requests_use_the_relay_subnet_and_go_back_to_giaddr() {
    use dhcproto::Encodable;
    use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
    let mut lab = Lab::new();
    // A relay agent on the bridge at 10.77.0.5 serving subnet 10.88.0.0/24 as 10.88.0.1.
    let r = lab.client("52:54:00:ff:00:05");
    lab.clients[r].ip(&["addr", "add", "10.77.0.5/24", "dev", "eth0"]);
    lab.clients[r].ip(&["addr", "add", "10.88.0.1/32", "dev", "lo"]);
    lab.ns
        .ip(&["route", "add", "10.88.0.0/24", "via", "10.77.0.5"]);
    let mut config = lab.config();
    let mut relayed = Pool::new(
        "10.88.0.0/24".parse().unwrap(),
        Ipv4Addr::new(10, 88, 0, 100),
        Ipv4Addr::new(10, 88, 0, 110),
    )
    .unwrap();
    relayed.router = Some(Ipv4Addr::new(10, 88, 0, 1));
    config.pools.push(relayed);
    let _server = Running::start(&lab.ns, config);

    let chaddr = [0x52, 0x54, 0, 0x88, 0, 1];
    let relayed_msg = |kind| {
        let mut m = Message::new_with_id(
            0xabcd,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 88, 0, 1),
            &chaddr,
        );
        m.set_hops(1);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        m
    };
    let server = SocketAddr::from((SERVER_IP, 67));
    let replies = exchange_on(
        &lab.clients[r],
        67,
        relayed_msg(MessageType::Discover).to_vec().unwrap(),
        server,
        Duration::from_secs(2),
    );
    let (from, offer) = replies.first().expect("an OFFER sent back to the relay");
    assert_eq!(*from, server);
    let ip = offer.yiaddr();
    assert!(
        (100..=110).contains(&ip.octets()[3]) && ip.octets()[..3] == [10, 88, 0],
        "offered {ip}"
    );
    assert_eq!(offer.giaddr(), Ipv4Addr::new(10, 88, 0, 1));
    assert_eq!(
        offer.opts().get(OptionCode::Router),
        Some(&DhcpOption::Router(vec![Ipv4Addr::new(10, 88, 0, 1)]))
    );

    let mut request = relayed_msg(MessageType::Request);
    request
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(ip));
    request
        .opts_mut()
        .insert(DhcpOption::ServerIdentifier(SERVER_IP));
    let replies = exchange_on(
        &lab.clients[r],
        67,
        request.to_vec().unwrap(),
        server,
        Duration::from_secs(2),
    );
    let (_, ack) = replies.first().expect("an ACK sent back to the relay");
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), ip);
    assert!(lab.lease_file().contains(&ip.to_string()));
}
