use super::*;
use crate::update::policy::OfficeHours;
use crate::update::state::{FileInfo, Release};
use herd_omaha::Request;

const BASE: &str = "http://10.77.0.1:8080";

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

fn release(version: &str) -> Release {
    Release {
        version: v(version),
        payload: FileInfo {
            size: 100,
            sha256: "11".repeat(32),
        },
        signature: FileInfo {
            size: 64,
            sha256: "22".repeat(32),
        },
        public_key: "33".repeat(32),
        kernel: "6.1".into(),
        published_at: 0,
    }
}

/// A group `stable` with `version` published.
fn state(version: &str) -> UpdatesState {
    let mut s = UpdatesState::default();
    s.releases.insert(version.into(), release(version));
    let mut g = Group::new("stable");
    g.release = Some(v(version));
    s.groups.insert("stable".into(), g);
    s
}

fn app(machine: &str, version: &str, check: bool, events: Vec<Event>) -> App {
    App {
        app_id: herd_omaha::APP_ID.into(),
        version: v(version),
        track: "stable".into(),
        boot_id: format!("boot-{machine}-{version}"),
        machine_id: machine.into(),
        ping: true,
        update_check: check,
        events,
    }
}

fn check(s: &mut UpdatesState, machine: &str, version: &str, now: u64) -> Option<Version> {
    let (answer, _) = handle_app(s, &app(machine, version, true, vec![]), now, BASE);
    match answer.update_check {
        Some(UpdateCheck::Update(u)) => Some(u.version),
        Some(UpdateCheck::NoUpdate) => None,
        None => panic!("an update check is answered"),
    }
}

fn event(kind: EventType, result: EventResult, next: &str) -> Event {
    Event {
        next_version: Some(v(next)),
        ..Event::new(kind, result)
    }
}

fn report(s: &mut UpdatesState, machine: &str, version: &str, e: Event, now: u64) {
    handle_app(s, &app(machine, version, false, vec![e]), now, BASE);
}

/// Machine `m` goes from 0.1.0 to `to`, event by event.
fn update(s: &mut UpdatesState, m: &str, to: &str, now: u64) {
    report(
        s,
        m,
        "0.1.0",
        event(EventType::DownloadStarted, EventResult::Success, to),
        now,
    );
    report(
        s,
        m,
        "0.1.0",
        event(EventType::DownloadFinished, EventResult::Success, to),
        now,
    );
    report(
        s,
        m,
        "0.1.0",
        event(EventType::UpdateComplete, EventResult::Success, to),
        now,
    );
    assert_eq!(s.machines[m].state, UpdateState::Rebooting);
    check_in(s, m, to, now);
    assert_eq!(s.machines[m].state, UpdateState::Verifying);
    report(
        s,
        m,
        to,
        event(EventType::UpdateComplete, EventResult::SuccessReboot, to),
        now,
    );
    assert_eq!(s.machines[m].state, UpdateState::Done);
}

fn check_in(s: &mut UpdatesState, m: &str, version: &str, now: u64) {
    handle_app(s, &app(m, version, false, vec![]), now, BASE);
}

#[test]
fn an_offer_names_the_payload_and_its_signature() {
    let mut s = state("0.2.0");
    let (answer, changed) = handle_app(&mut s, &app("m1", "0.1.0", true, vec![]), 10, BASE);
    assert!(changed);
    let Some(UpdateCheck::Update(u)) = answer.update_check else {
        panic!("{answer:?}")
    };
    assert_eq!(u.urls, vec![format!("{BASE}/v1/update/releases/0.2.0/")]);
    assert_eq!(u.packages[0].name, PAYLOAD);
    assert_eq!(u.packages[1].name, SIGNATURE);
    assert_eq!(u.packages[0].size, 100);
    assert_eq!(u.postinstall_sha256, Some([0x11; 32]));
    // And it goes over the wire intact.
    let xml = herd_omaha::Response {
        server: "herd".into(),
        apps: vec![AppResponse {
            update_check: Some(UpdateCheck::Update(u.clone())),
            ..handle_app(&mut s, &app("m1", "0.1.0", false, vec![]), 11, BASE).0
        }],
    }
    .to_xml();
    let back = herd_omaha::Response::parse(xml.as_bytes()).unwrap();
    assert_eq!(back.apps[0].update_check, Some(UpdateCheck::Update(u)));
}

