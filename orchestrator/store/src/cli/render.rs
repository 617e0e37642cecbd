//! How `herd kv` prints: a line per item for people, JSON (one object per
//! line, as etcdctl's `-w json`) or YAML documents for scripts.

use herd_cli::Output;
use herd_client::prefix_end;
use herd_client::proto::etcdserverpb::ResponseHeader;
use herd_client::proto::mvccpb::KeyValue;
use serde_json::{Value, json};

pub(super) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub(super) fn header_json(h: &Option<ResponseHeader>) -> Value {
    let h = h.unwrap_or_default();
    json!({"cluster_id": h.cluster_id, "member_id": h.member_id, "revision": h.revision, "raft_term": h.raft_term})
}

pub(super) fn kv_json(kv: &KeyValue) -> Value {
    json!({
        "key": lossy(&kv.key),
        "value": lossy(&kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": kv.lease,
    })
}

/// Prints one result for scripts, in the format asked for.
pub(super) fn emit(out: Output, v: &Value) {
    match out {
        Output::Yaml => print!(
            "---\n{}",
            serde_saphyr::to_string(v).unwrap_or_else(|e| format!("# {e}\n"))
        ),
        _ => println!("{v}"),
    }
}

pub(super) fn range_of(key: &str, range_end: Option<String>, prefix: bool) -> (Vec<u8>, Vec<u8>) {
    let key = key.as_bytes().to_vec();
    let end = match (prefix, range_end) {
        (true, _) => prefix_end(&key),
        (false, Some(end)) => end.into_bytes(),
        (false, None) => Vec::new(),
    };
    (key, end)
}
