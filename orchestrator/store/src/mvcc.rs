//! The MVCC key space: every key's version history, revisions, ranges, transactions, compaction and leases.
//!
//! Pure and synchronous: the Raft state machine feeds it committed commands in
//! log order, so every member computes the same state and the same responses.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::types::{
    ApplyError, Command, CommandResponse, CompactionResponse, Compare, CompareResult,
    CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event, EventKind, KeyValue,
    LeaseGrantResponse, LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, ResponseHeader, ResponseOp, SortOrder, SortTarget, TxnRequest, TxnResponse,
    in_range,
};

/// One entry of a key's history; `kv == None` is a deletion (tombstone).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Version {
    main: i64,
    sub: u32,
    kv: Option<Arc<KeyValue>>,
}

/// A lease as replicated: its granted TTL and attached keys. Deadlines are
/// not replicated; the leader keeps them (see `lease_clock`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    pub ttl: i64,
    pub keys: BTreeSet<Vec<u8>>,
}

/// [`KeySpace::hash_kv`]'s result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvHash {
    pub hash: u32,
    /// The revision the hash covers.
    pub revision: i64,
    pub compact_revision: i64,
}

/// Events of the revisions at or after a start revision, grouped per revision.
pub type History = Vec<(i64, Vec<Event>)>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeySpace {
    revision: i64,
    compacted: i64,
    keys: BTreeMap<Vec<u8>, Vec<Version>>,
    leases: BTreeMap<i64, Lease>,
}

/// Undo record of one write transaction so a failing op leaves no trace.
#[derive(Default)]
struct Undo {
    pushed: Vec<Vec<u8>>,
    lease_added: Vec<(i64, Vec<u8>)>,
    lease_removed: Vec<(i64, Vec<u8>)>,
}

/// One write transaction in progress: all its writes share `main`.
struct Tx {
    main: i64,
    sub: u32,
    events: Vec<Event>,
    undo: Undo,
}

impl KeySpace {
    pub fn revision(&self) -> i64 {
        self.revision
    }

    pub fn compacted(&self) -> i64 {
        self.compacted
    }

