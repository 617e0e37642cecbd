//! `herd pxe serve` over HTTP and TFTP with real clients (curl, tftp-hpa):
//! per-machine scripts, Range on boot assets, cloud-config templates, the
//! inventory API and `herd pxe machines`, profile groups, reload on SIGHUP
//! and on file change.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use herd_tests::{bin, netns::Netns, process, require, wait};

struct Served {
    dir: tempfile::TempDir,
    ns: Netns,
    server: process::Guard,
}

const URL: &str = "http://127.0.0.1:8080";

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Starts `herd pxe serve --no-dhcp` on the loopback of a fresh namespace
/// (so ports 69 and 8080 are free), with `args` choosing the profiles.
fn serve(dir: tempfile::TempDir, args: &[String]) -> Served {
    require::tool("curl", "curl");
    let ns = Netns::new();
    let mut cmd = ns.command(bin::herd());
    cmd.args(["pxe", "serve", "--no-dhcp", "--address", "127.0.0.1/8"])
        .args(args)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--tftp-root")
        .arg(dir.path())
        .stdout(std::fs::File::create(dir.path().join("server.out")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("server.err")).unwrap());
    let server = process::spawn("herd pxe serve", &mut cmd);
    let s = Served { dir, ns, server };
    wait::until(
        "herd pxe serve to answer",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            s.curl(&["-sf", &format!("{URL}/boot.ipxe")])
                .status
                .success()
                .then_some(())
        },
    );
    s
}

impl Served {
    fn curl(&self, args: &[&str]) -> Output {
        self.ns
            .command("curl")
            .args(["--max-time", "30"])
            .args(args)
            .output()
            .unwrap()
    }

    fn get(&self, path: &str) -> (u16, String) {
        let out = self.curl(&["-s", "-w", "\n%{http_code}", &format!("{URL}{path}")]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.parse().unwrap(), body.to_owned())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.out")).unwrap_or_default()
            + &std::fs::read_to_string(self.dir.path().join("server.err")).unwrap_or_default()
    }
}

fn assets(dir: &Path) -> (PathBuf, PathBuf) {
    let kernel: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let initrd: Vec<u8> = (0..1_000_000u32).map(|i| (i * 13 % 253) as u8).collect();
    (
        write(dir, "vmlinuz", &kernel),
        write(dir, "initrd.img", &initrd),
    )
}

