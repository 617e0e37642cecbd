//! Unit tests of `cloud_config`, kept apart so the module reads as code.

use super::*;

const M2: &str = "hostname: m2\nherd:\n  token: abc123\n  advertise: 10.77.0.12\n  bootstrap: 10.77.0.11\n  peers: [10.77.0.11, 10.77.0.12, 10.77.0.13]\n  roles: [store]\n";

#[test]
fn a_joiner_gets_typed_settings_on_its_own_address() {
    let s = parse(M2).unwrap();
    assert_eq!(s.name, "m2");
    assert_eq!(s.token, "abc123");
    assert_eq!(s.listen_client, "10.77.0.12:2379".parse().unwrap());
    assert_eq!(s.listen_peer, "10.77.0.12:2380".parse().unwrap());
    assert_eq!(
        s.membership,
        Membership::Join {
            peers: vec![
                "10.77.0.11:2380".parse().unwrap(),
                "10.77.0.13:2380".parse().unwrap()
            ]
        }
    );
    assert_eq!(s.roles, vec![Role::Store]);
    assert_eq!(s.install_disk, None);
    assert_eq!(s.network, None);
    assert_eq!(s.agent_api_port, AGENT_API_PORT);
    assert!(s.metadata.is_empty());
    let s = parse(&format!(
        "{M2}  metadata: {{role: db, zone: a}}\n  agent_api_port: 9000\n"
    ))
    .unwrap();
    assert_eq!(s.metadata["role"], "db");
    assert_eq!(s.agent_api_port, 9000);
    assert_eq!(s.update, None);
    assert_eq!(s.kubelet, KubeletSection::default());
}

#[test]
fn the_kubelet_section_is_typed_and_strict() {
    let s = parse(&format!(
        "{M2}  kubelet: {{pod_infra_image: \"10.77.0.1:5000/herd/pause:1\"}}\n"
    ))
    .unwrap();
    assert_eq!(
        s.kubelet.pod_infra_image.as_deref(),
        Some("10.77.0.1:5000/herd/pause:1")
    );
    assert_eq!(s.kubelet.docker_host, None);
    let err = parse(&format!("{M2}  kubelet: {{infra: x}}\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("infra"), "{err}");
}

#[test]
fn a_network_block_is_parsed_strictly() {
    let yaml = format!(
        "{M2}  network:\n    network: 10.250.0.0/16\n    backend: vxlan\n    cluster_iface: eth0\n"
    );
    let n = parse(&yaml).unwrap().network.unwrap();
    assert_eq!(n.config.network.to_string(), "10.250.0.0/16");
    assert_eq!(
        n.config.backend,
        herd_net::config::Backend::Vxlan { vni: 1, port: 8472 }
    );
    assert_eq!(n.cluster_iface.as_deref(), Some("eth0"));
    let n = parse(&format!("{M2}  network: {{}}\n"))
        .unwrap()
        .network
        .unwrap();
    assert_eq!(n.config, herd_net::config::NetworkConfig::default());
    let e = parse(&format!("{M2}  network:\n    netwrok: 10.250.0.0/16\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("herd.network") && e.contains("netwrok"), "{e}");
    let e = parse(&format!("{M2}  network:\n    network: 10.250.0.0/24\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("herd.network") && e.contains("SubnetLen 24 does not fit"),
        "{e}"
    );
    let e = parse(&format!("{M2}  network:\n    backend: udp\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("herd.network.backend"), "{e}");
}

#[test]
fn the_update_section_is_typed_and_checked() {
    let yaml = format!("{M2}  update:\n    server: http://10.77.0.1:8080\n    interval: 20s\n");
    let s = parse(&yaml).unwrap();
    let u = s.update.unwrap();
    assert_eq!(u.server.as_deref(), Some("http://10.77.0.1:8080"));
    assert_eq!(u.interval, Duration::from_secs(20));
    let e = parse(&format!("{M2}  update:\n    sever: x\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("sever"), "{e}");
    let e = parse(&format!("{M2}  update:\n    boot_tries: 0\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("herd.update") && e.contains("boot_tries"), "{e}");
}

#[test]
fn the_bootstrap_machine_founds_unless_peers_answer() {
    let yaml = M2.replace("advertise: 10.77.0.12", "advertise: 10.77.0.11");
    let s = parse(&yaml).unwrap();
    assert!(matches!(s.membership, Membership::Found { ref peers } if peers.len() == 2));
}

#[test]
fn unknown_fields_and_bad_values_name_their_path() {
    let e = parse(&M2.replace("  roles:", "  rolez:"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("rolez") && e.contains("herd"), "{e}");
    let e = parse(&M2.replace("[store]", "[store, pilot]"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("herd.roles[1]") && e.contains("pilot"), "{e}");
    let e = parse(&M2.replace("10.77.0.12\n", "ten\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("herd.advertise"), "{e}");
    let e = parse("hostname: m2\n").unwrap_err().to_string();
    assert!(e.contains("herd"), "{e}");
    let e = parse(&M2.replace("hostname: m2", "hostname: M_2"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("hostname"), "{e}");
    let e = parse(&M2.replace("abc123", "''")).unwrap_err().to_string();
    assert!(e.contains("herd.token"), "{e}");
    let e = parse(&format!("{M2}  metadata: {{zone: [a]}}\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("herd.metadata"), "{e}");
    let e = parse(&format!("{M2}  metadata: {{zone: 'a b'}}\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("herd.metadata") && e.contains("a b"), "{e}");
    assert!(parse("{{{").is_err());
}

#[tokio::test]
async fn fetch_reads_a_cloud_config_from_an_http_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut request = vec![0; 1024];
        let n = conn.read(&mut request).await.unwrap();
        let request = String::from_utf8_lossy(&request[..n]).into_owned();
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{M2}",
            M2.len()
        );
        conn.write_all(reply.as_bytes()).await.unwrap();
        request
    });
    let url = format!("http://{addr}/cloud-config?mac=52:54:00:77:00:02");
    let settings = load(&url, Duration::from_secs(5)).await.unwrap();
    assert_eq!(settings.name, "m2");
    let request = server.await.unwrap();
    assert!(
        request.starts_with("GET /cloud-config?mac=52:54:00:77:00:02 HTTP/1.1\r\n"),
        "{request}"
    );
}

#[tokio::test]
async fn a_founder_joins_when_a_peer_answers_and_founds_when_none_does() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let alive = listener.local_addr().unwrap();
    // A port nobody listens on: bind, note, drop.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let found = Membership::Found { peers: vec![dead] };
    assert_eq!(
        found.resolve(Duration::from_millis(500)).await,
        Entry::Found
    );
    let found = Membership::Found {
        peers: vec![dead, alive],
    };
    assert_eq!(
        found.resolve(Duration::from_millis(500)).await,
        Entry::Join(alive)
    );
    let join = Membership::Join { peers: vec![alive] };
    assert_eq!(
        join.resolve(Duration::from_millis(500)).await,
        Entry::Join(alive)
    );
}
