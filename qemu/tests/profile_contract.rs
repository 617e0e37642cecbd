//! The lab's provisioning config must be what `herd pxe serve` loads, and the
//! cloud-config it renders for a machine must be what `herd agent` parses:
//! both sides' real parsers, no copies of their formats.

use std::collections::BTreeMap;

use herd_agent::cloud_config::{self, Membership};
use herd_pxe::profile::{MachineFacts, Profiles, template};
use herd_qemu::layout::MachineId;
use herd_qemu::pxe;
use herd_qemu::state::LabState;

#[test]
fn lab_profile_loads_in_pxe_and_renders_cloud_configs_the_agent_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    std::fs::create_dir(&image).unwrap();
    std::fs::write(image.join("vmlinuz"), b"kernel").unwrap();
    std::fs::write(image.join("initramfs"), b"initramfs").unwrap();
    let state = LabState::new("herd-lab".into(), "0123abcd".into(), image, false);
    let path = dir.path().join("pxe-profile.yaml");
    let ca = herd_pki::ClusterCa::generate("test").unwrap();
    std::fs::write(&path, pxe::profile(&state, 3, 8, &ca)).unwrap();
    let profiles =
        Profiles::load(&path).unwrap_or_else(|e| panic!("pxe refuses the lab profile: {e}"));

    for n in [1u8, 2, 8] {
        let id = MachineId::new(n).unwrap();
        let facts = MachineFacts {
            mac: Some(id.mac().parse().unwrap()),
            ..Default::default()
        };
        let selected = profiles
            .select(&facts)
            .expect("every reserved machine has a group");
        // The values the provisioning server fills in for this machine.
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        vars.insert("mac".into(), id.mac());
        vars.insert("token".into(), profiles.token.clone().unwrap());
        vars.insert("server_url".into(), "http://10.77.0.1:8080".into());
        for (k, v) in selected
            .profile
            .metadata
            .iter()
            .chain(&selected.group.metadata)
        {
            vars.insert(format!("metadata.{k}"), v.clone());
        }
        let cmdline = template::render(&selected.profile.cmdline, &vars).unwrap();
        assert!(
            cmdline.contains(&format!(
                "herd.config=http://10.77.0.1:8080/cloud-config?mac={}",
                id.mac()
            )),
            "{cmdline}"
        );
        let text =
            template::render(selected.profile.cloud_config.as_deref().unwrap(), &vars).unwrap();
        let settings =
            cloud_config::parse(&text).unwrap_or_else(|e| panic!("agent refuses {text}: {e}"));
        assert_eq!(settings.name, id.to_string());
        assert_eq!(settings.token, "0123abcd");
        // Only the founder gets the CA (key included), intact.
        match (n, &settings.ca) {
            (1, Some(got)) => {
                assert_eq!(got.pair.cert_pem, ca.pair.cert_pem);
                assert_eq!(got.pair.key_pem, ca.pair.key_pem);
            }
            (1, None) => panic!("the founder's cloud-config has no CA"),
            (_, Some(_)) => panic!("{id}'s cloud-config carries the CA"),
            (_, None) => {}
        }
        assert_eq!(settings.listen_client.ip(), id.ip());
        match (n, &settings.membership) {
            (1, Membership::Found { peers }) => assert_eq!(peers.len(), 2),
            (_, Membership::Join { peers }) => {
                assert_eq!(peers[0], "10.77.0.11:2380".parse().unwrap())
            }
            (_, other) => panic!("{id}: unexpected membership {other:?}"),
        }
    }
}

#[test]
fn install_profile_serves_the_disk_image_and_tells_the_installer_where_to_report() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    std::fs::create_dir(&image).unwrap();
    for f in ["vmlinuz", "initramfs", "disk.img", "manifest.json"] {
        std::fs::write(image.join(f), f.as_bytes()).unwrap();
    }
    let state = LabState::new("herd-lab".into(), "0123abcd".into(), image.clone(), true);
    let path = dir.path().join("pxe-profile.yaml");
    let ca = herd_pki::ClusterCa::generate("test").unwrap();
    std::fs::write(&path, pxe::profile(&state, 2, 4, &ca)).unwrap();
    let profiles =
        Profiles::load(&path).unwrap_or_else(|e| panic!("pxe refuses the lab profile: {e}"));
    let id = MachineId::new(2).unwrap();
    let selected = profiles
        .select(&MachineFacts {
            mac: Some(id.mac().parse().unwrap()),
            ..Default::default()
        })
        .unwrap();
    assert!(selected.profile.install_to_disk);
    assert_eq!(selected.profile.files["disk.img"], image.join("disk.img"));
    assert_eq!(
        selected.profile.files["manifest.json"],
        image.join("manifest.json")
    );
    let vars: BTreeMap<String, String> = [
        ("mac".to_owned(), id.mac()),
        ("server_url".to_owned(), "http://10.77.0.1:8080".to_owned()),
    ]
    .into();
    let cmdline = template::render(&selected.profile.cmdline, &vars).unwrap();
    for needle in [
        "herd.install=/dev/vda".to_owned(),
        "herd.image=http://10.77.0.1:8080/assets/lab/files/disk.img".to_owned(),
        format!(
            "herd.installed=http://10.77.0.1:8080/api/machines/{}/installed",
            id.mac()
        ),
    ] {
        assert!(cmdline.contains(&needle), "{needle} not in {cmdline}");
    }
    // Without the disk image an installing lab is refused up front.
    std::fs::remove_file(image.join("disk.img")).unwrap();
    let missing = herd_qemu::prereq::check_disk_image(&image);
    assert_eq!(missing.len(), 1, "{missing:?}");
}

/// `herd lab exec` pins the admin CA where `herd pxe serve` makes it.
#[test]
fn the_lab_pins_the_admin_ca_where_the_server_makes_it() {
    let lab = std::path::Path::new("/lab");
    assert_eq!(
        pxe::admin_ca_file(lab),
        herd_pxe::http::admin_tls::ca_file(&pxe::state_dir(lab))
    );
    assert_eq!(
        pxe::api_token_file(lab),
        herd_pxe::http::auth::default_token_file(&pxe::state_dir(lab))
    );
}
