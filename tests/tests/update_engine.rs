//! The update role end to end without VMs: a real store cluster (herd
//! members on loopback), the provisioning server's update routes, a tiny
//! real A/B disk image whose slots the role writes, activates and marks
//! good, and systemd-boot's choice among the entries emulated at each
//! "reboot" (the role asks to reboot; the rig powers the machine on again
//! with the slot the boot loader would pick). What a real reboot and real
//! power loss add is proven in the QEMU lab (`lab_install`).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use herd_client::Client;
use herd_client::keys::{MACHINES, MachineRecord, Role};
use herd_client::kit::Action;
use herd_client::proto::etcdserverpb::PutRequest;
use herd_image::slot::Slot;
use herd_omaha::Cause;
use herd_pxe::update::state::UpdateState;
use herd_tests::store::{Cluster, Server};
use herd_tests::update::{PxeServer, TinyDisk, key, release};
use herd_update::health::{CheckFuture, Gate, HealthCheck, StoreMember, Verdict};
use herd_update::local::Phase;
use herd_update::reboot::{RebootFuture, Rebooter};
use herd_update::{Engine, Machine, UpdateSettings, engine};

/// Counts reboot requests; the rig does the rebooting.
#[derive(Clone, Default)]
struct FakeReboot(Arc<AtomicUsize>);

impl Rebooter for FakeReboot {
    fn reboot(&self) -> RebootFuture<'_> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { std::io::Error::other("the rig reboots the machine") })
    }
}

/// A release whose version is in `broken` never becomes healthy (its
/// image's own check fails), as release C in the lab.
struct ReleaseCheck {
    version: String,
    broken: Arc<std::sync::Mutex<BTreeSet<String>>>,
}

impl HealthCheck for ReleaseCheck {
    fn name(&self) -> &'static str {
        "release"
    }
    fn check(&self) -> CheckFuture<'_> {
        let broken = self.broken.lock().unwrap().contains(&self.version);
        Box::pin(async move {
            if broken {
                Verdict::NotYet("this release is broken".into())
            } else {
                Verdict::Healthy
            }
        })
    }
}

const MACHINE: &str = "525400770001";

/// One machine: its disk, its STATE (the role's data dir), its engine.
struct Sim {
    dir: tempfile::TempDir,
    disk: TinyDisk,
    client: Client,
    pxe: PxeServer,
    public_key: herd_image::payload::VerifyingKey,
    broken: Arc<std::sync::Mutex<BTreeSet<String>>>,
    reboots: FakeReboot,
    seen_reboots: usize,
    boots: u32,
    engine: Option<Arc<Engine>>,
    booted: (Slot, String),
    settings: UpdateSettings,
}

