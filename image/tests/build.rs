//! The pipeline end to end on the host: reproducibility, verify, tampering, bad input.

mod common;

use herd_image::manifest;

#[test]
fn two_cold_builds_are_byte_identical_and_verify() {
    let dir = common::scratch("repro");
    let key = common::key_file(&dir);
    let (a, b) = (dir.join("out-a"), dir.join("out-b"));
    let first = common::build_into(common::test_spec(&dir), &a, &dir.join("cache-a"), &key);
    let second = common::build_into(common::test_spec(&dir), &b, &dir.join("cache-b"), &key);
    assert!(first.stages.iter().all(|s| !s.cached) && second.stages.iter().all(|s| !s.cached));
    for name in manifest::ARTIFACTS.iter().chain(&["manifest.json"]) {
        let (x, y) = (
            std::fs::read(a.join(name)).unwrap(),
            std::fs::read(b.join(name)).unwrap(),
        );
        assert!(x == y, "{name} differs between two builds of the same spec");
    }
    manifest::verify(&a, None).unwrap();
    // The manifest names the kernel package and every unpacked package.
    let m = manifest::Manifest::read(&a).unwrap();
    let kernel_package = m.kernel_package.as_deref().unwrap_or_default();
    assert!(
        kernel_package.starts_with(&format!("linux-image-{} ", m.kernel)),
        "{m:?}"
    );
    for p in ["busybox-static ", "e2fsprogs ", "libext2fs2 ", "libc6 "] {
        assert!(m.packages.iter().any(|q| q.starts_with(p)), "{p}: {m:?}");
    }
    assert!(
        !m.packages.iter().any(|q| q.starts_with("systemd ")),
        "{m:?}"
    );

    // A second build with a warm cache rebuilds nothing.
    let again = common::build_into(common::test_spec(&dir), &a, &dir.join("cache-a"), &key);
    let rebuilt: Vec<_> = again
        .stages
        .iter()
        .filter(|s| !s.cached && s.name != "rootfs")
        .map(|s| s.name)
        .collect();
    assert!(rebuilt.is_empty(), "rebuilt {rebuilt:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn verify_rejects_a_tampered_payload_and_a_wrong_key() {
    let dir = common::scratch("tamper");
    let key = common::key_file(&dir);
    let out = dir.join("out");
    common::build_into(common::test_spec(&dir), &out, &common::shared_cache(), &key);
    manifest::verify(&out, None).unwrap();

    let other = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";
    let err = manifest::verify(&out, Some(other)).unwrap_err().to_string();
    assert!(err.contains("signature does not match"), "{err}");

    let p = out.join("update.payload");
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&p, bytes).unwrap();
    let err = manifest::verify(&out, None).unwrap_err().to_string();
    assert!(
        err.contains("update.payload") && err.contains("signature does not match"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn changing_only_herd_rebuilds_only_what_depends_on_it() {
    let dir = common::scratch("herd-change");
    let key = common::key_file(&dir);
    let cache = common::shared_cache();
    common::build_into(common::test_spec(&dir), &dir.join("out"), &cache, &key);
    let bin = dir.join("herd");
    let mut bytes = std::fs::read(dir.join("herd-under-test")).unwrap();
    // The image strips herd's debug info, so bytes appended past the ELF's end
    // would vanish: change a string the stripped binary keeps. Unique per run,
    // so a rerun with the same herd does not find this variant cached.
    let marker = b"INSECURE: the store runs without TLS";
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("herd's binary holds its plaintext warning");
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let variant = format!("{nonce:>28}{:>8}", std::process::id());
    bytes[at..at + marker.len()].copy_from_slice(&variant.as_bytes()[..marker.len()]);
    std::fs::write(&bin, bytes).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut spec = common::test_spec(&dir);
    spec.herd = herd_image::spec::HerdSpec::Path { path: bin };
    let s = common::build_into(spec, &dir.join("out"), &cache, &key);
    let cached: Vec<_> = s
        .stages
        .iter()
        .filter(|r| r.cached)
        .map(|r| r.name)
        .collect();
    assert_eq!(
        cached,
        vec!["initrd"],
        "only the boot initramfs is independent of herd: {:?}",
        s.stages
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_inputs_fail_fast_with_clear_errors_and_leave_no_output() {
    let dir = common::scratch("bad");
    let key = common::key_file(&dir);
    let out = dir.join("out");
    let cache = common::shared_cache();
    let opts = |spec, signing_key| herd_image::build::BuildOptions {
        spec,
        out: out.clone(),
        signing_key,
        cache: cache.clone(),
        progress: false,
    };

    let mut spec = common::test_spec(&dir);
    spec.files.push(herd_image::spec::FileSpec {
        src: dir.join("nope.txt"),
        dst: "/usr/share/nope".into(),
        mode: 0o644,
    });
    let err = herd_image::build::build(&opts(spec, Some(key.clone())))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nope.txt") && err.contains("does not exist"),
        "{err}"
    );

    let mut spec = common::test_spec(&dir);
    spec.packages.push("herd-no-such-package".into());
    let err = herd_image::build::build(&opts(spec, Some(key.clone())))
        .unwrap_err()
        .to_string();
    assert!(err.contains("herd-no-such-package"), "{err}");

    let bad_key = dir.join("bad.key");
    std::fs::write(&bad_key, "not a key").unwrap();
    let err = herd_image::build::build(&opts(common::test_spec(&dir), Some(bad_key)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.key") && err.contains("hex"), "{err}");

    let mut spec = common::test_spec(&dir);
    spec.partitions.usr_mib = 1;
    let err = herd_image::build::build(&opts(spec, Some(key)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("partitions.usr_mib"), "{err}");
    assert!(!out.exists(), "a failed build left {}", out.display());
    let _ = std::fs::remove_dir_all(&dir);
}
