//! Subnet leases against a real herd store (one member on loopback), no
//! kernel involved: machines racing for a small network each get a
//! distinct subnet by compare-and-swap, the ones left over wait and say
//! so instead of failing, and a freed subnet goes to a waiting machine; a
//! subnet remembered for a machine is reclaimed only once that machine is
//! gone from `/herd/machines/`, and only when nothing else is free.

use std::time::Duration;

use herd_client::Client;
use herd_client::keys::MACHINES;
use herd_client::proto::etcdserverpb::{DeleteRangeRequest, PutRequest};
use herd_net::cidr::Ipv4Net;
use herd_net::config::NetworkConfig;
use herd_net::lease::Owner;
use herd_net::registry;
use herd_net::role::acquire;
use herd_tests::store::{Cluster, Server};
use tokio_util::sync::CancellationToken;

fn small() -> NetworkConfig {
    // Three subnets: 10.9.0.64/26, .128/26, .192/26.
    serde_json::from_str(r#"{"Network":"10.9.0.0/24","SubnetLen":26}"#).unwrap()
}

async fn put(client: &Client, key: &str, value: &str) {
    client
        .kv()
        .put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[test]
fn racing_machines_get_distinct_subnets_and_the_rest_wait_for_one() {
    let cluster = Cluster::start(Server::Herd, 1);
    let rt = cluster.client_runtime();
    let (endpoint, credentials) = (cluster.members[0].client.to_string(), cluster.credentials());
    rt.block_on(rt.spawn(async move {
        let client = Client::connect_with(&[endpoint], &credentials)
            .await
            .unwrap();
        let config = small();
        registry::set_config(&client, &config).await.unwrap();
        let cancel = CancellationToken::new();
        let racers: Vec<_> = (0..5)
            .map(|i| {
                let (client, config, cancel) = (client.clone(), config.clone(), cancel.clone());
                tokio::spawn(async move {
                    acquire(&client, &config, &format!("m{i}"), None, &cancel)
                        .await
                        .map(|s| (i, s))
                })
            })
            .collect();
        // Three win, one subnet each; two keep waiting.
        let mut won = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while won.len() < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {won:?} got a subnet"
            );
            let leases = registry::leases(&client).await.unwrap();
            won = leases
                .iter()
                .map(|o| (o.name.clone(), o.value.machine_id.clone()))
                .collect();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            registry::leases(&client).await.unwrap().len(),
            3,
            "the network holds three"
        );
        let mut subnets: Vec<&String> = won.iter().map(|(s, _)| s).collect();
        subnets.sort();
        subnets.dedup();
        assert_eq!(subnets.len(), 3, "{won:?}");
        let waiting = racers.iter().filter(|r| !r.is_finished()).count();
        assert_eq!(waiting, 2, "two machines wait for a subnet");

        // One machine leaves for good: a waiting machine gets its subnet.
        let freed = Ipv4Net::from_key_name(&won[0].0).unwrap();
        registry::release(&client, freed).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while racers.iter().filter(|r| !r.is_finished()).count() > 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nobody took the freed subnet"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cancel.cancel();
        let mut got = Vec::new();
        for r in racers {
            if let Some((i, s)) = r.await.unwrap() {
                got.push((i, s));
            }
        }
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got.iter().any(|(_, s)| *s == freed), "{got:?}");
    }))
    .unwrap();
}

#[test]
fn a_remembered_subnet_is_reclaimed_only_from_a_gone_machine() {
    let cluster = Cluster::start(Server::Herd, 1);
    let rt = cluster.client_runtime();
    let (endpoint, credentials) = (cluster.members[0].client.to_string(), cluster.credentials());
    rt.block_on(rt.spawn(async move {
        let client = Client::connect_with(&[endpoint], &credentials)
            .await
            .unwrap();
        let config = small();
        registry::set_config(&client, &config).await.unwrap();
        let cancel = CancellationToken::new();
        // a, b, c hold the three subnets; a's lease then expires (deleted),
        // while a is still registered.
        for m in ["a", "b", "c"] {
            acquire(&client, &config, m, None, &cancel).await.unwrap();
        }
        let held = registry::holdings(&client).await.unwrap();
        let a_subnet = held.owners["a"].0;
        client
            .kv()
            .delete_range(DeleteRangeRequest {
                key: herd_net::lease::subnet_key(a_subnet).into_bytes(),
                ..Default::default()
            })
            .await
            .unwrap();
        put(&client, &MACHINES.key("a"), "{}").await;
        // d finds nothing it may take while a is registered.
        let d = tokio::spawn({
            let (client, config, cancel) = (client.clone(), config.clone(), cancel.clone());
            async move { acquire(&client, &config, "d", None, &cancel).await }
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            !d.is_finished(),
            "d took the subnet of registered machine a"
        );
        // a is gone: d reclaims its subnet, and a's record of it goes.
        client
            .kv()
            .delete_range(DeleteRangeRequest {
                key: MACHINES.key("a").into_bytes(),
                ..Default::default()
            })
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(30), d)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Some(a_subnet));
        let owners = herd_client::kit::list::<Owner>(&client, &herd_client::kit::Scope::All)
            .await
            .unwrap()
            .0;
        assert!(owners.iter().all(|o| o.name != "a"), "{owners:?}");
        assert!(
            owners
                .iter()
                .any(|o| o.name == "d" && o.value.subnet == a_subnet)
        );
        // a, back, gets none of the others' subnets (the network is full).
        let a = tokio::spawn({
            let (client, config, cancel) = (client.clone(), config.clone(), cancel.clone());
            async move { acquire(&client, &config, "a", Some(a_subnet), &cancel).await }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!a.is_finished());
        cancel.cancel();
        assert_eq!(a.await.unwrap(), None);
    }))
    .unwrap();
}
