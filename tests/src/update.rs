//! Support for OS update tests without VMs: a small real A/B disk image
//! (GPT, FAT ESP with systemd-boot's entries, USR-A/B, STATE), signed
//! releases of made-up payloads, the provisioning server's update routes
//! on loopback, and an emulation of systemd-boot's choice among the
//! entries (newest generation first, entries without tries skipped, a
//! try counted on each boot) — the part of a reboot the slots feel.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use herd_image::payload::{self, SigningKey};
use herd_image::slot::{self, Esp, ImageEsp, Slot};
use tokio_util::sync::CancellationToken;

/// A disk image like the OS's, with tiny made-up contents.
pub struct TinyDisk {
    pub path: PathBuf,
}

/// Writes `len` bytes derived from `seed` (so different versions differ).
fn filler(path: &Path, seed: &str, len: usize) {
    let mut bytes = Vec::with_capacity(len);
    let mut x = seed
        .bytes()
        .fold(7u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
    while bytes.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes.truncate(len);
    std::fs::write(path, bytes).unwrap();
}

/// The three members of a payload for `version` in `dir`.
fn members(dir: &Path, version: &str) -> [(&'static str, PathBuf); 3] {
    std::fs::create_dir_all(dir).unwrap();
    let m = [
        ("vmlinuz", dir.join("vmlinuz")),
        ("initrd", dir.join("initrd")),
        ("usr.img", dir.join("usr.img")),
    ];
    filler(&m[0].1, &format!("k{version}"), 100_000);
    filler(&m[1].1, &format!("i{version}"), 200_000);
    filler(&m[2].1, &format!("u{version}"), 1_000_000);
    m
}

impl TinyDisk {
    /// A disk with slot A holding `version` (booted, good).
    pub fn build(dir: &Path, version: &str) -> TinyDisk {
        let m = members(&dir.join("disk-inputs"), version);
        let path = dir.join("disk.img");
        let inputs = herd_image::disk::DiskInputs {
            vmlinuz: &m[0].1,
            initrd: &m[1].1,
            usr_img: &m[2].1,
            version,
            cmdline: "console=ttyS0 site=x",
            esp_mib: 40,
            usr_mib: 4,
            state_mib: 4,
            seed: "tiny",
            epoch: herd_image::build::DEFAULT_EPOCH,
        };
        herd_image::disk::build(&inputs, &dir.join("disk-work"), &path)
            .expect("building a tiny disk");
        TinyDisk { path }
    }

    pub fn esp(&self) -> ImageEsp {
        slot::esp_of(&self.path).unwrap()
    }

    /// What systemd-boot does at power-on: picks the newest entry that has
    /// tries left (or none), counts a try, and says which slot and version
    /// boot.
    pub fn boot(&self) -> (Slot, String) {
        let esp = self.esp();
        let mut entries: Vec<(u64, slot::Entry, String)> = slot::entries(&esp)
            .unwrap()
            .into_iter()
            .map(|e| {
                let text = esp.read(&format!("loader/entries/{}", e.file)).unwrap();
                let generation = text
                    .lines()
                    .find_map(|l| l.strip_prefix("version "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                (generation, e, text)
            })
            .filter(|(_, e, _)| e.tries.is_none_or(|(left, _)| left > 0))
            .collect();
        entries.sort_by_key(|(g, _, _)| std::cmp::Reverse(*g));
        let (_, chosen, text) = entries.into_iter().next().expect("a bootable entry");
        if let Some((left, done)) = chosen.tries {
            esp.rename(
                &format!("loader/entries/{}", chosen.file),
                &format!(
                    "loader/entries/{}+{}-{}.conf",
                    chosen.slot.entry_stem(),
                    left - 1,
                    done + 1
                ),
            )
            .unwrap();
        }
        // `title herd VERSION (USR-X)`
        let version = text
            .lines()
            .find_map(|l| l.strip_prefix("title herd "))
            .and_then(|t| t.split_whitespace().next())
            .unwrap()
            .to_owned();
        (chosen.slot, version)
    }

    pub fn entry(&self, s: Slot) -> Option<slot::Entry> {
        slot::entry_of(&self.esp(), s).unwrap()
    }
}

/// A signing key for releases.
pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// `herd image build`-like output for `version` in `dir`: payload, its
/// signature by `key`, and a manifest naming `manifest_key` (the key the
/// manifest claims; normally `key`'s).
pub fn release(dir: &Path, version: &str, key: &SigningKey) -> PathBuf {
    let out = dir.join(format!("release-{version}"));
    std::fs::create_dir_all(&out).unwrap();
    let m = members(&out.join("inputs"), version);
    let refs: Vec<(&str, &Path)> = m.iter().map(|(n, p)| (*n, p.as_path())).collect();
    payload::write(
        version,
        &refs,
        key,
        &out.join("update.payload"),
        &out.join("update.payload.sig"),
    )
    .unwrap();
    write_manifest(&out, version, &hex(key.verifying_key().as_bytes()));
    out
}

/// Lowercase hex, as manifests write keys and hashes.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// (Re)writes `dir/manifest.json` for the payload and signature there.
pub fn write_manifest(dir: &Path, version: &str, public_key: &str) {
    let mut artifacts = std::collections::BTreeMap::new();
    for f in ["update.payload", "update.payload.sig"] {
        let (size, digest) = payload::sha256_file(&dir.join(f)).unwrap();
        artifacts.insert(
            f.to_owned(),
            herd_image::manifest::ArtifactInfo {
                size,
                sha256: hex(&digest),
            },
        );
    }
    let m = herd_image::manifest::Manifest {
        version: version.into(),
        kernel: "6.1.0-test".into(),
        kernel_package: None,
        packages: Vec::new(),
        public_key: public_key.into(),
        artifacts,
    };
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&m).unwrap(),
    )
    .unwrap();
}

/// The provisioning server's HTTP side (with the update server) on
/// loopback; stops on drop.
pub struct PxeServer {
    /// The plain listener machines use (Omaha, release files).
    pub url: String,
    /// The HTTPS admin listener operators use.
    pub admin_url: String,
    /// The admin listener's CA certificate (PEM), which clients pin.
    pub ca_pem: String,
    pub token: String,
    pub state_dir: PathBuf,
    pub updates: herd_pxe::update::UpdateService,
    stop: CancellationToken,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl PxeServer {
    /// Both of `herd pxe serve`'s HTTP listeners on loopback, as its
    /// `server::run` wires them.
    pub async fn start(dir: &Path) -> PxeServer {
        let state_dir = dir.join("pxe");
        std::fs::create_dir_all(&state_dir).unwrap();
        std::fs::write(dir.join("vmlinuz"), b"k").unwrap();
        let cfg = dir.join("pxe.yaml");
        std::fs::write(&cfg, "profiles:\n  - id: p\n    kernel: vmlinuz\n").unwrap();
        let profiles = herd_pxe::profile::Profiles::load(&cfg).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{addr}");
        let admin_url = format!("https://{}", admin_listener.local_addr().unwrap());
        let tls = herd_pxe::http::admin_tls::load_or_create(
            &state_dir,
            std::net::Ipv4Addr::LOCALHOST,
            &[],
        )
        .unwrap();
        let ca_pem = std::fs::read_to_string(&tls.ca_file).unwrap();
        let updates = herd_pxe::update::UpdateService::open(&state_dir)
            .await
            .unwrap();
        let token = "test-admin-token".to_owned();
        let state = herd_pxe::http::AppState {
            profiles: Arc::new(RwLock::new(Arc::new(profiles))),
            inventory: herd_pxe::inventory::Inventory::open(&state_dir)
                .await
                .unwrap(),
            base_url: url.clone(),
            updates: updates.clone(),
            admin: herd_pxe::http::auth::Admin::Elsewhere {
                url: admin_url.clone(),
            },
        };
        let admin_state = herd_pxe::http::AppState {
            admin: herd_pxe::http::auth::Admin::Here(Arc::new(
                herd_pxe::http::auth::BearerToken::new(token.clone()),
            )),
            ..state.clone()
        };
        let stop = CancellationToken::new();
        let tasks = vec![
            tokio::spawn({
                let stop = stop.clone();
                async move { herd_pxe::http::serve(listener, state, stop).await.unwrap() }
            }),
            tokio::spawn(herd_pxe::http::serve_admin(
                admin_listener,
                tls.config,
                admin_state,
                stop.clone(),
            )),
        ];
        PxeServer {
            url,
            admin_url,
            ca_pem,
            token,
            state_dir,
            updates,
            stop,
            _tasks: tasks,
        }
    }

    /// The operator's client of this server: its admin listener, with
    /// `token`.
    pub fn client(&self, token: Option<&str>) -> herd_pxe::update::client::Target {
        herd_pxe::update::client::Target::server(
            &self.admin_url,
            token.map(str::to_owned),
            Some(&self.ca_pem),
        )
        .unwrap()
    }

    /// The operator's client with the server's token.
    pub fn target(&self) -> herd_pxe::update::client::Target {
        self.client(Some(&self.token))
    }
}

impl Drop for PxeServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
