//! The service proxy end to end: three real agents (pods role, so the
//! proxy; cluster network over host-gw) in network namespaces, pods that
//! are namespaces on each machine's `herd0` answering TCP with their
//! name, Services and Endpoints written through the API.
//!
//! A cluster IP reaches only ready endpoints and follows scaling up and
//! down; a service without ready endpoints refuses at once; ClientIP
//! affinity sticks; a NodePort answers on a machine's address from
//! outside; a route to the service range via a machine reaches services
//! from outside; rules deleted by hand come back; an Endpoints object the
//! proxy cannot render is reported (event) and the other services keep
//! working; deleting services removes their rules and nothing is left.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use herd_tests::proxy::{Answer, Client, ProxyLab, ServerPod, names};
use herd_tests::wait;
use serde_json::{Value, json};

const PORT: u16 = 8080;

fn service(lab: &ProxyLab, name: &str, extra: Value) -> (Ipv4Addr, Value) {
    let mut spec = json!({"ports": [{"port": 80, "targetPort": PORT, "protocol": "TCP"}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let created = lab.create(
        "/api/v1/namespaces/default/services",
        &json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}),
    );
    let ip = created["spec"]["clusterIP"]
        .as_str()
        .expect("an allocated cluster IP")
        .parse()
        .expect("an IPv4 cluster IP");
    (ip, created)
}

/// Waits until the answers of `n` connections are exactly `want`.
fn wait_answers(client: &Client, to: SocketAddr, want: &[&str], what: &str) {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    wait::until(
        what,
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let got = client.ask_n(to, 24);
            let ok = got.iter().all(|a| matches!(a, Answer::From(_))) && names(&got) == want;
            ok.then_some(())
        },
    );
}

