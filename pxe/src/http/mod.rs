//! HTTP boot: iPXE scripts, kernels and initramfs (with Range), rendered
//! cloud-configs, the inventory's JSON API, and the update server's
//! routes (`crate::update::routes`).

pub mod admin_tls;
pub mod auth;
pub mod ipxe;
pub mod range;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::inventory::{BootStage, Inventory, Mac, Machine, Sighting};
use crate::profile::{MachineFacts, Profiles, template};

/// Shared by every request; `profiles` is swapped whole on reload.
#[derive(Clone)]
pub struct AppState {
    pub profiles: Arc<RwLock<Arc<Profiles>>>,
    pub inventory: Inventory,
    /// How machines reach this server, e.g. `http://10.0.0.1:8080`.
    pub base_url: String,
    /// The Omaha update server's state.
    pub updates: crate::update::UpdateService,
    /// Whether this listener serves the admin routes, and to whom.
    pub admin: auth::Admin,
}

impl AppState {
    fn profiles(&self) -> Arc<Profiles> {
        // A poisoned lock only means a panic while swapping an Arc: the
        // value inside is still a whole config.
        self.profiles
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/boot.ipxe", get(boot_script))
        .route("/assets/{profile}/kernel", get(kernel))
        .route("/assets/{profile}/initrd/{index}", get(initrd))
        .route("/assets/{profile}/files/{name}", get(file))
        .route("/cloud-config", get(cloud_config))
        .route("/api/machines", get(list_machines))
        .route("/api/machines/{mac}", get(get_machine))
        .route("/api/machines/{mac}/installed", post(mark_installed))
        .route("/api/machines/{mac}/reinstall", post(mark_reinstall))
        .merge(crate::update::routes::router())
        .with_state(state)
}

/// Serves `router` in plain HTTP on an already bound listener until
/// `shutdown`: what machines boot from (`state.admin` is normally
/// [`auth::Admin::Elsewhere`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    info!(addr = ?listener.local_addr().ok(), "HTTP boot serving");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Serves `router` over TLS with `tls` until `shutdown`: the admin
/// listener, where operators publish and change policies (`state.admin`
/// is [`auth::Admin::Here`]). Handshakes that fail or stall are logged and
/// dropped without holding up anyone else.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    tls: Arc<herd_pki::tls::ServerConfig>,
    state: AppState,
    shutdown: CancellationToken,
) {
    info!(addr = ?listener.local_addr().ok(), "HTTPS admin serving");
    herd_http::server::serve_tls(listener, tls, "pxe-admin", router(state), shutdown).await;
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn bad_request(msg: String) -> Response {
    text(StatusCode::BAD_REQUEST, msg + "\n")
}

/// Query parameters identifying a machine; anything else is a label.
#[derive(Debug, Default)]
struct Identity {
    mac: Option<Mac>,
    uuid: Option<String>,
    ip: Option<Ipv4Addr>,
    hostname: Option<String>,
    arch: Option<String>,
    labels: BTreeMap<String, String>,
}

fn identity(q: BTreeMap<String, String>) -> Result<Identity, String> {
    let mut id = Identity::default();
    let mut platform = None;
    for (k, v) in q {
        // iPXE sends empty strings for unset settings.
        if v.is_empty() {
            continue;
        }
        match k.as_str() {
            "mac" => id.mac = Some(v.parse().map_err(|e| format!("{e}"))?),
            // Firmware without an SMBIOS UUID reports all zeros: not an identity.
            "uuid" if v.chars().all(|c| c == '0' || c == '-') => {}
            "uuid" => id.uuid = Some(v.to_ascii_lowercase()),
            "ip" => id.ip = Some(v.parse().map_err(|_| format!("invalid ip {v:?}"))?),
            "hostname" => id.hostname = Some(v),
            "arch" => id.arch = Some(v),
            "platform" => platform = Some(v),
            _ => {
                id.labels.insert(k, v);
            }
        }
    }
    // Same names as the DHCP side derives from option 93.
    id.arch = match (platform.as_deref(), id.arch) {
        (Some("pcbios"), _) => Some("bios".to_owned()),
        (Some("efi"), Some(a)) => Some(format!("efi-{a}")),
        (_, a) => a,
    };
    Ok(id)
}

fn facts(id: &Identity, known: Option<&Machine>) -> MachineFacts {
    MachineFacts {
        mac: id.mac,
        uuid: id
            .uuid
            .clone()
            .or_else(|| known.and_then(|m| m.uuid.clone())),
        hostname: id
            .hostname
            .clone()
            .or_else(|| known.and_then(|m| m.hostname.clone())),
        labels: id.labels.clone(),
    }
}

/// Template values for one machine.
fn vars(
    state: &AppState,
    profiles: &Profiles,
    sel: crate::profile::Selected<'_>,
    mac: Mac,
    machine: Option<&Machine>,
    id: &Identity,
) -> template::Vars {
    let mut v = template::Vars::new();
    v.insert("mac".into(), mac.to_string());
    let hostname = id
        .hostname
        .clone()
        .or_else(|| machine.and_then(|m| m.hostname.clone()))
        .unwrap_or_else(|| format!("herd-{:02x}{:02x}{:02x}", mac.0[3], mac.0[4], mac.0[5]));
    v.insert("hostname".into(), hostname);
    if let Some(u) = id
        .uuid
        .clone()
        .or_else(|| machine.and_then(|m| m.uuid.clone()))
    {
        v.insert("uuid".into(), u);
    }
    if let Some(ip) = id.ip.or_else(|| machine.and_then(|m| m.ip)) {
        v.insert("ip".into(), ip.to_string());
    }
    if let Some(t) = &profiles.token {
        v.insert("token".into(), t.clone());
    }
    v.insert("peers".into(), profiles.peers.join(","));
    v.insert("server_url".into(), state.base_url.clone());
    v.insert("profile".into(), sel.profile.id.clone());
    for (k, val) in sel.profile.metadata.iter().chain(&sel.group.metadata) {
        v.insert(format!("metadata.{k}"), val.clone());
    }
    v
}

async fn note(state: &AppState, mac: Mac, s: Sighting) {
    if let Err(e) = state.inventory.record(mac, s).await {
        warn!(%mac, error = %e, "recording machine in the inventory");
    }
}

async fn boot_script(
    State(state): State<AppState>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let id = match identity(q) {
        Ok(id) => id,
        Err(e) => return bad_request(e),
    };
    let Some(mac) = id.mac else {
        return text(StatusCode::OK, ipxe::chain(&state.base_url));
    };
    let known = state.inventory.get(mac).await;
    let profiles = state.profiles();
    let Some(sel) = profiles.select(&facts(&id, known.as_ref())) else {
        warn!(%mac, "no group matches this machine and there is no default group");
        note(
            &state,
            mac,
            Sighting {
                uuid: id.uuid.clone(),
                ip: id.ip,
                arch: id.arch.clone(),
                ..Default::default()
            },
        )
        .await;
        return text(StatusCode::OK, ipxe::no_profile(mac));
    };
    if known.as_ref().is_some_and(|m| m.installed) {
        info!(%mac, "installed machine: booting from local disk");
        return text(StatusCode::OK, ipxe::local_disk(mac));
    }
    let v = vars(&state, &profiles, sel, mac, known.as_ref(), &id);
    let cmdline = match template::render(&sel.profile.cmdline, &v) {
        Ok(c) => c,
        Err(e) => {
            warn!(%mac, profile = %sel.profile.id, error = %e, "rendering kernel command line");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("profile {}: cmdline: {e}\n", sel.profile.id),
            );
        }
    };
    note(
        &state,
        mac,
        Sighting {
            uuid: id.uuid.clone(),
            ip: id.ip,
            arch: id.arch.clone(),
            hostname: id.hostname.clone(),
            profile: Some(sel.profile.id.clone()),
            stage: Some(BootStage::Script),
        },
    )
    .await;
    info!(%mac, profile = %sel.profile.id, "iPXE script served");
    text(
        StatusCode::OK,
        ipxe::boot(&state.base_url, sel.profile, mac, &cmdline),
    )
}

