//! Container images without the internet, against real peers: `herd image
//! container` builds OCI layouts from Debian packages (reproducibly, cached),
//! `herd image push` puts them into Debian's `docker-registry` on loopback,
//! and a private Debian `dockerd` pulls and runs them.

use herd_tests::registry::{Dockerd, Registry};
use herd_tests::{bin, require};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn herd(args: &[&str], cache: &Path) -> Output {
    Command::new(bin::herd())
        .args(args)
        .env("HERD_IMAGE_CACHE", cache)
        .output()
        .expect("running herd")
}

fn herd_ok(args: &[&str], cache: &Path) -> serde_json::Value {
    let out = herd(args, cache);
    assert!(
        out.status.success(),
        "herd {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "herd {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn herd_err(args: &[&str], cache: &Path) -> String {
    let out = herd(args, cache);
    assert!(!out.status.success(), "herd {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The packages' cache shared by these tests (downloads survive runs).
fn cache() -> PathBuf {
    bin::workspace_root().join("target/herd-image-tests/container-cache")
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn container_image_pushed_to_a_registry_is_pulled_and_run_by_dockerd() {
    require::root();
    let dir = tempfile::tempdir().unwrap();
    let cache = cache();
    let hello = dir.path().join("hello");
    let build = |out: &Path| {
        herd_ok(
            &[
                "image",
                "container",
                "--packages",
                "busybox-static",
                "--env",
                "GREETING=hello-from-herd",
                "--workdir",
                "/srv",
                "--tag",
                "1",
                "--out",
                path(out),
                "-o",
                "json",
                "--entrypoint",
                "/bin/busybox",
                "sh",
                "-c",
                "echo $GREETING in $(pwd)",
            ],
            &cache,
        )
    };
    let first = build(&hello);
    let again = build(&dir.path().join("hello-again"));
    assert_eq!(
        first["manifest"], again["manifest"],
        "same inputs, same image digest"
    );
    assert_eq!(again["cached"], true, "the second build reuses the layer");
    for f in ["oci-layout", "index.json"] {
        assert!(hello.join(f).is_file(), "{f} missing");
    }

    let registry = Registry::start(&dir.path().join("registry"));
    let reference = format!("{}/herd/hello:1", registry.addr);
    let pushed = herd_ok(
        &[
            "image",
            "push",
            path(&hello),
            &reference,
            "--insecure",
            "-o",
            "json",
        ],
        &cache,
    );
    assert_eq!(pushed["digest"], first["manifest"]);
    let blobs = pushed["blobs"].as_array().unwrap();
    assert_eq!(blobs.len(), 2, "config and one layer: {pushed}");
    assert!(blobs.iter().all(|b| b["uploaded"] == true));
    let repushed = herd_ok(
        &[
            "image",
            "push",
            path(&hello),
            &reference,
            "--insecure",
            "-o",
            "json",
        ],
        &cache,
    );
    assert!(
        repushed["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["uploaded"] == false),
        "a second push uploads nothing: {repushed}"
    );

    let pause = dir.path().join("pause");
    herd_ok(
        &[
            "image",
            "container",
            "--pause",
            "--out",
            path(&pause),
            "-o",
            "json",
        ],
        &cache,
    );
    let pause_ref = format!("{}/{}", registry.addr, herd_image::container::PAUSE_IMAGE);
    herd_ok(
        &[
            "image",
            "push",
            path(&pause),
            &pause_ref,
            "--insecure",
            "-o",
            "json",
        ],
        &cache,
    );

    // Docker treats 127.0.0.0/8 registries as insecure (plain HTTP) by default.
    let docker = Dockerd::start(&dir.path().join("docker"), &[]);
    docker.ok(&["pull", &reference]);
    let digests = docker.ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &reference,
    ]);
    let want = first["manifest"].as_str().unwrap().to_string();
    assert!(digests.contains(&want), "pulled {digests}, pushed {want}");
    let said = docker.ok(&["run", "--rm", "--network", "none", &reference]);
    assert_eq!(said.trim(), "hello-from-herd in /srv");

    // A host file added (`--add`): a layer of its own over the same cached
    // package layer, at the real path of merged-/usr's `/bin`, mode kept.
    let script = dir.path().join("greet");
    std::fs::write(&script, "#!/bin/busybox sh\necho added-by-herd\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let added = dir.path().join("added");
    let built = herd_ok(
        &[
            "image",
            "container",
            "--packages",
            "busybox-static",
            "--add",
            &format!("{}:/bin/greet", path(&script)),
            "--tag",
            "2",
            "--out",
            path(&added),
            "-o",
            "json",
            "--entrypoint",
            "/bin/greet",
        ],
        &cache,
    );
    assert_eq!(
        built["layer"], first["layer"],
        "the package layer is shared"
    );
    assert!(built["files_layer"]["digest"].is_string(), "{built}");
    let added_ref = format!("{}/herd/hello:2", registry.addr);
    let pushed = herd_ok(
        &[
            "image",
            "push",
            path(&added),
            &added_ref,
            "--insecure",
            "-o",
            "json",
        ],
        &cache,
    );
    assert_eq!(pushed["blobs"].as_array().unwrap().len(), 3, "{pushed}");
    let said = docker.ok(&["run", "--rm", "--network", "none", &added_ref]);
    assert_eq!(said.trim(), "added-by-herd");
    let ls = docker.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "/bin/busybox",
        &added_ref,
        "ls",
        "-ld",
        "/usr/bin/greet",
        "/bin",
    ]);
    assert!(
        ls.contains("-rwxr-xr-x") && ls.contains("/bin -> usr/bin"),
        "{ls}"
    );

    // The pause image sleeps until stopped and exits 0 on SIGTERM (a PID 1
    // without a handler would ignore it and be killed: exit code 137).
    let id = docker.ok(&["run", "-d", "--network", "none", &pause_ref]);
    let id = id.trim();
    let running = docker.ok(&["inspect", "--format", "{{.State.Running}}", id]);
    assert_eq!(running.trim(), "true");
    docker.ok(&["stop", "--time", "60", id]);
    let code = docker.ok(&["inspect", "--format", "{{.State.ExitCode}}", id]);
    assert_eq!(code.trim(), "0", "the pause container ends on SIGTERM");
    docker.ok(&["rm", id]);
}

#[test]
fn bad_container_inputs_fail_with_what_was_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache();
    let out = dir.path().join("out");
    let err = herd_err(
        &[
            "image",
            "container",
            "--packages",
            "busybox-static,no-such-package-herd",
            "--out",
            path(&out),
        ],
        &cache,
    );
    assert!(err.contains("no-such-package-herd"), "{err}");
    let err = herd_err(
        &[
            "image",
            "container",
            "--packages",
            "busybox-static",
            "--out",
            path(&out),
            "--entrypoint",
            "/usr/bin/postgres",
        ],
        &cache,
    );
    assert!(
        err.contains("/usr/bin/postgres") && err.contains("no such file"),
        "{err}"
    );
    let err = herd_err(
        &[
            "image",
            "container",
            "--packages",
            "busybox-static",
            "--out",
            path(&out),
            "--entrypoint",
            "nosuchcommand",
        ],
        &cache,
    );
    assert!(
        err.contains("nosuchcommand") && err.contains("PATH"),
        "{err}"
    );
    for (add, says) in [
        ("/no/such/file-herd:/x", "/no/such/file-herd"),
        ("/etc/hostname:relative", "absolute"),
        ("/etc/hostname:/usr/bin", "is a directory"),
        ("/etc:/x", "not a regular file"),
    ] {
        let err = herd_err(
            &[
                "image",
                "container",
                "--packages",
                "busybox-static",
                "--add",
                add,
                "--out",
                path(&out),
            ],
            &cache,
        );
        assert!(err.contains(says), "--add {add}: {err}");
    }
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let under_file = file.join("out");
    let err = herd_err(
        &[
            "image",
            "container",
            "--packages",
            "busybox-static",
            "--out",
            path(&under_file),
        ],
        &cache,
    );
    assert!(err.contains(path(&file)), "{err}");
    let err = herd_err(
        &[
            "image",
            "container",
            "--packages",
            "busybox-static",
            "--env",
            "=x",
            "--out",
            path(&out),
        ],
        &cache,
    );
    assert!(err.contains("--env") && err.contains("\"=x\""), "{err}");
    assert!(!out.exists(), "no failed build leaves an output behind");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "a-file")
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");

    let err = herd_err(
        &[
            "image",
            "push",
            path(dir.path()),
            "herd/hello:1",
            "--insecure",
        ],
        &cache,
    );
    assert!(err.contains("registry host"), "{err}");
    let err = herd_err(
        &[
            "image",
            "push",
            path(dir.path()),
            "127.0.0.1:1/herd/hello:1",
            "--insecure",
        ],
        &cache,
    );
    assert!(err.contains("not an OCI image layout"), "{err}");
}
