//! The lab registry without VMs: `docker-registry` started in a real lab
//! namespace on the bridge address, a herd-built image pushed to it through
//! the namespace (as `herd lab exec -- herd image push` does), pulled back
//! by its manifest digest, and `down` stopping it with the rest.

use std::time::Duration;

use herd_image::container::{self, Recipe, Reference};
use herd_qemu::lab::Lab;
use herd_qemu::state::LabState;
use herd_qemu::{net, nsnet, process, registry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_registry_takes_pushes_on_the_bridge_and_down_stops_it() {
    herd_testkit::require::root();
    herd_testkit::require::tool("docker-registry", "docker-registry");
    let dir = tempfile::tempdir().unwrap();
    let netns = format!("herd-lab-r{}", std::process::id());
    let lab = Lab::new(dir.path().to_path_buf(), "/nonexistent/herd".into());
    let mut state = LabState::new(
        netns.clone(),
        "token".into(),
        dir.path().join("image"),
        false,
    );
    state.save(&lab.dir).unwrap();
    net::create(&netns).await.unwrap();

    let pid = registry::start(&lab.dir, &netns).unwrap();
    state.registry_pid = Some(pid);
    state.save(&lab.dir).unwrap();
    registry::wait_ready(&netns, Duration::from_secs(30))
        .await
        .unwrap();

    let image = dir.path().join("pause");
    let cache = herd_testkit::bin::workspace_root().join("target/herd-image-tests/container-cache");
    let built = tokio::task::spawn_blocking(move || {
        container::build(&Recipe::pause(), &image, &cache, 1_700_000_000).map(|b| (b, image))
    })
    .await
    .unwrap()
    .unwrap();
    let (built, image) = built;
    let reference: Reference = format!("{}/{}", registry::address(), container::PAUSE_IMAGE)
        .parse()
        .unwrap();
    let client = nsnet::http(&netns, Duration::from_secs(60));
    let pushed = container::push(&client, &image, &reference, true)
        .await
        .unwrap();
    assert_eq!(pushed.digest, built.manifest);
    // The registry serves it back under its digest, as a dockerd pull asks.
    let url = format!(
        "http://{}/v2/herd/pause/manifests/{}",
        registry::address(),
        built.manifest
    );
    let resp = client
        .call(herd_http::Request::get(url).header("accept", container::layout::MANIFEST_TYPE))
        .await
        .unwrap();
    assert_eq!(container::layout::digest_of(&resp.body), built.manifest);
    assert!(dir.path().join("registry/storage/docker").is_dir());

    let report = lab.down().await.unwrap();
    assert!(report.servers_stopped >= 1, "{report:?}");
    assert!(!process::is_ours(pid, &registry::tag(&lab.dir)));
    assert!(!net::exists(&netns));
}