#[test]
fn quick_start_serves_scripts_assets_with_range_and_cloud_config() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, initrd) = assets(dir.path());
    let cc = write(
        dir.path(),
        "cc.yaml",
        b"#cloud-config\nhostname: {{ hostname }}\nherd:\n  token: {{ token }}\n  server: {{ server_url }}\n  ip: {{ ip }}\n",
    );
    let args: Vec<String> = [
        "--kernel".into(),
        kernel.display().to_string(),
        "--initrd".into(),
        initrd.display().to_string(),
        "--cmdline".into(),
        "console=ttyS0 herd.mac={{ mac }}".into(),
        "--cloud-config".into(),
        cc.display().to_string(),
        "--token".into(),
        "s3cret".into(),
    ]
    .into();
    let s = serve(dir, &args);

    // Without a MAC: the chain script asking iPXE for its identity.
    let (code, body) = s.get("/boot.ipxe");
    assert_eq!(code, 200);
    assert!(
        body.starts_with("#!ipxe") && body.contains("mac=${mac:hexhyp}"),
        "{body}"
    );

    let (code, script) =
        s.get("/boot.ipxe?mac=52-54-00-aa-bb-01&ip=10.1.2.3&uuid=&arch=x86_64&platform=efi");
    assert_eq!(code, 200, "{script}");
    assert!(script.contains("herd.mac=52:54:00:aa:bb:01"), "{script}");
    let kernel_url = script
        .lines()
        .find_map(|l| l.strip_prefix("kernel "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no kernel line: {script}"))
        .to_owned();
    assert!(script.contains("initrd --name initrd0 "), "{script}");

    // Whole kernel with Content-Length, then a Range.
    let out = s.curl(&["-sfD", "-", "-o", "/dev/null", &kernel_url]);
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(head.contains("content-length: 300000"), "{head}");
    let part = s.curl(&[
        "-sf",
        "-r",
        "1000-1999",
        &format!("{URL}/assets/default/initrd/0"),
    ]);
    assert!(part.status.success());
    let expect: Vec<u8> = (1000..2000u32).map(|i| (i * 13 % 253) as u8).collect();
    assert_eq!(part.stdout, expect, "ranged bytes differ");
    let out = s.curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-r",
        "0-9",
        &format!("{URL}/assets/default/initrd/0"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "206");
    let out = s.curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-r",
        "5000000-",
        &format!("{URL}/assets/default/initrd/0"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "416");
    let (code, _) = s.get("/assets/default/initrd/7");
    assert_eq!(code, 404);
    let (code, _) = s.get("/assets/nope/kernel");
    assert_eq!(code, 404);

    let (code, cc) = s.get("/cloud-config?mac=52:54:00:aa:bb:01");
    assert_eq!(code, 200, "{cc}");
    assert!(
        cc.contains("hostname: herd-aabb01")
            && cc.contains("token: s3cret")
            && cc.contains("ip: 10.1.2.3"),
        "{cc}"
    );
    assert!(cc.contains("server: http://127.0.0.1:8080"), "{cc}");
    // A machine with no known IP: the template needs `ip`, so a clear error.
    let (code, err) = s.get("/cloud-config?mac=52:54:00:aa:bb:02");
    assert_eq!(code, 500);
    assert!(err.contains("`ip`"), "{err}");
    let (code, err) = s.get("/boot.ipxe?mac=not-a-mac");
    assert_eq!(code, 400);
    assert!(err.contains("invalid MAC"), "{err}");

    // The inventory saw every stage, and `herd pxe machines` prints it.
    let (code, m) = s.get("/api/machines/52:54:00:aa:bb:01");
    assert_eq!(code, 200);
    let m: serde_json::Value = serde_json::from_str(&m).unwrap();
    assert_eq!(m["last_stage"], "cloud-config");
    assert_eq!(m["arch"], "efi-x86_64");
    assert_eq!(m["ip"], "10.1.2.3");
    let table =
        s.ns.command(bin::herd())
            .args(["pxe", "machines", "--server", URL])
            .output()
            .unwrap();
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.starts_with("MAC")
            && table.contains("52:54:00:aa:bb:01")
            && table.contains("cloud-config"),
        "{table}"
    );
    let (code, _) = s.get("/api/machines/52:54:00:00:00:99");
    assert_eq!(code, 404);
    let out = s.curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        &format!("{URL}/api/machines/52:54:00:00:00:99/installed"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
}

#[test]
fn boot_files_are_served_over_tftp_by_herd_pxe_serve() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, _) = assets(dir.path());
    let undi = require::file("/usr/lib/ipxe/undionly.kpxe", "ipxe");
    std::fs::copy(&undi, dir.path().join("undionly.kpxe")).unwrap();
    let s = serve(dir, &["--kernel".into(), kernel.display().to_string()]);
    let out_path = s.dir.path().join("fetched.kpxe");
    let out =
        s.ns.command("curl")
            .args(["-sf", "--max-time", "30", "--tftp-blksize", "1468", "-o"])
            .arg(&out_path)
            .arg("tftp://127.0.0.1/undionly.kpxe")
            .output()
            .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", s.log());
    assert_eq!(
        std::fs::read(&out_path).unwrap(),
        std::fs::read(&undi).unwrap()
    );
}

#[test]
fn changed_profile_files_are_reloaded_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    assets(dir.path());
    let cc = write(dir.path(), "cc.yaml", b"#cloud-config\nversion: one\n");
    let config = |v: &str| {
        format!(
            "profiles:\n  - id: p\n    kernel: vmlinuz\n    cmdline: \"v={v}\"\n    cloud_config: {{ file: cc.yaml }}\ngroups:\n  - id: all\n    profile: p\n"
        )
    };
    let cfg = write(dir.path(), "herd.yaml", config("1").as_bytes());
    let mut s = serve(
        dir,
        &[
            "--config".into(),
            cfg.display().to_string(),
            "--reload-poll".into(),
            "200ms".into(),
        ],
    );
    let script = || s.get("/boot.ipxe?mac=52:54:00:00:00:07").1;
    assert!(script().contains("v=1"), "{}", script());

    // The YAML changes: the new cmdline is served, no signal, no restart.
    std::fs::write(&cfg, config("2")).unwrap();
    wait::until(
        "the changed cmdline",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || script().contains("v=2").then_some(()),
    );
    assert!(s.log().contains("file changed"), "{}", s.log());

    // A referenced cloud-config template is watched too.
    std::fs::write(&cc, "#cloud-config\nversion: two\n").unwrap();
    wait::until(
        "the changed cloud-config",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            s.get("/cloud-config?mac=52:54:00:00:00:07")
                .1
                .contains("version: two")
                .then_some(())
        },
    );

    // Broken YAML: the error is logged with what was wrong; the old
    // profiles keep serving.
    std::fs::write(&cfg, "profiles: [ { id: x, kernel: vmlinuz, bogus: 1 } ]\n").unwrap();
    wait::until(
        "the reload error in the log",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || s.log().contains("reload failed").then_some(()),
    );
    assert!(s.log().contains("bogus"), "{}", s.log());
    assert!(script().contains("v=2"), "{}", script());

    // Fixed again: picked up.
    std::fs::write(&cfg, config("3")).unwrap();
    wait::until(
        "the fixed config",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || script().contains("v=3").then_some(()),
    );
    assert!(s.server.is_running());
}

