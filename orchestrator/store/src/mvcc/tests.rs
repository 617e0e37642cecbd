//! Unit tests of `mvcc`, kept apart so the module reads as code.

use super::*;

fn put(ks: &mut KeySpace, k: &str, v: &str) -> CommandResponse {
    ks.apply(&Command::Put(PutRequest {
        key: k.into(),
        value: v.into(),
        prev_kv: true,
        ..PutRequest::default()
    }))
    .0
}

fn get(ks: &KeySpace, k: &str, end: &str, rev: i64) -> Result<RangeResponse, ApplyError> {
    ks.range(&RangeRequest {
        key: k.into(),
        range_end: end.into(),
        revision: rev,
        ..RangeRequest::default()
    })
}

#[test]
fn revisions_versions_and_past_reads() {
    let mut ks = KeySpace::default();
    put(&mut ks, "a", "1");
    put(&mut ks, "a", "2");
    put(&mut ks, "b", "x");
    let r = get(&ks, "a", "", 0).unwrap();
    assert_eq!(r.header.revision, 3);
    let kv = &r.kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (1, 2, 2));
    assert_eq!(kv.value, b"2");
    assert_eq!(get(&ks, "a", "", 1).unwrap().kvs[0].value, b"1");
    assert_eq!(get(&ks, "b", "", 2).unwrap().kvs.len(), 0);
    assert_eq!(get(&ks, "a", "", 4), Err(ApplyError::FutureRevision));
    // prefix and "all keys"
    assert_eq!(get(&ks, "a", "c", 0).unwrap().count, 2);
    assert_eq!(get(&ks, "\0", "\0", 0).unwrap().count, 2);
}

#[test]
fn delete_bumps_revision_once_and_resets_version() {
    let mut ks = KeySpace::default();
    put(&mut ks, "p/1", "a");
    put(&mut ks, "p/2", "b");
    let (resp, events) = ks.apply(&Command::DeleteRange(DeleteRangeRequest {
        key: "p/".into(),
        range_end: "p0".into(),
        prev_kv: true,
    }));
    let CommandResponse::DeleteRange(d) = resp else {
        panic!("{resp:?}")
    };
    assert_eq!((d.deleted, d.header.revision), (2, 3));
    assert_eq!(events.len(), 2);
    // deleting nothing does not create a revision
    let (resp, _) = ks.apply(&Command::DeleteRange(DeleteRangeRequest {
        key: "nope".into(),
        ..DeleteRangeRequest::default()
    }));
    assert!(matches!(resp, CommandResponse::DeleteRange(d) if d.header.revision == 3));
    put(&mut ks, "p/1", "again");
    let kv = &get(&ks, "p/1", "", 0).unwrap().kvs[0];
    assert_eq!((kv.create_revision, kv.version), (4, 1));
}

#[test]
fn limit_count_keys_only_and_sort() {
    let mut ks = KeySpace::default();
    for k in ["k3", "k1", "k2"] {
        put(&mut ks, k, k);
    }
    let r = ks
        .range(&RangeRequest {
            key: "k".into(),
            range_end: "l".into(),
            limit: 2,
            keys_only: true,
            ..RangeRequest::default()
        })
        .unwrap();
    assert_eq!((r.count, r.more, r.kvs.len()), (3, true, 2));
    assert_eq!(r.kvs[0].key, b"k1");
    assert!(r.kvs[0].value.is_empty());
    let r = ks
        .range(&RangeRequest {
            key: "k".into(),
            range_end: "l".into(),
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Mod,
            ..RangeRequest::default()
        })
        .unwrap();
    assert_eq!(r.kvs[0].key, b"k2");
    let r = ks
        .range(&RangeRequest {
            key: "k".into(),
            range_end: "l".into(),
            count_only: true,
            ..RangeRequest::default()
        })
        .unwrap();
    assert_eq!((r.count, r.kvs.len()), (3, 0));
}

#[test]
fn txn_compares_and_is_atomic() {
    let mut ks = KeySpace::default();
    put(&mut ks, "lock", "me");
    let txn = |value: &str, lease: i64| {
        Command::Txn(TxnRequest {
            compare: vec![Compare {
                key: "lock".into(),
                range_end: vec![],
                result: CompareResult::Equal,
                target: CompareTarget::Value(value.into()),
            }],
            success: vec![
                RequestOp::Put(PutRequest {
                    key: "x".into(),
                    value: "1".into(),
                    ..PutRequest::default()
                }),
                RequestOp::Put(PutRequest {
                    key: "y".into(),
                    value: "2".into(),
                    lease,
                    ..PutRequest::default()
                }),
                RequestOp::Range(RangeRequest {
                    key: "x".into(),
                    ..RangeRequest::default()
                }),
            ],
            failure: vec![RequestOp::Range(RangeRequest {
                key: "lock".into(),
                ..RangeRequest::default()
            })],
        })
    };
    let (resp, _) = ks.apply(&txn("other", 0));
    let CommandResponse::Txn(t) = resp else {
        panic!()
    };
    assert!(!t.succeeded);
    assert_eq!(t.header.revision, 1);
    // a failing op (unknown lease) rolls back the whole txn
    let (resp, events) = ks.apply(&txn("me", 42));
    assert_eq!(resp, CommandResponse::Failed(ApplyError::LeaseNotFound));
    assert!(events.is_empty());
    assert_eq!(ks.revision(), 1);
    assert_eq!(get(&ks, "x", "", 0).unwrap().count, 0);
    let (resp, events) = ks.apply(&txn("me", 0));
    let CommandResponse::Txn(t) = resp else {
        panic!()
    };
    assert!(t.succeeded);
    assert_eq!(t.header.revision, 2);
    assert_eq!(events.len(), 2);
    let ResponseOp::Range(r) = &t.responses[2] else {
        panic!()
    };
    assert_eq!(r.kvs[0].value, b"1");
    // compare on a missing key: version 0
    let c = Compare {
        key: "missing".into(),
        range_end: vec![],
        result: CompareResult::Equal,
        target: CompareTarget::CreateRevision(0),
    };
    assert!(ks.compare_holds(&c));
}