#[test]
fn canaries_go_first_then_everyone() {
    let mut s = state("0.2.0");
    assert_eq!(check(&mut s, "m1", "0.1.0", 0), Some(v("0.2.0")));
    assert_eq!(check(&mut s, "m2", "0.1.0", 1), None, "m1 is the canary");
    assert_eq!(
        decide(&s, "m2", 1),
        Err(NoUpdate::WaitingForCanaries { done: 0, canary: 1 })
    );
    assert_eq!(
        check(&mut s, "m1", "0.1.0", 2),
        Some(v("0.2.0")),
        "offered again midway"
    );
    update(&mut s, "m1", "0.2.0", 3);
    assert_eq!(check(&mut s, "m2", "0.1.0", 4), Some(v("0.2.0")));
    assert_eq!(check(&mut s, "m3", "0.1.0", 4), Some(v("0.2.0")));
    assert_eq!(check(&mut s, "m1", "0.2.0", 5), None, "up to date");
    let p = progress(&s, &s.groups["stable"]);
    assert_eq!((p.machines, p.updated, p.in_flight), (3, 1, 2));
}

#[test]
fn a_failed_canary_halts_the_group_in_safe_mode_until_resumed() {
    let mut s = state("0.3.0");
    assert_eq!(check(&mut s, "m1", "0.1.0", 0), Some(v("0.3.0")));
    let failure = Event {
        next_version: Some(v("0.3.0")),
        ..Event::failure(Cause::HealthGate)
    };
    report(&mut s, "m1", "0.1.0", failure, 5);
    assert_eq!(s.machines["m1"].state, UpdateState::RolledBack);
    let halt = s.groups["stable"].halted.clone().expect("halted");
    assert_eq!(
        (halt.machine.as_str(), halt.version.as_str()),
        ("m1", "0.3.0")
    );
    assert!(halt.reason().contains("health gate"), "{}", halt.reason());
    assert_eq!(check(&mut s, "m2", "0.1.0", 6), None);
    assert_eq!(decide(&s, "m2", 6), Err(NoUpdate::Halted));
    // Resumed: the others go on; the machine that failed 0.3.0 never gets it again.
    s.groups.get_mut("stable").unwrap().halted = None;
    assert_eq!(decide(&s, "m1", 7), Err(NoUpdate::FailedBefore));
    assert_eq!(check(&mut s, "m2", "0.1.0", 7), Some(v("0.3.0")));
    let p = progress(&s, &s.groups["stable"]);
    assert_eq!((p.failed, p.in_flight), (1, 1));
}

#[test]
fn without_safe_mode_a_failure_frees_the_canary_slot() {
    let mut s = state("0.3.0");
    s.groups.get_mut("stable").unwrap().policy.safe_mode = false;
    assert_eq!(check(&mut s, "m1", "0.1.0", 0), Some(v("0.3.0")));
    let failure = Event {
        next_version: Some(v("0.3.0")),
        ..Event::failure(Cause::BadSignature)
    };
    report(&mut s, "m1", "0.1.0", failure, 1);
    assert_eq!(s.machines["m1"].state, UpdateState::Failed);
    assert!(s.groups["stable"].halted.is_none());
    assert_eq!(
        check(&mut s, "m2", "0.1.0", 2),
        Some(v("0.3.0")),
        "m2 is the next canary"
    );
}

#[test]
fn an_update_that_takes_too_long_fails_and_halts() {
    let mut s = state("0.2.0");
    assert_eq!(check(&mut s, "m1", "0.1.0", 0), Some(v("0.2.0")));
    let timeout = s.groups["stable"].policy.update_timeout.as_secs();
    check_in(&mut s, "m2", "0.1.0", timeout);
    assert_eq!(s.machines["m1"].state, UpdateState::Downloading, "not yet");
    check_in(&mut s, "m2", "0.1.0", timeout + 1);
    assert_eq!(s.machines["m1"].state, UpdateState::Failed);
    assert_eq!(
        s.machines["m1"].last_event().unwrap().cause,
        Some(Cause::Timeout)
    );
    assert!(s.groups["stable"].halted.is_some());
}

#[test]
fn rate_office_hours_switch_and_downgrades_are_obeyed() {
    let mut s = state("0.2.0");
    {
        let p = &mut s.groups.get_mut("stable").unwrap().policy;
        p.canary = 0;
        p.max_updates_per_period = 1;
    }
    assert_eq!(check(&mut s, "m1", "0.1.0", 0), Some(v("0.2.0")));
    assert_eq!(check(&mut s, "m2", "0.1.0", 10), None);
    assert_eq!(decide(&s, "m2", 10), Err(NoUpdate::RateLimited));
    assert_eq!(
        check(&mut s, "m2", "0.1.0", 3600),
        Some(v("0.2.0")),
        "a new period"
    );

    let mut s = state("0.2.0");
    s.groups.get_mut("stable").unwrap().policy.office_hours =
        Some("09:00-17:00".parse::<OfficeHours>().unwrap());
    assert_eq!(check(&mut s, "m1", "0.1.0", 8 * 3600), None);
    assert_eq!(check(&mut s, "m1", "0.1.0", 10 * 3600), Some(v("0.2.0")));

    let mut s = state("0.2.0");
    s.groups.get_mut("stable").unwrap().policy.updates_enabled = false;
    assert_eq!(check(&mut s, "m1", "0.1.0", 0), None);

    let mut s = state("0.2.0");
    assert_eq!(check(&mut s, "m1", "0.3.0", 0), None, "no downgrade");
    s.groups.get_mut("stable").unwrap().policy.allow_downgrade = true;
    assert_eq!(check(&mut s, "m1", "0.3.0", 0), Some(v("0.2.0")));
}