#[derive(serde::Deserialize)]
struct AssetQuery {
    mac: Option<String>,
}

async fn asset(
    state: AppState,
    profile: String,
    which: Option<usize>,
    q: AssetQuery,
    headers: HeaderMap,
) -> Response {
    let profiles = state.profiles();
    let Some(p) = profiles.profile(&profile) else {
        return text(StatusCode::NOT_FOUND, format!("no profile {profile:?}\n"));
    };
    let (path, stage) = match which {
        None => (p.kernel.clone(), BootStage::Kernel),
        Some(i) => match p.initrd.get(i) {
            Some(path) => (path.clone(), BootStage::Initramfs),
            None => {
                return text(
                    StatusCode::NOT_FOUND,
                    format!("profile {profile:?} has no initrd {i}\n"),
                );
            }
        },
    };
    if let Some(mac) = q.mac.as_deref().and_then(|m| m.parse::<Mac>().ok()) {
        note(
            &state,
            mac,
            Sighting {
                stage: Some(stage),
                ..Default::default()
            },
        )
        .await;
    }
    range::serve_file(&path, &headers).await
}

async fn kernel(
    State(state): State<AppState>,
    Path(profile): Path<String>,
    Query(q): Query<AssetQuery>,
    headers: HeaderMap,
) -> Response {
    asset(state, profile, None, q, headers).await
}

async fn initrd(
    State(state): State<AppState>,
    Path((profile, index)): Path<(String, usize)>,
    Query(q): Query<AssetQuery>,
    headers: HeaderMap,
) -> Response {
    asset(state, profile, Some(index), q, headers).await
}

/// One of the profile's named `files` (e.g. `disk.img` for an install).
async fn file(
    State(state): State<AppState>,
    Path((profile, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let profiles = state.profiles();
    let Some(p) = profiles.profile(&profile) else {
        return text(StatusCode::NOT_FOUND, format!("no profile {profile:?}\n"));
    };
    let Some(path) = p.files.get(&name) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("profile {profile:?} has no file {name:?}\n"),
        );
    };
    range::serve_file(path, &headers).await
}