#[test]
fn compaction_keeps_visible_values() {
    let mut ks = KeySpace::default();
    put(&mut ks, "a", "1"); // 1
    put(&mut ks, "a", "2"); // 2
    put(&mut ks, "b", "1"); // 3
    ks.apply(&Command::DeleteRange(DeleteRangeRequest {
        key: "b".into(),
        ..DeleteRangeRequest::default()
    })); // 4
    put(&mut ks, "a", "3"); // 5
    let (resp, _) = ks.apply(&Command::Compact { revision: 4 });
    assert!(matches!(resp, CommandResponse::Compact(_)));
    assert_eq!(get(&ks, "a", "", 3), Err(ApplyError::Compacted));
    assert_eq!(get(&ks, "a", "", 4).unwrap().kvs[0].value, b"2");
    assert_eq!(get(&ks, "b", "", 4).unwrap().count, 0);
    assert_eq!(ks.history(b"a", b"", 3), Err(4));
    let h = ks.history(b"a", b"", 5).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(
        ks.apply(&Command::Compact { revision: 4 }).0,
        CommandResponse::Failed(ApplyError::Compacted)
    );
    assert_eq!(
        ks.apply(&Command::Compact { revision: 9 }).0,
        CommandResponse::Failed(ApplyError::FutureRevision)
    );
}

#[test]
fn hash_kv_covers_history_up_to_a_revision() {
    let mut a = KeySpace::default();
    let mut b = KeySpace::default();
    for ks in [&mut a, &mut b] {
        put(ks, "k", "1");
        put(ks, "k", "2");
        put(ks, "j", "3");
    }
    assert_eq!(a.hash_kv(0), b.hash_kv(0));
    let at3 = a.hash_kv(3).unwrap();
    assert_eq!(at3.revision, 3);
    // A later write changes the current hash, not the one at 3.
    put(&mut a, "k", "4");
    assert_eq!(a.hash_kv(3).unwrap(), at3);
    assert_ne!(a.hash_kv(0).unwrap().hash, at3.hash);
    // Same revision, different value: different hash.
    put(&mut b, "k", "other");
    assert_ne!(a.hash_kv(0).unwrap().hash, b.hash_kv(0).unwrap().hash);
    // Hashing history at a revision equals hashing a replica stopped there.
    let mut c = KeySpace::default();
    put(&mut c, "k", "1");
    put(&mut c, "k", "2");
    assert_eq!(a.hash_kv(2).unwrap().hash, c.hash_kv(0).unwrap().hash);
    assert_eq!(a.hash_kv(9), Err(ApplyError::FutureRevision));
    a.apply(&Command::Compact { revision: 2 });
    assert_eq!(a.hash_kv(1), Err(ApplyError::Compacted));
    assert_eq!(a.hash_kv(0).unwrap().compact_revision, 2);
}

#[test]
fn history_groups_by_revision_in_order() {
    let mut ks = KeySpace::default();
    put(&mut ks, "w/a", "1");
    ks.apply(&Command::Txn(TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Put(PutRequest {
                key: "w/b".into(),
                value: "2".into(),
                ..PutRequest::default()
            }),
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: "w/a".into(),
                ..DeleteRangeRequest::default()
            }),
        ],
        failure: vec![],
    }));
    let h = ks.history(b"w/", b"w0", 1).unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[1].0, 2);
    let kinds: Vec<_> = h[1].1.iter().map(|e| (e.kind, e.kv.key.clone())).collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::Put, b"w/b".to_vec()),
            (EventKind::Delete, b"w/a".to_vec())
        ]
    );
    assert_eq!(h[1].1[1].prev_kv.as_ref().unwrap().value, b"1");
}

#[test]
fn lease_revoke_deletes_attached_keys_in_one_revision() {
    let mut ks = KeySpace::default();
    ks.apply(&Command::LeaseGrant { id: 7, ttl: 10 });
    assert_eq!(
        ks.apply(&Command::LeaseGrant { id: 7, ttl: 10 }).0,
        CommandResponse::Failed(ApplyError::LeaseExists)
    );
    for k in ["l/1", "l/2"] {
        ks.apply(&Command::Put(PutRequest {
            key: k.into(),
            value: "v".into(),
            lease: 7,
            ..PutRequest::default()
        }));
    }
    // re-put without lease detaches l/2
    put(&mut ks, "l/2", "free");
    assert_eq!(ks.lease(7).unwrap().keys.len(), 1);
    let (resp, events) = ks.apply(&Command::LeaseRevoke { id: 7 });
    assert!(matches!(resp, CommandResponse::LeaseRevoke(r) if r.header.revision == 4));
    assert_eq!(events.len(), 1);
    assert_eq!(get(&ks, "l/", "l0", 0).unwrap().count, 1);
    assert_eq!(
        ks.apply(&Command::LeaseRevoke { id: 7 }).0,
        CommandResponse::Failed(ApplyError::LeaseNotFound)
    );
}