#[test]
fn other_apps_and_unknown_groups_get_nothing() {
    let mut s = state("0.2.0");
    let mut other = app("m1", "0.1.0", true, vec![]);
    other.app_id = "e96281a6-d1af-4bde-9a0a-97b76e56dc57".into();
    let (answer, changed) = handle_app(&mut s, &other, 0, BASE);
    assert_eq!(answer.status, AppStatus::UnknownApplication);
    assert!(!changed && s.machines.is_empty());
    let mut lost = app("m1", "0.1.0", true, vec![]);
    lost.track = "beta".into();
    let (answer, _) = handle_app(&mut s, &lost, 0, BASE);
    assert_eq!(answer.update_check, Some(UpdateCheck::NoUpdate));
}

#[test]
fn update_engines_request_is_answered() {
    // The shape update_engine sends (flatcar/ue-rs test data), with herd's
    // app id and group: it gets an offer like herd's own client.
    let xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<request protocol="3.0" version="update_engine-0.4.10" updaterversion="update_engine-0.4.10" installsource="scheduler" ismachine="1">
  <os version="Chateau" platform="CoreOS" sp="2512.2.0_x86_64"></os>
  <app appid="{}" version="0.1.0" track="stable" bootid="{{965fb4c5-ad3e-4eb7-a4c2-ca0c0e31ec84}}" oem="ami" machineid="abce671d61774703ac7be60715220bfe" lang="en-US" board="amd64-usr">
    <ping active="1"></ping>
    <updatecheck></updatecheck>
    <event eventtype="3" eventresult="2" previousversion="0.0.0.0"></event>
  </app>
</request>"#,
        herd_omaha::APP_ID
    );
    let req = Request::parse(xml.as_bytes()).unwrap();
    let mut s = state("0.2.0");
    let (answer, _) = handle_app(&mut s, &req.apps[0], 0, BASE);
    assert_eq!(answer.events, 1);
    assert!(matches!(answer.update_check, Some(UpdateCheck::Update(_))));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Check(usize),
        Advance(usize),
        Fail(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..5usize).prop_map(Step::Check),
            (0..5usize).prop_map(Step::Advance),
            (0..5usize).prop_map(Step::Fail),
        ]
    }

    proptest! {
        /// Whatever the order of checks, progress and failures: until
        /// `canary` machines are done, no more than `canary` machines are
        /// ever updating; after a failure in safe mode, nobody new starts.
        #[test]
        fn canaries_bound_the_blast_radius(canary in 1u32..3, steps in proptest::collection::vec(step(), 1..60)) {
            let mut s = state("0.2.0");
            s.groups.get_mut("stable").unwrap().policy.canary = canary;
            let mut failed_at: Option<usize> = None;
            for (i, st) in steps.iter().enumerate() {
                let now = i as u64;
                match st {
                    Step::Check(m) => {
                        let id = format!("m{m}");
                        let version = s.machines.get(&id).map(|x| x.version.to_string()).unwrap_or_else(|| "0.1.0".into());
                        let before: Vec<String> = s.machines.values().filter(|x| x.state.in_flight()).map(|x| x.machine_id.clone()).collect();
                        let got = check(&mut s, &id, &version, now);
                        if got.is_some() && failed_at.is_some() {
                            prop_assert!(before.contains(&id), "{id} started after a failure in safe mode");
                        }
                    }
                    Step::Advance(m) => {
                        let id = format!("m{m}");
                        if s.machines.get(&id).is_some_and(|x| x.state.in_flight()) {
                            update(&mut s, &id, "0.2.0", now);
                        }
                    }
                    Step::Fail(m) => {
                        let id = format!("m{m}");
                        if s.machines.get(&id).is_some_and(|x| x.state.in_flight()) {
                            let e = Event { next_version: Some(v("0.2.0")), ..Event::failure(Cause::HealthGate) };
                            report(&mut s, &id, "0.1.0", e, now);
                            failed_at.get_or_insert(i);
                        }
                    }
                }
                let done = s.machines.values().filter(|x| x.state == UpdateState::Done).count() as u32;
                let flying = s.machines.values().filter(|x| x.state.in_flight()).count() as u32;
                if done < canary {
                    prop_assert!(flying <= canary - done, "{flying} updating with {done}/{canary} canaries done");
                }
            }
        }
    }
}