async fn cloud_config(
    State(state): State<AppState>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let id = match identity(q) {
        Ok(id) => id,
        Err(e) => return bad_request(e),
    };
    let Some(mac) = id.mac else {
        return bad_request("cloud-config needs ?mac=".into());
    };
    let known = state.inventory.get(mac).await;
    let profiles = state.profiles();
    let Some(sel) = profiles.select(&facts(&id, known.as_ref())) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no profile matches {mac} and there is no default group\n"),
        );
    };
    let Some(tpl) = &sel.profile.cloud_config else {
        return text(
            StatusCode::NOT_FOUND,
            format!("profile {} has no cloud-config\n", sel.profile.id),
        );
    };
    let v = vars(&state, &profiles, sel, mac, known.as_ref(), &id);
    match template::render(tpl, &v) {
        Ok(body) => {
            note(
                &state,
                mac,
                Sighting {
                    profile: Some(sel.profile.id.clone()),
                    stage: Some(BootStage::CloudConfig),
                    ..Default::default()
                },
            )
            .await;
            (
                [(header::CONTENT_TYPE, "text/cloud-config; charset=utf-8")],
                body,
            )
                .into_response()
        }
        Err(e) => {
            warn!(%mac, profile = %sel.profile.id, error = %e, "rendering cloud-config");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("profile {}: cloud-config: {e}\n", sel.profile.id),
            )
        }
    }
}

async fn list_machines(State(state): State<AppState>) -> Json<Vec<Machine>> {
    Json(state.inventory.list().await)
}

fn parse_mac(s: &str) -> Result<Mac, Box<Response>> {
    s.parse().map_err(|e| Box::new(bad_request(format!("{e}"))))
}

async fn get_machine(State(state): State<AppState>, Path(mac): Path<String>) -> Response {
    let mac = match parse_mac(&mac) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    match state.inventory.get(mac).await {
        Some(m) => Json(m).into_response(),
        None => text(
            StatusCode::NOT_FOUND,
            format!("machine {mac} has never been seen\n"),
        ),
    }
}

async fn set_installed(state: AppState, mac: String, installed: bool) -> Response {
    let mac = match parse_mac(&mac) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    match state.inventory.set_installed(mac, installed).await {
        Ok(m) => {
            info!(%mac, installed, "machine install flag changed");
            Json(m).into_response()
        }
        Err(crate::inventory::InventoryError::Unknown(_)) => text(
            StatusCode::NOT_FOUND,
            format!("machine {mac} has never been seen\n"),
        ),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

async fn mark_installed(State(state): State<AppState>, Path(mac): Path<String>) -> Response {
    set_installed(state, mac, true).await
}

/// Sends a machine back to the installer on its next boot: an operator's
/// decision (it wipes the disk), so an admin route.
async fn mark_reinstall(
    State(state): State<AppState>,
    Path(mac): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err((status, reason)) = state.admin.check(&headers) {
        return text(status, reason + "\n");
    }
    set_installed(state, mac, false).await
}

/// The URL machines use to reach a server listening on `addr`.
pub fn base_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str, extra: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn profile_files_are_served_by_name_only_with_range() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vmlinuz"), b"k").unwrap();
        std::fs::write(dir.path().join("disk.img"), b"0123456789").unwrap();
        std::fs::write(dir.path().join("secret"), b"no").unwrap();
        let cfg = dir.path().join("herd.yaml");
        std::fs::write(
            &cfg,
            "profiles:\n  - id: p\n    kernel: vmlinuz\n    files: { disk.img: disk.img }\n",
        )
        .unwrap();
        let profiles = Profiles::load(&cfg).unwrap();
        let state_dir = dir.path().join("state");
        std::fs::create_dir(&state_dir).unwrap();
        let state = AppState {
            profiles: Arc::new(RwLock::new(Arc::new(profiles))),
            inventory: Inventory::open(&state_dir).await.unwrap(),
            base_url: "http://x".into(),
            updates: crate::update::UpdateService::open(&state_dir)
                .await
                .unwrap(),
            admin: auth::Admin::Elsewhere {
                url: "https://x:8443".into(),
            },
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, state, stop.clone()));

        let full = get(addr, "/assets/p/files/disk.img", "").await;
        assert!(
            full.starts_with("HTTP/1.1 200") && full.ends_with("\r\n\r\n0123456789"),
            "{full}"
        );
        let part = get(addr, "/assets/p/files/disk.img", "Range: bytes=2-4\r\n").await;
        assert!(
            part.starts_with("HTTP/1.1 206") && part.ends_with("\r\n\r\n234"),
            "{part}"
        );
        // Only the names the profile lists exist, whatever the path says.
        for path in [
            "/assets/p/files/secret",
            "/assets/p/files/..%2Fsecret",
            "/assets/p/files/..%2F..%2Fetc%2Fpasswd",
            "/assets/q/files/disk.img",
        ] {
            let r = get(addr, path, "").await;
            assert!(r.starts_with("HTTP/1.1 404"), "{path}: {r}");
            assert!(!r.ends_with("no"), "{path}: {r}");
        }
        stop.cancel();
        server.await.unwrap().unwrap();
    }
}
