//! herd's TFTP server against real clients: tftp-hpa, curl and atftp fetch
//! files byte-for-byte, with and without blksize/windowsize, including one
//! large enough for block numbers to roll over; escapes and writes are refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use herd_pxe::tftp::{Config, Server, Subnet};
use herd_testkit::require;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

struct Fixture {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    shutdown: CancellationToken,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn start(config_edit: impl FnOnce(&mut Config)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("small.bin"), pseudo_random(70_000, 1)).unwrap();
    std::fs::write(root.join("sub/exact.bin"), pseudo_random(512 * 20, 2)).unwrap();
    std::fs::write(root.join("empty.bin"), b"").unwrap();
    std::fs::write(dir.path().join("secret"), b"outside").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), root.join("escape")).unwrap();
    let mut config = Config::new(root, vec!["127.0.0.0/8".parse::<Subnet>().unwrap()]);
    config_edit(&mut config);
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), config, None)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(server.run(shutdown.clone()));
    Fixture {
        dir,
        addr,
        shutdown,
    }
}

fn sha(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

async fn run(cmd: &mut tokio::process::Command) -> Output {
    tokio::time::timeout(std::time::Duration::from_secs(120), cmd.output())
        .await
        .expect("client timed out")
        .expect("client runs")
}

impl Fixture {
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("out-{name}"))
    }

    async fn curl(&self, file: &str, extra: &[&str], tag: &str) -> (Output, PathBuf) {
        let out = self.out(tag);
        let url = format!("tftp://{}/{file}", self.addr);
        let o = run(tokio::process::Command::new(require::tool("curl", "curl"))
            .args(["-sS", "--fail", "-o"])
            .arg(&out)
            .args(extra)
            .arg(url))
        .await;
        (o, out)
    }

    fn assert_same(&self, file: &str, out: &Path) {
        assert_eq!(
            sha(&self.root().join(file)),
            sha(out),
            "{file} differs from {}",
            out.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_fetches_with_default_and_negotiated_blksize() {
    let f = start(|_| {}).await;
    for (file, extra, tag) in [
        ("small.bin", &[][..], "c1"),
        ("small.bin", &["--tftp-blksize", "1468"][..], "c2"),
        ("sub/exact.bin", &[][..], "c3"),
        ("sub/exact.bin", &["--tftp-blksize", "8192"][..], "c4"),
        ("small.bin", &["--tftp-no-options"][..], "c6"),
    ] {
        let (o, out) = f.curl(file, extra, tag).await;
        assert!(o.status.success(), "curl {file} {extra:?}: {o:?}");
        f.assert_same(file, &out);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tftp_hpa_fetches_in_binary_mode() {
    let f = start(|_| {}).await;
    // curl fails on empty files by itself ("getpeername() failed"), so the
    // zero-length final block is checked with tftp-hpa.
    for file in ["small.bin", "empty.bin", "sub/exact.bin"] {
        let out = f.out(&file.replace('/', "_"));
        let o = run(
            tokio::process::Command::new(require::tool("tftp", "tftp-hpa"))
                .args([
                    "-m",
                    "binary",
                    &f.addr.ip().to_string(),
                    &f.addr.port().to_string(),
                    "-c",
                    "get",
                    file,
                ])
                .arg(&out),
        )
        .await;
        assert!(o.status.success(), "{o:?}");
        f.assert_same(file, &out);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atftp_fetches_with_windowsize_and_blksize() {
    let f = start(|_| {}).await;
    for (opts, tag) in [
        (vec!["--option", "windowsize 8"], "a1"),
        (
            vec!["--option", "windowsize 8", "--option", "blksize 1400"],
            "a2",
        ),
        (vec!["--option", "tsize 0", "--option", "timeout 2"], "a3"),
    ] {
        let out = f.out(tag);
        let o = run(
            tokio::process::Command::new(require::tool("atftp", "atftp"))
                .args(&opts)
                .args(["-g", "-r", "small.bin", "-l"])
                .arg(&out)
                .arg(f.addr.ip().to_string())
                .arg(f.addr.port().to_string()),
        )
        .await;
        assert!(o.status.success(), "atftp {opts:?}: {o:?}");
        f.assert_same("small.bin", &out);
    }
}

/// 40 MB at 512-byte blocks is 81,920 blocks: the block number wraps past 65535.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_file_rolls_block_numbers_over() {
    let f = start(|_| {}).await;
    std::fs::write(f.root().join("big.bin"), pseudo_random(40 << 20, 3)).unwrap();
    let (o, out) = f.curl("big.bin", &[], "big512").await;
    assert!(o.status.success(), "{o:?}");
    f.assert_same("big.bin", &out);
    let (o, out) = f
        .curl("big.bin", &["--tftp-blksize", "512"], "bigneg")
        .await;
    assert!(o.status.success(), "{o:?}");
    f.assert_same("big.bin", &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escapes_missing_files_and_writes_are_refused() {
    let f = start(|_| {}).await;
    for (file, tag) in [
        ("../secret", "e1"),
        ("escape", "e2"),
        ("/etc/passwd", "e3"),
        ("nope", "e4"),
    ] {
        let (o, out) = f.curl(file, &[], tag).await;
        assert!(!o.status.success(), "{file} was served");
        assert!(
            !out.exists() || std::fs::read(&out).unwrap().is_empty(),
            "{file} content leaked"
        );
    }
    // tftp-hpa put: the server answers the WRQ with an access violation.
    let src = f.out("upload");
    std::fs::write(&src, b"data").unwrap();
    let o = run(
        tokio::process::Command::new(require::tool("tftp", "tftp-hpa"))
            .args([
                "-m",
                "binary",
                &f.addr.ip().to_string(),
                &f.addr.port().to_string(),
                "-c",
                "put",
            ])
            .arg(&src)
            .arg("uploaded.bin"),
    )
    .await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(text.contains("read-only"), "tftp put output: {text}");
    assert!(!f.root().join("uploaded.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_blksize_switch_still_serves_with_512_byte_blocks() {
    let f = start(|c| c.refuse_blksize = true).await;
    let (o, out) = f.curl("small.bin", &["--tftp-blksize", "1468"], "rb").await;
    assert!(o.status.success(), "{o:?}");
    f.assert_same("small.bin", &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_from_outside_the_subnet_get_no_answer() {
    let f = start(|c| c.allowed = vec!["10.0.0.0/8".parse().unwrap()]).await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(b"\x00\x01small.bin\0octet\0", f.addr)
        .await
        .unwrap();
    let mut buf = [0u8; 600];
    let got =
        tokio::time::timeout(std::time::Duration::from_secs(2), sock.recv_from(&mut buf)).await;
    assert!(
        got.is_err(),
        "server answered a client outside its subnet: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_are_dropped_and_the_server_keeps_serving() {
    let f = start(|_| {}).await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for junk in [
        &b""[..],
        b"\x00",
        b"\x00\x01nofilenul",
        b"\x00\x09xx",
        &[0xffu8; 2000][..],
        b"\x00\x01f\0octet\0blksize\0",
    ] {
        sock.send_to(junk, f.addr).await.unwrap();
    }
    let (o, out) = f.curl("small.bin", &[], "after-junk").await;
    assert!(o.status.success(), "{o:?}");
    f.assert_same("small.bin", &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_beyond_the_cap_are_told_busy() {
    let f = start(|c| c.max_transfers = 1).await;
    // Hold one transfer open by requesting and never acknowledging.
    let holder = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    holder
        .send_to(b"\x00\x01small.bin\0octet\0", f.addr)
        .await
        .unwrap();
    let mut buf = [0u8; 600];
    let (n, _) = holder.recv_from(&mut buf).await.unwrap();
    assert_eq!(
        &buf[..4],
        b"\x00\x03\x00\x01",
        "first DATA block ({n} bytes)"
    );
    let other = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    other
        .send_to(b"\x00\x01small.bin\0octet\0", f.addr)
        .await
        .unwrap();
    let (n, _) = other.recv_from(&mut buf).await.unwrap();
    let reply = herd_pxe::tftp::packet::Packet::decode(&buf[..n]).unwrap();
    assert!(
        matches!(reply, herd_pxe::tftp::packet::Packet::Error { .. }),
        "{reply:?}"
    );
}
