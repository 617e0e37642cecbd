//! Container images against real peers through the library: built from
//! Debian packages, pushed to Debian's `docker-registry` on loopback, pulled
//! and run by a private Debian `dockerd`. (`tests/tests/image_container.rs`
//! does the same through the `herd` binary's commands.)

mod common;

use herd_image::container::{self, Recipe, Reference};
use herd_testkit::registry::{Dockerd, Registry};

#[test]
fn built_image_is_reproducible_pushed_pulled_and_run() {
    herd_testkit::require::root();
    let dir = tempfile::tempdir().unwrap();
    let cache = common::shared_cache();
    let recipe = Recipe::new(
        vec!["busybox-static".into()],
        vec![],
        vec![
            "/bin/busybox".into(),
            "sh".into(),
            "-c".into(),
            "echo $GREETING in $(pwd)".into(),
        ],
        vec![],
        &["GREETING=hello-from-herd".into()],
        Some("/srv".into()),
        "1".into(),
    )
    .unwrap();
    let a = container::build(&recipe, &dir.path().join("a"), &cache, 1_700_000_000).unwrap();
    let b = container::build(&recipe, &dir.path().join("b"), &cache, 1_700_000_000).unwrap();
    assert_eq!(a.manifest, b.manifest, "same inputs, same digest");
    assert!(b.cached, "the second build reuses the cached layer");

    let registry = Registry::start(&dir.path().join("registry"));
    let reference: Reference = format!("{}/herd/hello:1", registry.addr).parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = herd_http::Client::new();
    let pushed = rt
        .block_on(container::push(
            &client,
            &dir.path().join("a"),
            &reference,
            true,
        ))
        .unwrap();
    assert_eq!(pushed.digest, a.manifest);
    assert!(pushed.blobs.iter().all(|b| b.uploaded));
    let again = rt
        .block_on(container::push(
            &client,
            &dir.path().join("b"),
            &reference,
            true,
        ))
        .unwrap();
    assert!(
        again.blobs.iter().all(|b| !b.uploaded),
        "nothing uploaded twice"
    );

    let pause_dir = dir.path().join("pause");
    container::build(&Recipe::pause(), &pause_dir, &cache, 1_700_000_000).unwrap();
    let pause: Reference = format!("{}/{}", registry.addr, container::PAUSE_IMAGE)
        .parse()
        .unwrap();
    rt.block_on(container::push(&client, &pause_dir, &pause, true))
        .unwrap();

    // Docker treats 127.0.0.0/8 registries as plain HTTP by default.
    let docker = Dockerd::start(&dir.path().join("docker"), &[]);
    let reference = reference.to_string();
    docker.ok(&["pull", &reference]);
    let digests = docker.ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &reference,
    ]);
    assert!(
        digests.contains(&a.manifest),
        "pulled {digests}, pushed {}",
        a.manifest
    );
    let said = docker.ok(&["run", "--rm", "--network", "none", &reference]);
    assert_eq!(said.trim(), "hello-from-herd in /srv");

    let pause = pause.to_string();
    let id = docker.ok(&["run", "-d", "--network", "none", &pause]);
    let id = id.trim();
    assert_eq!(
        docker
            .ok(&["inspect", "--format", "{{.State.Running}}", id])
            .trim(),
        "true"
    );
    docker.ok(&["stop", "--time", "60", id]);
    let code = docker.ok(&["inspect", "--format", "{{.State.ExitCode}}", id]);
    assert_eq!(code.trim(), "0", "the pause container ends on SIGTERM");
    docker.ok(&["rm", id]);
}
