//! Boots the built artifacts under QEMU (TCG): netboot to the agent, disk slot A, flip to B, fallback.

mod common;

use herd_image::container::{self, Recipe, Reference};
use herd_image::payload;
use herd_image::slot::{self, Slot};
use std::path::Path;

fn esp(disk: &Path) -> slot::ImageEsp {
    let p = herd_image::gpt::find(disk, "ESP").unwrap();
    slot::ImageEsp {
        image: disk.into(),
        offset: p.offset,
        epoch: herd_image::build::DEFAULT_EPOCH,
    }
}

/// Writes `out`'s own update payload into slot B of `disk` with `tries` boot attempts.
fn flip_to_b(out: &Path, disk: &Path, tries: u8, scratch: &Path) {
    let key = payload::read_signing_key(&common::key_file(scratch))
        .unwrap()
        .verifying_key();
    let (p, sig) = (out.join("update.payload"), out.join("update.payload.sig"));
    let verified = payload::verify(&p, &sig, &key).unwrap();
    let esp = esp(disk);
    assert_eq!(slot::passive_slot(&esp).unwrap(), Slot::B);
    let target = slot::Target {
        slot: Slot::B,
        cmdline: "console=ttyS0".into(),
        tries,
    };
    slot::install_payload(disk, &esp, &target, &p, &verified, &scratch.join("flip")).unwrap();
}

fn entry(disk: &Path, s: Slot) -> slot::Entry {
    slot::entries(&esp(disk))
        .unwrap()
        .into_iter()
        .find(|e| e.slot == s)
        .unwrap()
}