impl Sim {
    async fn new(cluster: &Cluster) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let disk = TinyDisk::build(dir.path(), "0.1.0");
        let pxe = PxeServer::start(dir.path()).await;
        let client = cluster.client(&cluster.members[0].client.to_string());
        let settings = UpdateSettings {
            server: Some(pxe.url.clone()),
            interval: Duration::from_millis(300),
            jitter: Duration::ZERO,
            health_timeout: Duration::from_secs(3),
            reboot_lock_ttl: Duration::from_secs(60),
            drain_grace: Duration::ZERO,
            data_dir: dir.path().join("state"),
            ..Default::default()
        };
        Sim {
            disk,
            client,
            pxe,
            public_key: key(1).verifying_key(),
            broken: Default::default(),
            reboots: Default::default(),
            seen_reboots: 0,
            boots: 0,
            engine: None,
            booted: (Slot::A, String::new()),
            settings,
            dir,
        }
    }

    /// Power on: the boot loader picks a slot, the agent registers with a
    /// new boot id and the role sorts out what the last boot left.
    async fn power_on(&mut self) {
        self.engine = None;
        self.boots += 1;
        self.booted = self.disk.boot();
        let boot_id = format!("boot-{}", self.boots);
        let record = MachineRecord {
            machine_id: MACHINE.into(),
            hostname: "m1".into(),
            mac: "52:54:00:77:00:01".into(),
            ip: "10.77.0.11".parse().unwrap(),
            boot_id: boot_id.clone(),
            image_version: self.booted.1.clone(),
            roles: vec![Role::Store],
            agent_version: "test".into(),
            metadata: Default::default(),
            api_url: None,
        };
        self.client
            .kv()
            .put(PutRequest {
                key: MACHINES.key(MACHINE).into_bytes(),
                value: serde_json::to_vec(&record).unwrap(),
                ..Default::default()
            })
            .await
            .unwrap();
        let gate = Gate::new()
            .with(StoreMember {
                client: self.client.clone(),
                machine_id: MACHINE.into(),
                boot_id: boot_id.clone(),
            })
            .with(ReleaseCheck {
                version: self.booted.1.clone(),
                broken: Arc::clone(&self.broken),
            });
        let disk = herd_update::slots::Disk {
            disk: self.disk.path.clone(),
            esp: Box::new(self.disk.esp()),
            booted: self.booted.0,
            public_key: self.public_key,
            scratch: self.dir.path().join("scratch"),
        };
        let omaha = herd_update::omaha::OmahaClient::new(
            herd_http::Client::new(),
            &self.pxe.url,
            "stable",
            MACHINE,
        );
        let state = herd_update::local::load(&self.settings.data_dir).unwrap();
        let engine = Arc::new(Engine::new(
            self.settings.clone(),
            Machine {
                machine_id: MACHINE.into(),
                hostname: "m1".into(),
                boot_id,
                version: self.booted.1.parse().unwrap(),
            },
            self.client.clone(),
            Some(omaha),
            Arc::new(disk),
            gate,
            Arc::new(self.reboots.clone()),
            herd_http::Client::new(),
            state,
        ));
        engine::boot(&engine).await.unwrap();
        self.engine = Some(engine);
    }

    async fn phase(&self) -> Phase {
        self.engine.as_ref().unwrap().state().await.phase
    }

    /// Steps the role (rebooting when it asks) until `done`, at most `steps`.
    async fn run_until(&mut self, what: &str, steps: usize, done: impl AsyncPred) {
        for _ in 0..steps {
            if done.holds(self).await {
                return;
            }
            let engine = Arc::clone(self.engine.as_ref().unwrap());
            let action = engine.step().await.unwrap_or_else(|e| {
                eprintln!("step failed (retried): {e}");
                Action::Requeue(Duration::from_millis(200))
            });
            let reboots = self.reboots.0.load(Ordering::SeqCst);
            if reboots != self.seen_reboots {
                self.seen_reboots = reboots;
                // The role asked to reboot: the state it left is one a
                // power cut can find (e.g. "rebooting"), so look first.
                if done.holds(self).await {
                    return;
                }
                self.power_on().await;
                continue;
            }
            if let Action::Requeue(d) = action {
                tokio::time::sleep(d.min(Duration::from_millis(200))).await;
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!(
            "never reached {what}; phase {:?}, booted {:?}",
            self.phase().await,
            self.booted
        );
    }

    async fn publish(&self, version: &str, signer: u8) -> PathBuf {
        let dir = release(self.dir.path(), version, &key(signer));
        self.pxe
            .target()
            .publish(&dir, "stable", false)
            .await
            .unwrap();
        dir
    }

    async fn server_machine(&self) -> herd_pxe::update::service::MachineStatus {
        self.pxe
            .updates
            .status()
            .await
            .machines
            .into_iter()
            .find(|m| m.machine_id == MACHINE)
            .expect("the server knows the machine")
    }
}

/// A condition on the rig, checked between steps.
trait AsyncPred {
    async fn holds(&self, sim: &Sim) -> bool;
}

/// Idle on `version`, booted from a good slot.
struct SettledOn(&'static str);

impl AsyncPred for SettledOn {
    async fn holds(&self, sim: &Sim) -> bool {
        sim.booted.1 == self.0
            && sim.phase().await == Phase::Idle
            && sim
                .disk
                .entry(sim.booted.0)
                .is_some_and(|e| e.tries.is_none())
    }
}

/// Idle after `version` failed here.
struct Refused(&'static str);

impl AsyncPred for Refused {
    async fn holds(&self, sim: &Sim) -> bool {
        let st = sim.engine.as_ref().unwrap().state().await;
        st.phase == Phase::Idle && st.failed.contains(self.0)
    }
}

/// In a given phase (by name).
struct InPhase(&'static str);

impl AsyncPred for InPhase {
    async fn holds(&self, sim: &Sim) -> bool {
        sim.phase().await.name() == self.0
    }
}

fn cluster(n: usize) -> Cluster {
    Cluster::start(Server::Herd, n)
}

async fn holders(client: &Client) -> usize {
    herd_update::lock::holders(client).await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_machine_updates_marks_good_after_the_gate_and_rolls_back_a_broken_release() {
    let cluster = tokio::task::block_in_place(|| cluster(3));
    let mut sim = Sim::new(&cluster).await;
    sim.power_on().await;
    assert_eq!(sim.booted, (Slot::A, "0.1.0".into()));

    sim.publish("0.2.0", 1).await;
    sim.run_until("0.2.0 on a good slot", 300, SettledOn("0.2.0"))
        .await;
    assert_eq!(sim.booted.0, Slot::B);
    assert_eq!(sim.disk.entry(Slot::A).unwrap().tries, None, "A stays good");
    let m = sim.server_machine().await;
    assert_eq!(
        (m.state, m.version.to_string()),
        (UpdateState::Done, "0.2.0".into())
    );
    assert_eq!(holders(&sim.client).await, 0, "the lock was given back");
    // Events were delivered and the server saw every step.
    let st = sim.engine.as_ref().unwrap().state().await;
    assert!(st.pending.is_empty(), "{:?}", st.pending);

    // A broken release: the machine tries it, the gate never passes, the
    // tries are used up and it comes back to 0.2.0 by itself.
    sim.broken.lock().unwrap().insert("0.3.0".into());
    sim.publish("0.3.0", 1).await;
    sim.run_until("0.3.0 on trial", 300, InPhase("verifying"))
        .await;
    assert_eq!(sim.booted, (Slot::A, "0.3.0".into()));
    assert_eq!(
        holders(&sim.client).await,
        1,
        "the lock is held through the gate"
    );
    sim.run_until("back on 0.2.0", 300, SettledOn("0.2.0"))
        .await;
    let st = sim.engine.as_ref().unwrap().state().await;
    assert!(st.failed.contains("0.3.0"));
    let a = sim.disk.entry(Slot::A).unwrap();
    assert!(
        matches!(a.tries, Some((0, _))),
        "the trial is used up: {a:?}"
    );
    sim.run_until("the failure delivered", 50, Delivered).await;
    let m = sim.server_machine().await;
    assert_eq!(m.state, UpdateState::RolledBack);
    assert!(m.failed["0.3.0"].contains("health gate"), "{m:?}");
    let status = sim.pxe.updates.status().await;
    let reason = status.groups[0]
        .halt_reason
        .clone()
        .expect("safe mode halted the group");
    assert!(
        reason.contains("0.3.0") && reason.contains(MACHINE),
        "{reason}"
    );
    assert_eq!(holders(&sim.client).await, 0);
    // It is never offered 0.3.0 again, even after a resume.
    sim.pxe.target().resume("stable").await.unwrap();
    sim.run_for(10).await;
    assert_eq!(sim.phase().await, Phase::Idle);
    assert_eq!(sim.booted.1, "0.2.0");
}

/// Events all delivered.
struct Delivered;

impl AsyncPred for Delivered {
    async fn holds(&self, sim: &Sim) -> bool {
        sim.engine
            .as_ref()
            .unwrap()
            .state()
            .await
            .pending
            .is_empty()
    }
}

impl Sim {
    /// Steps `n` times whatever happens.
    async fn run_for(&mut self, n: usize) {
        for _ in 0..n {
            let engine = Arc::clone(self.engine.as_ref().unwrap());
            let _ = engine.step().await;
            let reboots = self.reboots.0.load(Ordering::SeqCst);
            if reboots != self.seen_reboots {
                self.seen_reboots = reboots;
                self.power_on().await;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// The machine's update status in the store (what `herd lab status` shows).
    async fn store_status(&self) -> Option<herd_client::keys::UpdateStatus> {
        let (objects, _) = herd_client::kit::list::<herd_client::keys::UpdateStatus>(
            &self.client,
            &herd_client::kit::Scope::All,
        )
        .await
        .unwrap();
        objects.into_iter().map(|o| o.value).next()
    }
}

/// Refused with `cause`, never flipped: slot B has no entry and A boots.
async fn assert_refused(sim: &mut Sim, version: &'static str, cause: Cause) {
    sim.run_until(&format!("{version} refused"), 200, Refused(version))
        .await;
    assert_eq!(sim.disk.entry(Slot::B), None, "never flipped");
    assert_eq!(sim.booted, (Slot::A, "0.1.0".into()));
    sim.run_until("the failure delivered", 50, Delivered).await;
    let m = sim.server_machine().await;
    assert_eq!(m.state, UpdateState::Failed, "{m:?}");
    let why = &m.failed[version];
    assert!(why.contains(&cause.code().to_string()), "{cause:?}: {why}");
    let status = sim.store_status().await.expect("a status in the store");
    assert!(status.detail.contains(version), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_releases_are_refused_with_their_cause_and_never_flipped() {
    let cluster = tokio::task::block_in_place(|| cluster(1));

    // Tampered on the server after publishing: the hash is not the manifest's.
    let mut sim = Sim::new(&cluster).await;
    sim.power_on().await;
    sim.publish("0.2.0", 1).await;
    let stored = sim
        .pxe
        .state_dir
        .join("updates/releases/0.2.0/update.payload");
    let mut bytes = std::fs::read(&stored).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x55;
    std::fs::write(&stored, bytes).unwrap();
    assert_refused(&mut sim, "0.2.0", Cause::HashMismatch).await;

    // Signed with a key the machine does not trust.
    let mut sim = Sim::new(&cluster).await;
    sim.power_on().await;
    sim.publish("0.2.0", 9).await;
    assert_refused(&mut sim, "0.2.0", Cause::BadSignature).await;

    // Truncated on the server: the download comes up short, then the server
    // has nothing more to give.
    let mut sim = Sim::new(&cluster).await;
    sim.power_on().await;
    sim.publish("0.2.0", 1).await;
    let stored = sim
        .pxe
        .state_dir
        .join("updates/releases/0.2.0/update.payload");
    let len = std::fs::metadata(&stored).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&stored)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    assert_refused(&mut sim, "0.2.0", Cause::Download).await;

    // A downgrade the server allows but the machine does not.
    let mut sim = Sim::new(&cluster).await;
    sim.power_on().await;
    let old = release(sim.dir.path(), "0.0.9", &key(1));
    sim.pxe
        .target()
        .publish(&old, "stable", true)
        .await
        .unwrap();
    assert_refused(&mut sim, "0.0.9", Cause::Downgrade).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_omaha_answer_is_refused_and_nothing_is_fetched() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = tokio::task::block_in_place(|| cluster(1));
    let mut sim = Sim::new(&cluster).await;
    // A server that offers an update without saying where it is.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answers = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&answers);
    tokio::spawn(async move {
        let body = format!(
            "<response protocol='3.0'><app appid='{}' status='ok'><updatecheck status='ok'><manifest version='0.2.0'/></updatecheck></app></response>",
            herd_omaha::APP_ID
        );
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 65536];
            let _ = s.read(&mut buf).await;
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(reply.as_bytes()).await;
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    sim.settings.server = Some(url.clone());
    sim.pxe.url = url;
    sim.power_on().await;
    sim.run_for(10).await;
    assert!(
        answers.load(Ordering::SeqCst) >= 2,
        "the machine kept asking"
    );
    assert_eq!(sim.phase().await, Phase::Idle);
    assert!(sim.engine.as_ref().unwrap().state().await.failed.is_empty());
    assert_eq!(sim.disk.entry(Slot::B), None);
    assert!(
        !sim.settings.data_dir.join("downloads").exists(),
        "nothing fetched"
    );
    let status = sim.store_status().await.expect("a status");
    assert!(status.detail.contains("without <urls>"), "{status:?}");
}

/// Every phase of an update, interrupted by a power cut (the role's
/// engine dropped, the machine powered on again): it always ends on 0.2.0,
/// marked good, with the lock given back.
#[tokio::test(flavor = "multi_thread")]
async fn an_update_cut_off_in_any_phase_ends_on_a_good_slot() {
    let cluster = tokio::task::block_in_place(|| cluster(3));
    for cut in [
        "downloading",
        "waiting-for-lock",
        "draining",
        "rebooting",
        "verifying",
    ] {
        let mut sim = Sim::new(&cluster).await;
        sim.power_on().await;
        sim.publish("0.2.0", 1).await;
        sim.run_until(cut, 300, InPhase(cut)).await;
        eprintln!("power cut while {cut}");
        sim.power_on().await;
        sim.run_until("0.2.0 on a good slot", 300, SettledOn("0.2.0"))
            .await;
        assert_eq!(holders(&sim.client).await, 0, "after a cut while {cut}");
        sim.run_until("events delivered", 50, Delivered).await;
        assert_eq!(sim.server_machine().await.state, UpdateState::Done, "{cut}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reboot_lock_admits_one_holder_frees_a_dead_ones_slot_and_guards_quorum() {
    use herd_client::session::Session;
    use herd_update::lock::{self, Acquire, Holder};
    use herd_update::quorum::{self, Verdict};
    let mut cluster = tokio::task::block_in_place(|| cluster(3));
    let client = cluster.client(&cluster.members[0].client.to_string());
    let holder = |m: &str| Holder {
        machine_id: m.into(),
        hostname: m.into(),
        member_id: None,
        version: "0.2.0".into(),
        since: 0,
    };
    let s1 = Session::new(&client, Duration::from_secs(30))
        .await
        .unwrap();
    let s2 = Session::new(&client, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        lock::acquire(&client, &holder("m1"), s1.lease())
            .await
            .unwrap(),
        Acquire::Held
    );
    assert_eq!(
        lock::acquire(&client, &holder("m2"), s2.lease())
            .await
            .unwrap(),
        Acquire::Busy(vec![holder("m1")])
    );
    assert_eq!(
        lock::acquire(&client, &holder("m1"), s1.lease())
            .await
            .unwrap(),
        Acquire::Held,
        "holding is idempotent"
    );
    // The holder dies: its lease goes, and with it its slot.
    s1.close().await.unwrap();
    assert_eq!(
        lock::acquire(&client, &holder("m2"), s2.lease())
            .await
            .unwrap(),
        Acquire::Held
    );
    // Two slots when configured so.
    client
        .kv()
        .put(PutRequest {
            key: lock::config_key().into_bytes(),
            value: br#"{"max": 2}"#.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let s3 = Session::new(&client, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        lock::acquire(&client, &holder("m3"), s3.lease())
            .await
            .unwrap(),
        Acquire::Held
    );
    assert_eq!(lock::holders(&client).await.unwrap().len(), 2);

    // Quorum: member 0 may go while the other two are up and free...
    let ids: Vec<u64> = tokio::task::block_in_place(|| {
        (0..3)
            .map(|i| cluster.status(i).unwrap().member_id)
            .collect()
    });
    let me = ids[0];
    // Members founded together learn each other's client addresses a
    // moment after the first leader (each advertises its own); until then
    // the probe cannot reach them and counts them down.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let members = client
            .cluster()
            .member_list(herd_client::proto::etcdserverpb::MemberListRequest { linearizable: true })
            .await
            .unwrap()
            .into_inner()
            .members;
        if members.iter().all(|m| !m.client_urls.is_empty()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{members:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let v = quorum::check(&client, me, &[]).await.unwrap();
    assert!(matches!(v, Verdict::Safe(_)), "{v:?}");
    // ...not while another holds the lock (it may be rebooting)...
    let busy = Holder {
        member_id: Some(ids[1]),
        ..holder("m2")
    };
    match quorum::check(&client, me, &[busy]).await.unwrap() {
        Verdict::Unsafe(why) => assert!(why.contains("holds the reboot lock"), "{why}"),
        v => panic!("{v:?}"),
    }
    // ...nor while a member is down.
    tokio::task::block_in_place(|| cluster.kill(2));
    match quorum::check(&client, me, &[]).await.unwrap() {
        Verdict::Unsafe(why) => assert!(why.contains("m2"), "{why}"),
        v => panic!("{v:?}"),
    }
    // A member that is not a voter could always go.
    assert!(matches!(
        quorum::check(&client, 0xdead, &[]).await.unwrap(),
        Verdict::Safe(_)
    ));
}

/// Publishing refuses what machines would refuse, and the group keeps its
/// release: tampered or truncated files, a manifest naming another key, a
/// release signed by a key the group does not take, an unasked downgrade,
/// a version republished with other contents, and a caller without the
/// admin token.
#[tokio::test(flavor = "multi_thread")]
async fn publishing_refuses_bad_releases_and_the_group_keeps_its_release() {
    let dir = tempfile::tempdir().unwrap();
    let pxe = PxeServer::start(dir.path()).await;
    let target = pxe.target();
    let refused = |r: Result<_, herd_pxe::update::client::ClientError>, what: &str, why: &str| {
        let e = r.expect_err(what).to_string();
        assert!(e.contains(why), "{what}: {e}");
    };

    // Tampered after the build: the manifest's hash no longer matches.
    let tampered = release(dir.path(), "0.2.0", &key(1));
    let p = tampered.join("update.payload");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&p, &bytes).unwrap();
    refused(
        target.publish(&tampered, "stable", false).await,
        "tampered",
        "was modified or truncated",
    );
    // Truncated.
    let len = bytes.len() as u64;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    refused(
        target.publish(&tampered, "stable", false).await,
        "truncated",
        "was modified or truncated",
    );
    // Signed by key 9, the manifest claiming key 1's.
    let foreign = release(&dir.path().join("f"), "0.2.0", &key(9));
    herd_tests::update::write_manifest(
        &foreign,
        "0.2.0",
        &herd_tests::update::hex(key(1).verifying_key().as_bytes()),
    );
    refused(
        target.publish(&foreign, "stable", false).await,
        "foreign signature",
        "does not verify",
    );

    let good = release(&dir.path().join("g"), "0.2.0", &key(1));
    target.publish(&good, "stable", false).await.unwrap();
    // Without the token, or with another, nothing changes.
    let newer = release(&dir.path().join("n"), "0.3.0", &key(1));
    refused(
        pxe.client(None).publish(&newer, "stable", false).await,
        "anonymous",
        "401 Unauthorized",
    );
    refused(
        pxe.client(Some("guess"))
            .publish(&newer, "stable", false)
            .await,
        "a wrong token",
        "not this server's",
    );
    // The token is never sent in the clear: the client refuses plain HTTP...
    let plain = herd_pxe::update::client::Target::server(&pxe.url, Some(pxe.token.clone()), None);
    let e = plain.err().expect("plain HTTP with a token").to_string();
    assert!(e.contains("plain HTTP") && e.contains("--cacert"), "{e}");
    // ...and the plain listener refuses the admin routes whatever it is sent,
    // pointing at the admin listener.
    let resume = format!("{}/v1/update/groups/stable/resume", pxe.url);
    let e = herd_http::Client::new()
        .call(herd_http::Request::post(&resume).bearer(&pxe.token))
        .await
        .expect_err("an admin route on the plain listener")
        .to_string();
    assert!(e.contains("403") && e.contains(&pxe.admin_url), "{e}");
    // A server whose certificate is not from the pinned CA (a man in the
    // middle) is refused before the token is sent.
    let elsewhere = tempfile::tempdir().unwrap();
    let other =
        herd_pxe::http::admin_tls::load_or_create(elsewhere.path(), Ipv4Addr::LOCALHOST, &[])
            .unwrap();
    let other_ca = std::fs::read_to_string(&other.ca_file).unwrap();
    let e = herd_pxe::update::client::Target::server(
        &pxe.admin_url,
        Some(pxe.token.clone()),
        Some(&other_ca),
    )
    .unwrap()
    .publish(&newer, "stable", false)
    .await
    .expect_err("another CA")
    .to_string();
    assert!(e.contains("TLS") && e.contains("certificate"), "{e}");
    // A consistent release by another key: machines would refuse it.
    let other_key = release(&dir.path().join("k"), "0.3.0", &key(9));
    refused(
        target.publish(&other_key, "stable", false).await,
        "key change",
        "signed by",
    );
    let older = release(&dir.path().join("o"), "0.1.5", &key(1));
    refused(
        target.publish(&older, "stable", false).await,
        "downgrade",
        "--allow-downgrade",
    );
    let again = release(&dir.path().join("a"), "0.2.0", &key(1));
    std::fs::write(again.join("inputs/usr.img"), b"other").unwrap();
    let refs = [
        ("vmlinuz", again.join("inputs/vmlinuz")),
        ("initrd", again.join("inputs/initrd")),
        ("usr.img", again.join("inputs/usr.img")),
    ];
    let refs: Vec<(&str, &std::path::Path)> = refs.iter().map(|(n, p)| (*n, p.as_path())).collect();
    herd_image::payload::write(
        "0.2.0",
        &refs,
        &key(1),
        &again.join("update.payload"),
        &again.join("update.payload.sig"),
    )
    .unwrap();
    herd_tests::update::write_manifest(
        &again,
        "0.2.0",
        &herd_tests::update::hex(key(1).verifying_key().as_bytes()),
    );
    refused(
        target.publish(&again, "stable", false).await,
        "republished",
        "already published",
    );

    let status = target.status().await.unwrap();
    let group = status.groups.iter().find(|g| g.id == "stable").unwrap();
    assert_eq!(
        group.release.as_ref().map(ToString::to_string).as_deref(),
        Some("0.2.0")
    );
}

async fn put_json(client: &Client, key: String, value: serde_json::Value) {
    client
        .kv()
        .put(PutRequest {
            key: key.into_bytes(),
            value: serde_json::to_vec(&value).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// The checks the agent adds to the gate from the other roles, judging
/// what those roles keep in a real store: this machine's units (placed to
/// be launched, as the runner reports them) and its Node and pods.
#[tokio::test(flavor = "multi_thread")]
async fn the_units_and_node_checks_judge_what_the_roles_keep_in_the_store() {
    use herd_pods::api::{ApiObject, Node, Pod};
    use herd_units::health::machine_units;
    use herd_units::records::{PLACEMENTS, REPORTS};

    let cluster = tokio::task::block_in_place(|| cluster(1));
    let client = cluster.client(&cluster.members[0].client.to_string());

    // Nothing placed here: nothing to wait for.
    assert_eq!(machine_units(&client, MACHINE).await, Ok(()));
    let name = format!("{MACHINE}/web.service");
    put_json(
        &client,
        PLACEMENTS.key(&name),
        serde_json::json!({"unit": "web.service", "machine": MACHINE, "text": "[Service]\nExecStart=/bin/web\n", "target": "launched", "restarts": 0}),
    )
    .await;
    // Another machine's unit does not count.
    put_json(
        &client,
        PLACEMENTS.key("525400770002/db.service"),
        serde_json::json!({"unit": "db.service", "machine": "525400770002", "text": "", "target": "launched", "restarts": 0}),
    )
    .await;
    let e = machine_units(&client, MACHINE).await.unwrap_err();
    assert!(e.contains("web.service: no report"), "{e}");
    assert!(!e.contains("db.service"), "{e}");
    let report = |active: &str, sub: &str| serde_json::json!({"unit": "web.service", "machine": MACHINE, "load": "loaded", "active": active, "sub": sub, "since": "", "message": "/bin/web: not found"});
    put_json(&client, REPORTS.key(&name), report("failed", "failed")).await;
    let e = machine_units(&client, MACHINE).await.unwrap_err();
    assert!(
        e.contains("web.service: loaded failed failed: /bin/web: not found"),
        "{e}"
    );
    put_json(&client, REPORTS.key(&name), report("active", "running")).await;
    assert_eq!(machine_units(&client, MACHINE).await, Ok(()));

    let node_health = || herd_pods::node::health::node_and_pods(&client, "m1");
    assert!(node_health().await.unwrap_err().contains("not registered"));
    put_json(
        &client,
        Node::INFO.key("", "m1"),
        serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "m1", "uid": "u1"},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}),
    )
    .await;
    assert_eq!(node_health().await, Ok(()));
    put_json(
        &client,
        Pod::INFO.key("default", "web-1"),
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "default", "uid": "u2"},
            "spec": {"nodeName": "m1", "containers": [{"name": "web", "image": "web:1"}]},
            "status": {"phase": "Pending", "reason": "ContainerCreating"}}),
    )
    .await;
    let e = node_health().await.unwrap_err();
    assert!(
        e.contains("default/web-1 (Pending: ContainerCreating)"),
        "{e}"
    );
}