#[test]
fn groups_pick_profiles_and_sighup_reloads_them() {
    let dir = tempfile::tempdir().unwrap();
    assets(dir.path());
    let config = |role: &str| {
        format!(
            "token: t\nprofiles:\n  - id: installer\n    kernel: vmlinuz\n    initrd: [initrd.img]\n    cmdline: \"role={{{{ metadata.role }}}}\"\n    metadata: {{ role: {role} }}\n    install_to_disk: true\n  - id: special\n    kernel: vmlinuz\n    cmdline: special\ngroups:\n  - id: rack\n    profile: installer\n    selector: {{ labels: {{ rack: \"7\" }} }}\n  - id: one\n    profile: special\n    selector: {{ mac: \"52:54:00:00:00:01\" }}\n"
        )
    };
    let cfg = write(dir.path(), "herd.yaml", config("worker").as_bytes());
    // Polling off: this test is about SIGHUP alone.
    let mut s = serve(
        dir,
        &[
            "--config".into(),
            cfg.display().to_string(),
            "--reload-poll".into(),
            "0s".into(),
        ],
    );

    let (_, script) = s.get("/boot.ipxe?mac=52:54:00:00:00:02&rack=7");
    assert!(
        script.contains("role=worker") && script.contains("assets/installer/"),
        "{script}"
    );
    let (_, script) = s.get("/boot.ipxe?mac=52:54:00:00:00:01&rack=7");
    assert!(script.contains("assets/special/"), "{script}");
    // No group matches and there is no default group: told so, no loop.
    let (code, script) = s.get("/boot.ipxe?mac=52:54:00:00:00:03");
    assert_eq!(code, 200);
    assert!(script.contains("no profile matches"), "{script}");

    // Reload: a new metadata value shows up without a restart.
    std::fs::write(&cfg, config("etcd")).unwrap();
    s.server.signal(libc::SIGHUP);
    wait::until(
        "the reloaded profile",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            s.get("/boot.ipxe?mac=52:54:00:00:00:02&rack=7")
                .1
                .contains("role=etcd")
                .then_some(())
        },
    );
    // A broken config on reload keeps the old one serving.
    std::fs::write(&cfg, "profiles: [ { id: x, kernel: vmlinuz, bogus: 1 } ]\n").unwrap();
    s.server.signal(libc::SIGHUP);
    wait::until(
        "the reload error in the log",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || s.log().contains("reload failed").then_some(()),
    );
    assert!(s.log().contains("bogus"), "{}", s.log());
    assert!(
        s.get("/boot.ipxe?mac=52:54:00:00:00:02&rack=7")
            .1
            .contains("role=etcd")
    );
    assert!(s.server.is_running());
}

#[test]
fn bad_config_fails_startup_with_the_field_path() {
    let dir = tempfile::tempdir().unwrap();
    assets(dir.path());
    let cfg = write(
        dir.path(),
        "herd.yaml",
        b"profiles:\n  - id: a\n    kernel: vmlinuz\ngroups:\n  - id: g\n    profile: a\n    selector: { macaddr: x }\n",
    );
    let out = std::process::Command::new(bin::herd())
        .args([
            "pxe",
            "serve",
            "--no-dhcp",
            "--address",
            "127.0.0.1",
            "--config",
        ])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("groups[0].selector") && err.contains("macaddr"),
        "{err}"
    );
}