#[test]
fn qemu_netboot_initramfs_reaches_herd_agent() {
    let dir = common::scratch("qemu-netboot");
    let key = common::key_file(&dir);
    let out = dir.join("out");
    common::build_into(common::test_spec(&dir), &out, &common::shared_cache(), &key);
    let vm = common::boot_netboot(&out, &dir.join("serial.log"), "console=ttyS0");
    let log = common::wait_for(&vm, "herd-init: starting herd ");
    assert!(log.contains("herd-init: herd OS 0.1.0"), "{log}");
    // The line after the marker carries the real `herd --version` from inside the guest.
    let line = log
        .lines()
        .find(|l| l.contains("herd-init: starting herd "))
        .unwrap();
    assert!(line.contains(env!("CARGO_PKG_VERSION")), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn qemu_disk_boots_slot_a_then_flipped_b_marked_good_stays() {
    let dir = common::scratch("qemu-disk-ab");
    let key = common::key_file(&dir);
    let out = dir.join("out");
    common::build_into(common::test_spec(&dir), &out, &common::shared_cache(), &key);
    let disk = dir.join("disk.img");
    std::fs::copy(out.join("disk.img"), &disk).unwrap();
    let vars = dir.join("vars.fd");

    let vm = common::boot_disk(&disk, &vars, &dir.join("boot1.log"));
    let log = common::wait_for(&vm, "herd-init: starting herd ");
    assert!(log.contains("herd-init: /usr is USR-A"), "{log}");
    assert!(log.contains("herd-init: STATE"), "{log}");
    drop(vm);

    flip_to_b(&out, &disk, 3, &dir);
    let vm = common::boot_disk(&disk, &vars, &dir.join("boot2.log"));
    let log = common::wait_for(&vm, "herd-init: starting herd ");
    assert!(log.contains("herd-init: /usr is USR-B"), "{log}");
    drop(vm);
    assert_eq!(
        entry(&disk, Slot::B).tries,
        Some((2, 1)),
        "systemd-boot counted the try"
    );

    slot::mark_good_on(&esp(&disk), Slot::B).unwrap();
    assert_eq!(entry(&disk, Slot::B).tries, None);
    let vm = common::boot_disk(&disk, &vars, &dir.join("boot3.log"));
    let log = common::wait_for(&vm, "herd-init: starting herd ");
    assert!(
        log.contains("herd-init: /usr is USR-B"),
        "a good B keeps booting: {log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn qemu_disk_b_never_marked_good_falls_back_to_a() {
    let dir = common::scratch("qemu-disk-fallback");
    let key = common::key_file(&dir);
    let out = dir.join("out");
    common::build_into(common::test_spec(&dir), &out, &common::shared_cache(), &key);
    let disk = dir.join("disk.img");
    std::fs::copy(out.join("disk.img"), &disk).unwrap();
    let vars = dir.join("vars.fd");

    // One try keeps the test short; the counting is the same for any number.
    flip_to_b(&out, &disk, 1, &dir);
    let vm = common::boot_disk(&disk, &vars, &dir.join("boot1.log"));
    let log = common::wait_for(&vm, "herd-init: starting herd ");
    assert!(log.contains("herd-init: /usr is USR-B"), "{log}");
    drop(vm);
    assert_eq!(entry(&disk, Slot::B).tries, Some((0, 1)));

    let vm = common::boot_disk(&disk, &vars, &dir.join("boot2.log"));
    let log = common::wait_for(&vm, "herd-init: starting herd ");
    assert!(
        log.contains("herd-init: /usr is USR-A"),
        "B ran out of tries, A must boot: {log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn qemu_netboot_firstboot_install_then_disk_boots_slot_a() {
    let dir = common::scratch("qemu-install");
    let key = common::key_file(&dir);
    let out = dir.join("out");
    let summary = common::build_into(common::test_spec(&dir), &out, &common::shared_cache(), &key);
    let image = &summary.manifest.artifacts["disk.img"];
    let blank = dir.join("blank.img");
    std::fs::File::create(&blank)
        .unwrap()
        .set_len(image.size)
        .unwrap();
    // The image reaches the guest as a second disk, so the test needs no network.
    let append = format!(
        "console=ttyS0 herd.install=/dev/vda herd.image=/dev/vdb herd.image.sha256={}",
        image.sha256
    );
    let mut vm = common::boot_netboot_with_disks(
        &out,
        &dir.join("install.log"),
        &append,
        &[(&blank, false), (&out.join("disk.img"), true)],
    );
    let log = common::wait_for(&vm, "wrote and verified");
    assert!(log.contains("installing /dev/vdb onto /dev/vda"), "{log}");
    vm.wait_exit(std::time::Duration::from_secs(60));
    let written = payload::sha256_file(&blank).unwrap().1;
    assert_eq!(hex::encode(written), image.sha256);

    let vm = common::boot_disk(&blank, &dir.join("vars.fd"), &dir.join("disk.log"));
    let log = common::wait_for(&vm, "herd-init: starting herd ");
    assert!(log.contains("herd-init: /usr is USR-A"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `herd-init: STATE partition <P> MiB, filesystem <F> MiB` from a serial log.
fn state_sizes(log: &str) -> (u64, u64) {
    let line = log
        .lines()
        .find(|l| l.contains("herd-init: STATE partition"))
        .unwrap_or_else(|| panic!("no STATE size line in {log}"));
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(nums.len(), 2, "{line}");
    (nums[0], nums[1])
}

#[test]
fn qemu_disk_bigger_than_the_image_grows_state_to_fill_it() {
    let dir = common::scratch("qemu-grow-state");
    let key = common::key_file(&dir);
    let out = dir.join("out");
    let spec = common::test_spec(&dir);
    let state_mib = spec.partitions.state_mib;
    common::build_into(spec, &out, &common::shared_cache(), &key);
    let disk = dir.join("disk.img");
    std::fs::copy(out.join("disk.img"), &disk).unwrap();
    // 256 MiB more disk than the image: all of it must end up in STATE.
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.set_len(f.metadata().unwrap().len() + (256 << 20))
        .unwrap();
    drop(f);
    let vars = dir.join("vars.fd");

    let vm = common::boot_disk(&disk, &vars, &dir.join("boot1.log"));
    let log = common::wait_for(&vm, "herd-init: starting herd ");
    drop(vm);
    assert!(log.contains("grown from"), "{log}");
    let (part, fs) = state_sizes(&log);
    assert!(part >= state_mib + 255, "partition {part} MiB: {log}");
    // ext4 keeps some blocks for itself: the filesystem is within 10% of it.
    assert!(fs * 10 >= part * 9, "filesystem {fs} MiB of {part}: {log}");
    // The host sees the grown, valid table too.
    let p = herd_image::gpt::find(&disk, "STATE").unwrap();
    assert_eq!(p.size >> 20, part);
    let verify = std::process::Command::new("sfdisk")
        .arg("--verify")
        .arg(&disk)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(text.contains("No errors detected"), "{text}");

    // Second boot: nothing left to do, same sizes, the data survived.
    let vm = common::boot_disk(&disk, &vars, &dir.join("boot2.log"));
    let log = common::wait_for(&vm, "herd-init: starting herd ");
    assert!(log.contains("already fills"), "{log}");
    assert_eq!(state_sizes(&log), (part, fs), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn qemu_disk_with_docker_io_runs_dockerd_which_pulls_and_runs_a_herd_image() {
    let dir = common::scratch("qemu-docker");
    let key = common::key_file(&dir);
    // A herd-built image in a registry on the host's loopback, which the
    // guest reaches as 10.0.2.2 through QEMU's user-mode network.
    let registry = herd_testkit::registry::Registry::start(&dir.join("registry"));
    let port = registry.addr.rsplit_once(':').unwrap().1.to_string();
    let recipe = Recipe::new(
        vec!["busybox-static".into()],
        vec![],
        vec![
            "/bin/busybox".into(),
            "echo".into(),
            "hello-from-the-lab-registry".into(),
        ],
        vec![],
        &[],
        None,
        "1".into(),
    )
    .unwrap();
    let layout_dir = dir.join("hello");
    container::build(&recipe, &layout_dir, &common::shared_cache(), 1_700_000_000).unwrap();
    let pushed_to: Reference = format!("{}/herd/hello:1", registry.addr).parse().unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(container::push(
            &herd_http::Client::new(),
            &layout_dir,
            &pushed_to,
            true,
        ))
        .unwrap();
    let guest_registry = format!("10.0.2.2:{port}");
    let reference = format!("{guest_registry}/herd/hello:1");

    let out = dir.join("out");
    let mut spec = common::test_spec(&dir);
    spec.packages.push("docker.io".into());
    spec.partitions.usr_mib = 400;
    // The Debian kernel enables AppArmor, and dockerd then wants apparmor_parser.
    spec.cmdline =
        format!("console=ttyS0 apparmor=0 herd.registry={guest_registry} herd.run={reference}");
    common::build_into(spec, &out, &common::shared_cache(), &key);
    let disk = dir.join("disk.img");
    std::fs::copy(out.join("disk.img"), &disk).unwrap();
    // Room for /var/lib/docker: STATE grows into it at boot.
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.set_len(f.metadata().unwrap().len() + (512 << 20))
        .unwrap();
    drop(f);
    let vm = common::boot_disk_with_user_net(&disk, &dir.join("vars.fd"), &dir.join("boot.log"));
    let log = common::wait_for_within(
        &vm,
        "herd-init: docker ready: ",
        std::time::Duration::from_secs(400),
    );
    let line = log
        .lines()
        .find(|l| l.contains("herd-init: docker ready: "))
        .unwrap();
    eprintln!("{line}");
    assert!(
        line.contains("20.10") && line.contains("overlay2"),
        "{line}"
    );
    let said = format!("herd-init: {reference}: hello-from-the-lab-registry");
    let log = common::wait_for_within(&vm, &said, std::time::Duration::from_secs(400));
    assert!(
        log.contains(&format!("herd-init: pulled {reference}")),
        "{log}"
    );
    drop(vm);
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}