    pub fn lease(&self, id: i64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub fn lease_ids(&self) -> Vec<i64> {
        self.leases.keys().copied().collect()
    }

    fn header(rev: i64) -> ResponseHeader {
        ResponseHeader {
            revision: rev,
            ..ResponseHeader::default()
        }
    }

    fn key_iter<'a>(
        &'a self,
        key: &'a [u8],
        range_end: &'a [u8],
    ) -> Box<dyn Iterator<Item = (&'a Vec<u8>, &'a Vec<Version>)> + 'a> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        if range_end.is_empty() {
            Box::new(self.keys.get_key_value(key).into_iter())
        } else if range_end == [0] {
            Box::new(self.keys.range::<[u8], _>((Included(key), Unbounded)))
        } else if range_end <= key {
            Box::new(std::iter::empty())
        } else {
            Box::new(
                self.keys
                    .range::<[u8], _>((Included(key), Excluded(range_end))),
            )
        }
    }

    fn visible(versions: &[Version], rev: i64) -> Option<&Arc<KeyValue>> {
        let idx = versions.partition_point(|v| v.main <= rev);
        idx.checked_sub(1).and_then(|i| versions[i].kv.as_ref())
    }

    fn current(&self, key: &[u8]) -> Option<&Arc<KeyValue>> {
        self.keys
            .get(key)
            .and_then(|v| v.last())
            .and_then(|v| v.kv.as_ref())
    }

    /// Reads as of `req.revision` (0 = `at`, the current revision for plain reads).
    fn range_at(&self, req: &RangeRequest, at: i64) -> Result<RangeResponse, ApplyError> {
        if req.revision > at {
            return Err(ApplyError::FutureRevision);
        }
        if req.revision > 0 && req.revision < self.compacted {
            return Err(ApplyError::Compacted);
        }
        let rev = if req.revision > 0 { req.revision } else { at };
        let filtered = req.min_mod_revision > 0
            || req.max_mod_revision > 0
            || req.min_create_revision > 0
            || req.max_create_revision > 0;
        let sorted = req.sort_order != SortOrder::None
            && !(req.sort_target == SortTarget::Key && req.sort_order == SortOrder::Ascend);
        let limit = if req.limit > 0 && !sorted {
            req.limit as usize
        } else {
            usize::MAX
        };
        let mut kvs = Vec::new();
        let mut count = 0i64;
        for (_, versions) in self.key_iter(&req.key, &req.range_end) {
            let Some(kv) = Self::visible(versions, rev) else {
                continue;
            };
            if filtered
                && ((req.min_mod_revision > 0 && kv.mod_revision < req.min_mod_revision)
                    || (req.max_mod_revision > 0 && kv.mod_revision > req.max_mod_revision)
                    || (req.min_create_revision > 0
                        && kv.create_revision < req.min_create_revision)
                    || (req.max_create_revision > 0
                        && kv.create_revision > req.max_create_revision))
            {
                continue;
            }
            count += 1;
            if !req.count_only && kvs.len() < limit {
                kvs.push(kv);
            }
        }
        if sorted {
            kvs.sort_by(|a, b| {
                let ord = match req.sort_target {
                    SortTarget::Key => a.key.cmp(&b.key),
                    SortTarget::Version => a.version.cmp(&b.version),
                    SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                    SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                    SortTarget::Value => a.value.cmp(&b.value),
                };
                if req.sort_order == SortOrder::Descend {
                    ord.reverse()
                } else {
                    ord
                }
            });
            if req.limit > 0 {
                kvs.truncate(req.limit as usize);
            }
        }
        let more = req.limit > 0 && count > req.limit;
        let kvs = kvs
            .into_iter()
            .map(|kv| {
                if req.keys_only {
                    KeyValue {
                        value: Vec::new(),
                        ..(**kv).clone()
                    }
                } else {
                    (**kv).clone()
                }
            })
            .collect();
        Ok(RangeResponse {
            header: Self::header(self.revision),
            kvs,
            more,
            count,
        })
    }

    /// A read at the current revision (or `req.revision`).
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, ApplyError> {
        self.range_at(req, self.revision)
    }

    /// Applies one committed command. Returns the response and the events it produced.
    pub fn apply(&mut self, cmd: &Command) -> (CommandResponse, Vec<Event>) {
        let mut tx = Tx {
            main: self.revision + 1,
            sub: 0,
            events: Vec::new(),
            undo: Undo::default(),
        };
        let result = match cmd {
            Command::Put(req) => self.put(&mut tx, req).map(CommandResponse::Put),
            Command::DeleteRange(req) => self
                .delete_range(&mut tx, req)
                .map(CommandResponse::DeleteRange),
            Command::Txn(req) => self.txn(&mut tx, req).map(CommandResponse::Txn),
            Command::Compact { revision } => self
                .compact(*revision)
                .map(|()| CommandResponse::Compact(CompactionResponse::default())),
            Command::LeaseGrant { id, ttl } => {
                if self.leases.contains_key(id) {
                    Err(ApplyError::LeaseExists)
                } else {
                    self.leases.insert(
                        *id,
                        Lease {
                            id: *id,
                            ttl: *ttl,
                            keys: BTreeSet::new(),
                        },
                    );
                    Ok(CommandResponse::LeaseGrant(LeaseGrantResponse {
                        header: ResponseHeader::default(),
                        id: *id,
                        ttl: *ttl,
                    }))
                }
            }
            Command::LeaseRevoke { id } => self
                .revoke(&mut tx, *id)
                .map(|()| CommandResponse::LeaseRevoke(LeaseRevokeResponse::default())),
            // Users and roles are the state machine's, not the key space's.
            Command::Auth(_) => return (CommandResponse::None, Vec::new()),
            Command::Batch(cmds) => {
                let mut events = Vec::new();
                let resps = cmds
                    .iter()
                    .map(|c| {
                        let (r, e) = self.apply(c);
                        events.extend(e);
                        r
                    })
                    .collect();
                return (CommandResponse::Batch(resps), events);
            }
        };
        match result {
            Ok(mut resp) => {
                if tx.sub > 0 {
                    self.revision = tx.main;
                }
                set_header_revision(&mut resp, self.revision);
                (resp, tx.events)
            }
            Err(e) => {
                self.rollback(tx);
                (CommandResponse::Failed(e), Vec::new())
            }
        }
    }

    fn rollback(&mut self, tx: Tx) {
        for key in tx.undo.pushed.iter().rev() {
            if let Some(versions) = self.keys.get_mut(key) {
                while versions.last().is_some_and(|v| v.main == tx.main) {
                    versions.pop();
                }
                if versions.is_empty() {
                    self.keys.remove(key);
                }
            }
        }
        for (id, key) in tx.undo.lease_added.into_iter().rev() {
            if let Some(l) = self.leases.get_mut(&id) {
                l.keys.remove(&key);
            }
        }
        for (id, key) in tx.undo.lease_removed.into_iter().rev() {
            if let Some(l) = self.leases.get_mut(&id) {
                l.keys.insert(key);
            }
        }
    }

    fn push(&mut self, tx: &mut Tx, key: &[u8], kv: Option<Arc<KeyValue>>) {
        let version = Version {
            main: tx.main,
            sub: tx.sub,
            kv,
        };
        tx.sub += 1;
        self.keys.entry(key.to_vec()).or_default().push(version);
        tx.undo.pushed.push(key.to_vec());
    }

    fn detach(&mut self, tx: &mut Tx, lease: i64, key: &[u8]) {
        if lease != 0
            && let Some(l) = self.leases.get_mut(&lease)
            && l.keys.remove(key)
        {
            tx.undo.lease_removed.push((lease, key.to_vec()));
        }
    }

    fn put(&mut self, tx: &mut Tx, req: &PutRequest) -> Result<PutResponse, ApplyError> {
        let prev = self.current(&req.key).cloned();
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(ApplyError::KeyNotFound);
        }
        let value = if req.ignore_value {
            prev.as_ref().map(|p| p.value.clone()).unwrap_or_default()
        } else {
            req.value.clone()
        };
        let lease = if req.ignore_lease {
            prev.as_ref().map_or(0, |p| p.lease)
        } else {
            req.lease
        };
        if lease != 0 && !self.leases.contains_key(&lease) {
            return Err(ApplyError::LeaseNotFound);
        }
        let kv = Arc::new(KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map_or(tx.main, |p| p.create_revision),
            mod_revision: tx.main,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease,
        });
        if let Some(p) = &prev
            && p.lease != lease
        {
            self.detach(tx, p.lease, &req.key);
        }
        if lease != 0
            && let Some(l) = self.leases.get_mut(&lease)
            && l.keys.insert(req.key.clone())
        {
            tx.undo.lease_added.push((lease, req.key.clone()));
        }
        self.push(tx, &req.key, Some(kv.clone()));
        tx.events.push(Event {
            kind: EventKind::Put,
            kv,
            prev_kv: prev.clone(),
        });
        Ok(PutResponse {
            header: ResponseHeader::default(),
            prev_kv: if req.prev_kv {
                prev.map(|p| (*p).clone())
            } else {
                None
            },
        })
    }

    fn delete_range(
        &mut self,
        tx: &mut Tx,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, ApplyError> {
        let victims: Vec<Arc<KeyValue>> = self
            .key_iter(&req.key, &req.range_end)
            .filter_map(|(_, v)| v.last().and_then(|v| v.kv.clone()))
            .collect();
        for prev in &victims {
            self.detach(tx, prev.lease, &prev.key);
            self.push(tx, &prev.key, None);
            tx.events.push(Event {
                kind: EventKind::Delete,
                kv: Arc::new(KeyValue {
                    key: prev.key.clone(),
                    mod_revision: tx.main,
                    ..KeyValue::default()
                }),
                prev_kv: Some(prev.clone()),
            });
        }
        Ok(DeleteRangeResponse {
            header: ResponseHeader::default(),
            deleted: victims.len() as i64,
            prev_kvs: if req.prev_kv {
                victims.iter().map(|p| (**p).clone()).collect()
            } else {
                Vec::new()
            },
        })
    }

    fn compare_holds(&self, c: &Compare) -> bool {
        let check = |kv: Option<&Arc<KeyValue>>| -> bool {
            let ord = match (&c.target, kv) {
                (CompareTarget::Value(want), Some(kv)) => kv.value.as_slice().cmp(want.as_slice()),
                // A missing key has no value to compare: etcd answers false.
                (CompareTarget::Value(_), None) => return false,
                (CompareTarget::Version(n), kv) => kv.map_or(0, |k| k.version).cmp(n),
                (CompareTarget::CreateRevision(n), kv) => {
                    kv.map_or(0, |k| k.create_revision).cmp(n)
                }
                (CompareTarget::ModRevision(n), kv) => kv.map_or(0, |k| k.mod_revision).cmp(n),
                (CompareTarget::Lease(n), kv) => kv.map_or(0, |k| k.lease).cmp(n),
            };
            match c.result {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::NotEqual => ord.is_ne(),
                CompareResult::Greater => ord.is_gt(),
                CompareResult::Less => ord.is_lt(),
            }
        };
        if c.range_end.is_empty() {
            check(self.current(&c.key))
        } else {
            self.key_iter(&c.key, &c.range_end)
                .filter_map(|(_, v)| v.last().and_then(|v| v.kv.as_ref()))
                .all(|kv| check(Some(kv)))
        }
    }

    fn txn(&mut self, tx: &mut Tx, req: &TxnRequest) -> Result<TxnResponse, ApplyError> {
        let succeeded = req.compare.iter().all(|c| self.compare_holds(c));
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                RequestOp::Range(r) => {
                    // Reads inside a write txn see its earlier writes (as etcd's).
                    let at = if tx.sub > 0 { tx.main } else { self.revision };
                    let mut resp = self.range_at(r, at)?;
                    resp.header.revision = at;
                    ResponseOp::Range(resp)
                }
                RequestOp::Put(p) => ResponseOp::Put(self.put(tx, p)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete_range(tx, d)?),
                RequestOp::Txn(t) => ResponseOp::Txn(self.txn(tx, t)?),
            });
        }
        Ok(TxnResponse {
            header: ResponseHeader::default(),
            succeeded,
            responses,
        })
    }

    fn revoke(&mut self, tx: &mut Tx, id: i64) -> Result<(), ApplyError> {
        let lease = self.leases.remove(&id).ok_or(ApplyError::LeaseNotFound)?;
        for key in &lease.keys {
            if let Some(prev) = self.current(key).cloned() {
                self.push(tx, key, None);
                tx.events.push(Event {
                    kind: EventKind::Delete,
                    kv: Arc::new(KeyValue {
                        key: key.clone(),
                        mod_revision: tx.main,
                        ..KeyValue::default()
                    }),
                    prev_kv: Some(prev),
                });
            }
        }
        Ok(())
    }

    fn compact(&mut self, rev: i64) -> Result<(), ApplyError> {
        if rev <= self.compacted {
            return Err(ApplyError::Compacted);
        }
        if rev > self.revision {
            return Err(ApplyError::FutureRevision);
        }
        self.keys.retain(|_, versions| {
            let idx = versions.partition_point(|v| v.main <= rev);
            // Keep the version visible at `rev` if it is a live value.
            let keep_from = match idx.checked_sub(1) {
                Some(i) if versions[i].kv.is_some() => i,
                _ => idx,
            };
            versions.drain(..keep_from);
            !versions.is_empty()
        });
        self.compacted = rev;
        Ok(())
    }

    /// Evaluates a txn whose ops are all reads, without a log entry.
    pub fn read_txn(&self, req: &TxnRequest) -> Result<TxnResponse, ApplyError> {
        let succeeded = req.compare.iter().all(|c| self.compare_holds(c));
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                RequestOp::Range(r) => responses.push(ResponseOp::Range(self.range(r)?)),
                RequestOp::Txn(t) => responses.push(ResponseOp::Txn(self.read_txn(t)?)),
                // Callers only pass read-only txns; a write here is skipped, not applied.
                RequestOp::Put(_) | RequestOp::DeleteRange(_) => {}
            }
        }
        Ok(TxnResponse {
            header: Self::header(self.revision),
            succeeded,
            responses,
        })
    }

    /// Events in `[key, range_end)` at revisions `>= from`, grouped per revision.
    /// `Err(compacted)` when part of that history is gone.
    pub fn history(&self, key: &[u8], range_end: &[u8], from: i64) -> Result<History, i64> {
        self.history_between(key, range_end, from, i64::MAX)
    }

    /// [`KeySpace::history`] limited to revisions `from..=to`, so a lagging
    /// watcher can catch up one bounded window at a time.
    pub fn history_between(
        &self,
        key: &[u8],
        range_end: &[u8],
        from: i64,
        to: i64,
    ) -> Result<History, i64> {
        if self.compacted > 0 && from <= self.compacted {
            return Err(self.compacted);
        }
        let mut all: Vec<(i64, u32, Event)> = Vec::new();
        for (k, versions) in self.key_iter(key, range_end) {
            let start = versions.partition_point(|v| v.main < from);
            let end = versions.partition_point(|v| v.main <= to);
            for i in start..end.max(start) {
                let v = &versions[i];
                let prev_kv = i.checked_sub(1).and_then(|p| versions[p].kv.clone());
                let event = match &v.kv {
                    Some(kv) => Event {
                        kind: EventKind::Put,
                        kv: kv.clone(),
                        prev_kv,
                    },
                    None => Event {
                        kind: EventKind::Delete,
                        kv: Arc::new(KeyValue {
                            key: k.clone(),
                            mod_revision: v.main,
                            ..KeyValue::default()
                        }),
                        prev_kv,
                    },
                };
                all.push((v.main, v.sub, event));
            }
        }
        all.sort_by_key(|(main, sub, _)| (*main, *sub));
        let mut out: History = Vec::new();
        for (main, _, event) in all {
            match out.last_mut() {
                Some((rev, events)) if *rev == main => events.push(event),
                _ => out.push((main, vec![event])),
            }
        }
        Ok(out)
    }

    /// crc32 of the key space as of `revision` (0 = current): every retained
    /// version at or below it, key by key in order (key, main and sub
    /// revision, then create revision, version, lease and value, or a
    /// tombstone mark), plus the compaction point. Members that applied the
    /// same log agree on it (etcd's `HashKV`); leases are not covered.
    pub fn hash_kv(&self, revision: i64) -> Result<KvHash, ApplyError> {
        let rev = if revision > 0 {
            revision
        } else {
            self.revision
        };
        if rev > self.revision {
            return Err(ApplyError::FutureRevision);
        }
        if rev < self.compacted {
            return Err(ApplyError::Compacted);
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&self.compacted.to_le_bytes());
        for (key, versions) in &self.keys {
            let end = versions.partition_point(|v| v.main <= rev);
            for v in &versions[..end] {
                h.update(&(key.len() as u64).to_le_bytes());
                h.update(key);
                h.update(&v.main.to_le_bytes());
                h.update(&v.sub.to_le_bytes());
                match &v.kv {
                    Some(kv) => {
                        h.update(&[1]);
                        h.update(&kv.create_revision.to_le_bytes());
                        h.update(&kv.version.to_le_bytes());
                        h.update(&kv.lease.to_le_bytes());
                        h.update(&(kv.value.len() as u64).to_le_bytes());
                        h.update(&kv.value);
                    }
                    None => h.update(&[0]),
                }
            }
        }
        Ok(KvHash {
            hash: h.finalize(),
            revision: rev,
            compact_revision: self.compacted,
        })
    }

    /// Number of keys with a live value now.
    pub fn live_keys(&self) -> usize {
        self.keys
            .values()
            .filter(|v| v.last().is_some_and(|v| v.kv.is_some()))
            .count()
    }

    /// Does `key` fall in the watched range? (Re-exported for the watch hub.)
    pub fn matches(k: &[u8], key: &[u8], range_end: &[u8]) -> bool {
        in_range(k, key, range_end)
    }
}

fn set_header_revision(resp: &mut CommandResponse, rev: i64) {
    let header = match resp {
        CommandResponse::Put(r) => &mut r.header,
        CommandResponse::DeleteRange(r) => &mut r.header,
        CommandResponse::Txn(r) => &mut r.header,
        CommandResponse::Compact(r) => &mut r.header,
        CommandResponse::LeaseGrant(r) => &mut r.header,
        CommandResponse::LeaseRevoke(r) => &mut r.header,
        CommandResponse::None
        | CommandResponse::Failed(_)
        | CommandResponse::Batch(_)
        | CommandResponse::Auth { .. } => return,
    };
    header.revision = rev;
}

#[cfg(test)]
mod tests;