#[test]
fn pods_proxy_vips_node_ports_affinity_and_routes_from_outside() {
    let lab = ProxyLab::start();
    let net = lab.cluster.net.as_ref().expect("a namespace lab");
    // Pods: a0 and a1 on machine 0, b on machine 1, c on machine 2; the
    // client pod on machine 0.
    let servers = [
        ServerPod::start(lab.cluster.member_ns(0), lab.envs[0], 10, "a0", PORT),
        ServerPod::start(lab.cluster.member_ns(0), lab.envs[0], 11, "a1", PORT),
        ServerPod::start(lab.cluster.member_ns(1), lab.envs[1], 10, "b", PORT),
        ServerPod::start(lab.cluster.member_ns(2), lab.envs[2], 10, "c", PORT),
    ];
    let ip = |name: &str| servers.iter().find(|s| s.name == name).unwrap().pod.addr;
    let client_pod = herd_tests::net::Pod::plug(lab.cluster.member_ns(0), lab.envs[0], 20);
    for s in &servers {
        client_pod.reaches(s.pod.addr, Duration::from_secs(30));
    }
    let from_pod = Client::in_ns(&client_pod.ns);

    // A VIP reaches only the ready endpoints: a0 (same bridge as the
    // client), b (another machine); c is not ready.
    let (vip, _) = service(&lab, "web", json!({}));
    let web = SocketAddr::new(vip.into(), 80);
    lab.set_endpoints("web", &[ip("a0"), ip("b")], &[ip("c")], PORT);
    wait_answers(
        &from_pod,
        web,
        &["a0", "b"],
        "the VIP to reach a0 and b only",
    );

    // Scaling up: c becomes ready; down: a0 goes.
    lab.set_endpoints("web", &[ip("a0"), ip("b"), ip("c")], &[], PORT);
    wait_answers(&from_pod, web, &["a0", "b", "c"], "the VIP to reach c too");
    lab.set_endpoints("web", &[ip("b"), ip("c")], &[ip("a0")], PORT);
    wait_answers(&from_pod, web, &["b", "c"], "the VIP to leave a0 out");

    // Without ready endpoints the VIP refuses at once (not a black hole).
    lab.set_endpoints("web", &[], &[ip("b")], PORT);
    wait::until(
        "the VIP to refuse",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || (from_pod.ask(web) == Answer::Refused).then_some(()),
    );
    lab.set_endpoints("web", &[ip("a0"), ip("a1"), ip("b"), ip("c")], &[], PORT);
    wait_answers(&from_pod, web, &["a0", "a1", "b", "c"], "four endpoints");

    // ClientIP affinity: one client keeps reaching one pod.
    let (sticky_vip, sticky) = service(
        &lab,
        "sticky",
        json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}}),
    );
    assert_eq!(
        sticky["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"], 600,
        "{sticky}"
    );
    let sticky = SocketAddr::new(sticky_vip.into(), 80);
    lab.set_endpoints("sticky", &[ip("a0"), ip("a1"), ip("b"), ip("c")], &[], PORT);
    wait::until(
        "the sticky VIP to answer",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || matches!(from_pod.ask(sticky), Answer::From(_)).then_some(()),
    );
    let got = names(&from_pod.ask_n(sticky, 30));
    assert_eq!(got.len(), 1, "ClientIP affinity sticks to one pod: {got:?}");
    // ... while the same client spreads over the service without affinity.
    assert!(names(&from_pod.ask_n(web, 30)).len() > 1);

    // NodePort: from the client namespace (outside the cluster network)
    // to machine 1's address; the answer may come from any machine's pod.
    let (_, np) = service(
        &lab,
        "nodeport",
        json!({"type": "NodePort", "ports": [{"port": 80, "targetPort": PORT, "nodePort": 30080}]}),
    );
    assert_eq!(np["spec"]["ports"][0]["nodePort"], 30080, "{np}");
    lab.set_endpoints("nodeport", &[ip("a0"), ip("c")], &[], PORT);
    let outside = Client::in_ns(&net.client);
    let machine1 = SocketAddr::new(herd_tests::store::Topology::client_ip(1), 30080);
    wait_answers(
        &outside,
        machine1,
        &["a0", "c"],
        "the node port on machine 1",
    );

    // The seed's trick: a route to the service range via a machine.
    net.client.ip(&[
        "route",
        "add",
        "10.0.0.0/16",
        "via",
        &herd_tests::store::Topology::client_ip(2).to_string(),
    ]);
    wait_answers(
        &outside,
        web,
        &["a0", "a1", "b", "c"],
        "the VIP from outside via machine 2",
    );

    // Rules deleted behind the proxy's back come back.
    let m0 = lab.cluster.member_ns(0);
    let out = m0
        .command("nft")
        .args(["delete", "table", "ip", "herd-proxy"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_answers(
        &from_pod,
        web,
        &["a0", "a1", "b", "c"],
        "the deleted table to come back",
    );

    // An Endpoints object the proxy cannot render (an IPv6 address in an
    // IPv4 service) is reported and skipped; the other services keep
    // working, and the broken one refuses rather than black-holes.
    let (broken_vip, _) = service(&lab, "broken", json!({}));
    let body = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "broken", "namespace": "default"},
        "subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": PORT}]}]});
    lab.create("/api/v1/namespaces/default/endpoints", &body);
    let event = wait::until(
        "an event about the broken endpoints",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            let list = lab.get("/api/v1/namespaces/default/events").ok()?;
            list["items"]
                .as_array()?
                .iter()
                .find(|e| {
                    e["involvedObject"]["name"] == "broken" && e["reason"] == "InvalidEndpoints"
                })
                .cloned()
        },
    );
    let message = event["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("subsets[0].addresses[0].ip") && message.contains("fd00::1"),
        "{event}"
    );
    wait::until(
        "the broken service to refuse",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || (from_pod.ask(SocketAddr::new(broken_vip.into(), 80)) == Answer::Refused).then_some(()),
    );
    wait_answers(
        &from_pod,
        web,
        &["a0", "a1", "b", "c"],
        "web unaffected by the broken one",
    );

    // Deleting services removes their rules on every machine.
    for name in ["web", "sticky", "nodeport", "broken"] {
        let (status, body) = lab.send(
            herd_http::Method::DELETE,
            &format!("/api/v1/namespaces/default/services/{name}"),
            None,
        );
        assert!(
            (200..300).contains(&status),
            "delete {name}: {status} {body}"
        );
    }
    for i in 0..3 {
        wait::until(
            &format!("machine {i}'s proxy table to hold no service"),
            Duration::from_secs(30),
            Duration::from_millis(300),
            || {
                let t = lab.table(i);
                let empty = t.contains("table ip herd-proxy")
                    && !t.contains("svc-")
                    && !t.contains("ep-")
                    && !t.contains("aff")
                    && !t.contains(&vip.to_string())
                    && !t.contains("30080");
                empty.then_some(())
            },
        );
    }
    assert_ne!(
        from_pod.ask(web),
        Answer::From("a0".into()),
        "a deleted service's VIP no longer answers"
    );
}
