use serde_json::json;

use super::schema::POD_SPEC;
use super::*;

/// `kubectl create namespace capx` (kubectl 1.32.4), captured.
const CREATE_NAMESPACE: &str = "6b3873000a0f0a02763112094e616d657370616365121c0a140a046361707812001a0022002a0032003800420012001a020a001a002200";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn kubectl_132_create_namespace_decodes() {
    let v = decode(&unhex(CREATE_NAMESPACE)).unwrap();
    assert_eq!(
        v,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "capx"}, "spec": {}, "status": {}})
    );
}

#[test]
fn labels_owners_and_times_decode() {
    // metadata{name "n", labels{a: b}, creationTimestamp{seconds 1}, ownerReferences[{kind K, controller true}]}
    let meta = [
        &[0x0a, 0x01, b'n'][..],
        &[0x5a, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'b'],
        &[0x42, 0x02, 0x08, 0x01],
        &[0x6a, 0x05, 0x0a, 0x01, b'K', 0x30, 0x01],
    ]
    .concat();
    let mut raw = vec![0x0a, meta.len() as u8];
    raw.extend(&meta);
    let mut body = MAGIC.to_vec();
    body.extend([0x0a, 0x0f, 0x0a, 0x02, b'v', b'1', 0x12, 0x09]);
    body.extend(b"Namespace");
    body.extend([0x12, raw.len() as u8]);
    body.extend(&raw);
    let v = decode(&body).unwrap();
    assert_eq!(
        v["metadata"],
        json!({"name": "n", "labels": {"a": "b"}, "creationTimestamp": "1970-01-01T00:00:01Z",
               "ownerReferences": [{"kind": "K", "controller": true}]})
    );
}

#[test]
fn unknown_fields_and_kinds_are_refused() {
    // The captured namespace with metadata field 99 (a varint) added.
    let mut body = unhex("6b3873000a0f0a02763112094e616d657370616365121f0a170a0463617078");
    body.extend([0x98, 0x06, 0x01]);
    body.extend(unhex("12001a0022002a0032003800420012001a020a00"));
    let e = decode(&body).unwrap_err();
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains("metadata: field number 99"),
        "{}",
        e.message
    );
    let mut pod = MAGIC.to_vec();
    pod.extend([0x0a, 0x09, 0x0a, 0x02, b'v', b'1', 0x12, 0x03]);
    pod.extend(b"Pod");
    let e = decode(&pod).unwrap_err();
    assert_eq!(e.code, 415);
    assert!(decode(b"{}").is_err());
}

/// `kubectl create deployment web --image=nginx --replicas=0 --port=8080`
/// (kubectl 1.32.4), captured.
const CREATE_DEPLOYMENT: &str = "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412b9010a1f0a0377656212001a0022002a003200380042005a0a0a0361707012037765621287010800120c0a0a0a0361707012037765621a6d0a1c0a0012001a0022002a003200380042005a0a0a036170701203776562124d122f0a056e67696e7812056e67696e782a00320b0a00100018903f22002a0042006a007200800100880100900100a201001a00320042004a0052005800600068008201008a01009a0100c2010022020a00280038001a0c0800100018002000280038001a002200";

/// `kubectl create deployment web2 --image=nginx -- sleep 10`, captured.
const CREATE_DEPLOYMENT_COMMAND: &str = "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412bb010a210a047765623212001a0022002a003200380042005a0b0a036170701204776562321287010801120d0a0b0a036170701204776562321a6c0a1d0a0012001a0022002a003200380042005a0b0a03617070120477656232124b122d0a056e67696e7812056e67696e781a05736c6565701a0231302a0042006a007200800100880100900100a201001a00320042004a0052005800600068008201008a01009a0100c2010022020a00280038001a0c0800100018002000280038001a002200";

/// `kubectl create service clusterip s2 --tcp=80:8080 --tcp=81:http`, captured.
const CREATE_SERVICE: &str = "6b3873000a0d0a0276311207536572766963651286010a1d0a02733212001a0022002a003200380042005a090a036170701202733212610a1b0a0738302d38303830120354435018502207080010903f1a0028000a1e0a0738312d6874747012035443501851220a080110001a0468747470280012090a03617070120273321a002209436c757374657249503a00420052005a00600068001a020a001a002200";

/// `kubectl create service nodeport s3 --tcp=80:8080 --node-port=30001`, captured.
const CREATE_NODEPORT_SERVICE: &str = "6b3873000a0d0a02763112075365727669636512670a1d0a02733312001a0022002a003200380042005a090a036170701202733312420a1d0a0738302d38303830120354435018502207080010903f1a0028b1ea0112090a03617070120273331a0022084e6f6465506f72743a00420052005a00600068001a020a001a002200";

#[test]
fn kubectl_132_create_deployment_decodes_with_its_zero_replicas() {
    let v = decode(&unhex(CREATE_DEPLOYMENT)).unwrap();
    assert_eq!(
        v,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                // A pointer field set to 0 stays 0 (not the default of 1).
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "nginx", "image": "nginx",
                        "ports": [{"containerPort": 8080}],
                        "resources": {}
                    }]}
                },
                "strategy": {}
            },
            "status": {}
        })
    );
    let v = decode(&unhex(CREATE_DEPLOYMENT_COMMAND)).unwrap();
    assert_eq!(v["spec"]["replicas"], 1);
    assert_eq!(
        v["spec"]["template"]["spec"]["containers"][0]["command"],
        json!(["sleep", "10"])
    );
}

#[test]
fn kubectl_132_create_service_decodes_numeric_and_named_target_ports() {
    let v = decode(&unhex(CREATE_SERVICE)).unwrap();
    assert_eq!(
        v,
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s2", "labels": {"app": "s2"}},
            "spec": {
                "ports": [
                    {"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080},
                    {"name": "81-http", "protocol": "TCP", "port": 81, "targetPort": "http"}
                ],
                "selector": {"app": "s2"},
                "type": "ClusterIP"
            },
            "status": {"loadBalancer": {}}
        })
    );
    let v = decode(&unhex(CREATE_NODEPORT_SERVICE)).unwrap();
    assert_eq!(v["spec"]["type"], "NodePort");
    assert_eq!(v["spec"]["ports"][0]["nodePort"], 30001);
}

#[test]
fn embedded_sources_land_in_their_parent_and_unimplemented_fields_are_named() {
    // Volume{name "v", volumeSource{hostPath{path "/d"}}}: JSON's
    // {"name": "v", "hostPath": {"path": "/d"}}.
    let volume = [0x0a, 0x01, b'v', 0x12, 0x05, 0x0a, 0x03, 0x0a, 0x01, b'/'];
    let spec = [&[0x0a, volume.len() as u8][..], &volume].concat();
    let v = message(&spec, POD_SPEC, "spec").unwrap();
    assert_eq!(
        v["volumes"],
        json!([{"name": "v", "hostPath": {"path": "/"}}])
    );
    // PodSpec.affinity (18) with content: refused by its name.
    let e = message(&[0x92, 0x01, 0x02, 0x0a, 0x00], POD_SPEC, "spec").unwrap_err();
    assert_eq!(e.code, 422);
    assert!(e.message.contains("spec.affinity"), "{}", e.message);
    // An empty one is what kubectl sends for "not set".
    assert!(
        message(&[0x92, 0x01, 0x00], POD_SPEC, "spec")
            .unwrap()
            .is_empty()
    );
}