/// The admin routes live only on the HTTPS listener, whose certificate
/// chains to the server's own CA (made on first start, kept across
/// restarts): curl and `herd pxe updates` pinned to it get in with the
/// token; the plain listener refuses them and says where to go; a client
/// that does not trust the CA never sends the token; the token is not in
/// the log.
#[test]
fn admin_routes_are_served_only_over_https_pinned_to_the_servers_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, _) = assets(dir.path());
    let s = serve(
        dir,
        &[
            "--kernel".into(),
            kernel.display().to_string(),
            "--admin-name".into(),
            "pxe.rack".into(),
        ],
    );
    let state = s.dir.path().join("state");
    let ca = state.join("admin/ca.crt").display().to_string();
    let token = std::fs::read_to_string(state.join("api.token")).unwrap();
    let token = token.trim();
    let admin = "https://127.0.0.1:8443";
    let bearer = format!("Authorization: Bearer {token}");
    let code = |out: Output| String::from_utf8_lossy(&out.stdout).into_owned();

    // Plain HTTP: refused even with the token, pointing at the admin listener.
    let plain = s.curl(&[
        "-s",
        "-X",
        "POST",
        "-H",
        &bearer,
        &format!("{URL}/v1/update/groups/stable/resume"),
        "-w",
        "\n%{http_code}",
    ]);
    let plain = code(plain);
    assert!(plain.ends_with("403") && plain.contains(admin), "{plain}");
    let reinstall = s.curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        &format!("{URL}/api/machines/52-54-00-00-00-01/reinstall"),
    ]);
    assert_eq!(code(reinstall), "403");

    // HTTPS with the pinned CA: no token 401, the token reaches the service
    // (there is no group yet: 404).
    let https = |extra: &[&str]| {
        let mut args = vec![
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            &ca,
        ];
        args.extend_from_slice(extra);
        code(s.curl(&args))
    };
    let resume = format!("{admin}/v1/update/groups/stable/resume");
    assert_eq!(https(&["-X", "POST", &resume]), "401");
    assert_eq!(
        https(&["-X", "POST", "-H", "Authorization: Bearer guess", &resume]),
        "401"
    );
    assert_eq!(https(&["-X", "POST", "-H", &bearer, &resume]), "404");
    assert_eq!(https(&[&format!("{admin}/v1/update/status")]), "200");
    // The certificate covers the names given with --admin-name, and no
    // others.
    let by_name = |name: &str| {
        s.curl(&[
            "-s",
            "-o",
            "/dev/null",
            "--cacert",
            &ca,
            "--resolve",
            &format!("{name}:8443:127.0.0.1"),
            &format!("https://{name}:8443/v1/update/status"),
        ])
        .status
        .code()
    };
    assert_eq!(by_name("pxe.rack"), Some(0));
    assert_eq!(by_name("elsewhere.rack"), Some(60));
    // Without the CA curl does not trust the server (exit 60), so never
    // sends the request.
    let untrusted = s.curl(&["-s", "-X", "POST", "-H", &bearer, &resume]);
    assert_eq!(untrusted.status.code(), Some(60), "{untrusted:?}");

    // herd's own client, pinned with --cacert.
    let herd = |args: &[&str]| {
        s.ns.command(bin::herd())
            .args(["pxe", "updates", "--server", admin, "--cacert", &ca])
            .args(args)
            .output()
            .unwrap()
    };
    let status = herd(&["-o", "json"]);
    assert!(status.status.success(), "{status:?}");
    let token_file = state.join("api.token").display().to_string();
    let resumed = herd(&["--token-file", &token_file, "resume", "stable"]);
    let said = String::from_utf8_lossy(&resumed.stderr);
    assert!(!resumed.status.success() && said.contains("404"), "{said}");

    // Reading is fine on either listener, and sends no token.
    let machines =
        s.ns.command(bin::herd())
            .args([
                "pxe", "machines", "--server", admin, "--cacert", &ca, "-o", "json",
            ])
            .output()
            .unwrap();
    assert!(machines.status.success(), "{machines:?}");
    let plain_read =
        s.ns.command(bin::herd())
            .args(["pxe", "updates", "--server", URL, "-o", "json"])
            .env("HERD_PXE_TOKEN_FILE", &token_file)
            .output()
            .unwrap();
    assert!(plain_read.status.success(), "{plain_read:?}");

    let log = s.log();
    assert!(log.contains("admin routes served only over HTTPS"), "{log}");
    assert!(!log.contains(token), "the token is in the log:\n{log}");
}
