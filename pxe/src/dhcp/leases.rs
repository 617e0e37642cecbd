//! The address pool and its leases: allocation in memory, durability in an fsync'd journal.
//!
//! State lives in `<state_dir>/dhcp-leases.jsonl`, one JSON record per line
//! (`bind`, `release`, `decline`). The server appends the records of a batch
//! of replies and calls `fdatasync` before sending any ACK of that batch, so
//! an acknowledged lease survives a crash or power loss (group commit: one
//! sync covers every ACK that arrived while the previous sync ran). On start
//! the journal is replayed and rewritten compactly (write temp, fsync,
//! rename, fsync directory). A torn last line from a crash mid-append is
//! ignored; any other unreadable line is an error naming the line.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Error;
use super::config::{MacAddr, Pool};

/// File name of the journal inside the state directory.
pub const FILE_NAME: &str = "dhcp-leases.jsonl";
/// How long an OFFERed address is held for the client that was offered it.
const OFFER_HOLD_SECS: u64 = 60;

/// One durable change to the lease table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Record {
    /// `ip` is leased to `mac` until `expires` (Unix seconds).
    Bind {
        #[serde(with = "mac_serde")]
        mac: MacAddr,
        ip: Ipv4Addr,
        expires: u64,
    },
    /// The client gave `ip` back; we still remember it for that client.
    Release {
        #[serde(with = "mac_serde")]
        mac: MacAddr,
        ip: Ipv4Addr,
    },
    /// A client found `ip` in use by someone else; keep it out until `until`.
    Decline { ip: Ipv4Addr, until: u64 },
}

mod mac_serde {
    use super::MacAddr;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mac: &MacAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(mac)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A lease as the table holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    pub mac: MacAddr,
    pub expires: u64,
    pub released: bool,
}

impl Binding {
    fn active(&self, now: u64) -> bool {
        !self.released && self.expires > now
    }
}

/// Every address's state; pure in-memory logic, no I/O.
#[derive(Debug)]
pub struct Leases {
    pools: Vec<Pool>,
    reservations: HashMap<MacAddr, Ipv4Addr>,
    reserved_ips: HashSet<Ipv4Addr>,
    by_ip: HashMap<Ipv4Addr, Binding>,
    by_mac: HashMap<MacAddr, Ipv4Addr>,
    offers: HashMap<Ipv4Addr, (MacAddr, u64)>,
    quarantine: HashMap<Ipv4Addr, u64>,
    cursors: Vec<u32>,
}

impl Leases {
    pub fn new(pools: Vec<Pool>, reservations: HashMap<MacAddr, Ipv4Addr>) -> Leases {
        let reserved_ips = reservations.values().copied().collect();
        Leases {
            cursors: vec![0; pools.len()],
            pools,
            reservations,
            reserved_ips,
            by_ip: HashMap::new(),
            by_mac: HashMap::new(),
            offers: HashMap::new(),
            quarantine: HashMap::new(),
        }
    }

    /// Applies a journal record (replay, or after a decision).
    pub fn apply(&mut self, record: &Record) {
        match *record {
            Record::Bind { mac, ip, expires } => {
                if let Some(old) = self.by_mac.insert(mac, ip)
                    && old != ip
                    && self.by_ip.get(&old).is_some_and(|b| b.mac == mac)
                {
                    self.by_ip.remove(&old);
                }
                if let Some(prev) = self.by_ip.insert(
                    ip,
                    Binding {
                        mac,
                        expires,
                        released: false,
                    },
                ) && prev.mac != mac
                    && self.by_mac.get(&prev.mac) == Some(&ip)
                {
                    self.by_mac.remove(&prev.mac);
                }
                self.offers.remove(&ip);
                self.quarantine.remove(&ip);
            }
            Record::Release { mac, ip } => {
                if let Some(b) = self.by_ip.get_mut(&ip)
                    && b.mac == mac
                {
                    b.released = true;
                }
            }
            Record::Decline { ip, until } => {
                if let Some(b) = self.by_ip.remove(&ip)
                    && self.by_mac.get(&b.mac) == Some(&ip)
                {
                    self.by_mac.remove(&b.mac);
                }
                self.offers.remove(&ip);
                self.quarantine.insert(ip, until);
            }
        }
    }

    /// The records that recreate the current table (for compaction).
    pub fn snapshot(&self, now: u64) -> Vec<Record> {
        let mut out = Vec::with_capacity(self.by_ip.len() + self.quarantine.len());
        let mut ips: Vec<_> = self.by_ip.iter().collect();
        ips.sort_by_key(|(ip, _)| u32::from(**ip));
        for (&ip, b) in ips {
            out.push(Record::Bind {
                mac: b.mac,
                ip,
                expires: b.expires,
            });
            if b.released {
                out.push(Record::Release { mac: b.mac, ip });
            }
        }
        for (&ip, &until) in &self.quarantine {
            if until > now {
                out.push(Record::Decline { ip, until });
            }
        }
        out
    }

    /// The index of the pool serving a request relayed through `giaddr`
    /// (or, with `giaddr` unspecified, the pool of our own subnet `local`).
    pub fn pool_for(&self, giaddr: Ipv4Addr, local: Ipv4Addr) -> Option<usize> {
        let key = if giaddr.is_unspecified() {
            local
        } else {
            giaddr
        };
        self.pools.iter().position(|p| p.subnet.contains(key))
    }

    pub fn pool(&self, index: usize) -> &Pool {
        &self.pools[index]
    }

    /// The client's current binding, if any (active, expired or released).
    pub fn binding_of(&self, mac: MacAddr) -> Option<(Ipv4Addr, Binding)> {
        let ip = *self.by_mac.get(&mac)?;
        let b = *self.by_ip.get(&ip)?;
        (b.mac == mac).then_some((ip, b))
    }

    /// Whether `ip` may be leased to `mac` in pool `pool` right now.
    pub fn available_for(&self, pool: usize, ip: Ipv4Addr, mac: MacAddr, now: u64) -> bool {
        if let Some(&fixed) = self.reservations.get(&mac) {
            return fixed == ip
                && self.pools[pool].subnet.contains(ip)
                && !self.taken_by_other(ip, mac, now);
        }
        self.pools[pool].contains(ip)
            && !self.reserved_ips.contains(&ip)
            && self.quarantine.get(&ip).is_none_or(|&until| until <= now)
            && !self.taken_by_other(ip, mac, now)
    }

    fn taken_by_other(&self, ip: Ipv4Addr, mac: MacAddr, now: u64) -> bool {
        let leased = self
            .by_ip
            .get(&ip)
            .is_some_and(|b| b.mac != mac && b.active(now));
        let offered = self
            .offers
            .get(&ip)
            .is_some_and(|&(m, until)| m != mac && until > now);
        leased || offered
    }

    /// Picks the address to offer `mac` and holds it briefly: its reservation,
    /// else its previous address, else the requested one, else a free one
    /// (never-used addresses first, then expired or released ones).
    pub fn offer(
        &mut self,
        pool: usize,
        mac: MacAddr,
        requested: Option<Ipv4Addr>,
        now: u64,
    ) -> Option<Ipv4Addr> {
        let ip = self.choose(pool, mac, requested, now)?;
        if self.offers.len() > 4096 + self.by_ip.len() {
            self.offers.retain(|_, (_, until)| *until > now);
        }
        self.offers.insert(ip, (mac, now + OFFER_HOLD_SECS));
        Some(ip)
    }

    fn choose(
        &mut self,
        pool: usize,
        mac: MacAddr,
        requested: Option<Ipv4Addr>,
        now: u64,
    ) -> Option<Ipv4Addr> {
        if let Some(&fixed) = self.reservations.get(&mac) {
            return self.available_for(pool, fixed, mac, now).then_some(fixed);
        }
        if let Some((ip, _)) = self.binding_of(mac)
            && self.available_for(pool, ip, mac, now)
        {
            return Some(ip);
        }
        if let Some(ip) = requested
            && self.available_for(pool, ip, mac, now)
            && !self.by_ip.contains_key(&ip)
        {
            return Some(ip);
        }
        let start = u32::from(self.pools[pool].start);
        let size = self.pools[pool].size();
        // First pass: addresses nobody ever held. Second: reclaim expired/released.
        for reclaim in [false, true] {
            for _ in 0..size {
                let candidate = Ipv4Addr::from(start + self.cursors[pool] % size);
                self.cursors[pool] = (self.cursors[pool] + 1) % size;
                let fresh = !self.by_ip.contains_key(&candidate);
                if (fresh || reclaim) && self.available_for(pool, candidate, mac, now) {
                    return Some(candidate);
                }
            }
        }
        None
    }

    /// Forgets an offer the client turned down (it chose another server).
    pub fn drop_offer(&mut self, mac: MacAddr) {
        self.offers.retain(|_, (m, _)| *m != mac);
    }

    /// The record that leases `ip` to `mac` for `lease_secs`; apply it once durable.
    pub fn bind(&self, mac: MacAddr, ip: Ipv4Addr, now: u64, lease_secs: u64) -> Record {
        Record::Bind {
            mac,
            ip,
            expires: now + lease_secs,
        }
    }

    /// The record releasing `ip`, if it is leased to `mac`.
    pub fn release(&self, mac: MacAddr, ip: Ipv4Addr) -> Option<Record> {
        self.by_ip
            .get(&ip)
            .is_some_and(|b| b.mac == mac && !b.released)
            .then_some(Record::Release { mac, ip })
    }

    /// The record quarantining `ip` after `mac` declined it, if it was ours to give.
    pub fn decline(&self, mac: MacAddr, ip: Ipv4Addr, until: u64) -> Option<Record> {
        let ours = self.by_ip.get(&ip).is_some_and(|b| b.mac == mac)
            || self.offers.get(&ip).is_some_and(|&(m, _)| m == mac);
        ours.then_some(Record::Decline { ip, until })
    }

    /// Number of addresses with an active lease.
    pub fn active_count(&self, now: u64) -> usize {
        self.by_ip.values().filter(|b| b.active(now)).count()
    }
}

/// The append-only, fsync'd lease journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    lines: usize,
    live: usize,
}

impl Journal {
    /// Opens (creating) the journal in `dir`, replays it into `leases`, and
    /// rewrites it compactly.
    pub fn open(dir: &Path, leases: &mut Leases, now: u64) -> Result<Journal, Error> {
        let path = dir.join(FILE_NAME);
        let io_err = |source| Error::Leases {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        match File::open(&path) {
            Ok(file) => {
                let mut lines = BufReader::new(file).split(b'\n').peekable();
                let mut number = 0;
                while let Some(line) = lines.next() {
                    number += 1;
                    let line = line.map_err(io_err)?;
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    match serde_json::from_slice::<Record>(&line) {
                        Ok(record) => leases.apply(&record),
                        // A crash mid-append leaves a torn last line: that record was never acknowledged.
                        Err(_) if lines.peek().is_none() => {
                            tracing::warn!(path = %path.display(), line = number, "ignoring torn last lease record");
                        }
                        Err(e) => {
                            return Err(Error::LeaseRecord {
                                path: path.clone(),
                                line: number,
                                message: e.to_string(),
                            });
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        let records = leases.snapshot(now);
        let file = rewrite(&path, &records).map_err(io_err)?;
        Ok(Journal {
            path,
            file,
            lines: records.len(),
            live: records.len(),
        })
    }

    /// Rewrites the journal as `snapshot` (from [`Leases::snapshot`]), atomically and durably.
    pub fn compact(&mut self, snapshot: &[Record]) -> std::io::Result<()> {
        self.file = rewrite(&self.path, snapshot)?;
        self.lines = snapshot.len();
        self.live = snapshot.len();
        Ok(())
    }

    /// Appends `records` and makes them durable before returning.
    pub fn append(&mut self, records: &[Record]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.file.write_all(&encode(records))?;
        self.file.sync_data()?;
        self.lines += records.len();
        Ok(())
    }

    /// Whether the journal has grown enough past the live table to rewrite it.
    pub fn wants_compaction(&self, leases: &Leases) -> bool {
        self.lines > 4 * (self.live.max(leases.by_ip.len())) + 10_000
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes `records` to a temporary file, fsyncs it, renames it over `path`,
/// fsyncs the directory, and returns `path` opened for appending.
fn rewrite(path: &Path, records: &[Record]) -> std::io::Result<File> {
    let tmp = path.with_extension("jsonl.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&encode(records))?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    OpenOptions::new().append(true).open(path)
}

fn encode(records: &[Record]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(records.len() * 80);
    for r in records {
        // Serialising plain data into a Vec cannot fail.
        serde_json::to_writer(&mut buf, r).expect("lease record serialises");
        buf.push(b'\n');
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Pool {
        Pool::new(
            "10.0.0.0/24".parse().unwrap(),
            Ipv4Addr::new(10, 0, 0, 10),
            Ipv4Addr::new(10, 0, 0, 12),
        )
        .unwrap()
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    #[test]
    fn offers_distinct_addresses_and_runs_out() {
        let mut l = Leases::new(vec![pool()], HashMap::new());
        let a = l.offer(0, mac(1), None, 100).unwrap();
        let b = l.offer(0, mac(2), None, 100).unwrap();
        let c = l.offer(0, mac(3), None, 100).unwrap();
        assert_eq!(HashSet::from([a, b, c]).len(), 3);
        assert_eq!(l.offer(0, mac(4), None, 100), None);
        // Offers lapse; a lapsed one can go to someone else.
        assert!(
            l.offer(0, mac(4), None, 100 + OFFER_HOLD_SECS + 1)
                .is_some()
        );
    }

    #[test]
    fn same_client_gets_same_address_and_reservations_hold() {
        let mut reservations = HashMap::new();
        reservations.insert(mac(9), Ipv4Addr::new(10, 0, 0, 11));
        let mut l = Leases::new(vec![pool()], reservations);
        let a = l.offer(0, mac(1), None, 0).unwrap();
        assert_ne!(
            a,
            Ipv4Addr::new(10, 0, 0, 11),
            "reserved address given away"
        );
        l.apply(&l.bind(mac(1), a, 0, 3600));
        assert_eq!(l.offer(0, mac(1), None, 10), Some(a));
        assert_eq!(
            l.offer(0, mac(9), None, 10),
            Some(Ipv4Addr::new(10, 0, 0, 11))
        );
        // Requesting someone else's address does not get it.
        assert_ne!(l.offer(0, mac(2), Some(a), 10), Some(a));
    }

    #[test]
    fn declined_addresses_are_quarantined() {
        let mut l = Leases::new(vec![pool()], HashMap::new());
        let a = l.offer(0, mac(1), None, 0).unwrap();
        let rec = l.decline(mac(1), a, 600).unwrap();
        l.apply(&rec);
        for m in 2..10 {
            let got = l.offer(0, mac(m), None, 1);
            assert_ne!(got, Some(a));
        }
        assert!(l.available_for(0, a, mac(7), 601));
    }

    #[test]
    fn journal_survives_reopen_and_ignores_torn_tail() {
        let dir = std::env::temp_dir().join(format!("herd-leases-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut l = Leases::new(vec![pool()], HashMap::new());
        let mut j = Journal::open(&dir, &mut l, 0).unwrap();
        let a = l.offer(0, mac(1), None, 0).unwrap();
        let rec = l.bind(mac(1), a, 0, 3600);
        j.append(std::slice::from_ref(&rec)).unwrap();
        l.apply(&rec);
        let b = l.offer(0, mac(2), None, 0).unwrap();
        let rec2 = l.bind(mac(2), b, 0, 3600);
        j.append(std::slice::from_ref(&rec2)).unwrap();
        j.append(&[Record::Release { mac: mac(2), ip: b }]).unwrap();
        // A torn append.
        OpenOptions::new()
            .append(true)
            .open(j.path())
            .unwrap()
            .write_all(b"{\"op\":\"bi")
            .unwrap();
        drop(j);

        let mut l2 = Leases::new(vec![pool()], HashMap::new());
        let _j2 = Journal::open(&dir, &mut l2, 10).unwrap();
        assert_eq!(l2.binding_of(mac(1)).map(|(ip, _)| ip), Some(a));
        assert!(l2.binding_of(mac(2)).unwrap().1.released);
        assert_eq!(l2.active_count(10), 1);

        // Compaction keeps the same table in fewer lines.
        let mut j2 = _j2;
        for _ in 0..5 {
            j2.append(&[l2.bind(mac(1), a, 10, 3600)]).unwrap();
        }
        j2.compact(&l2.snapshot(10)).unwrap();
        let text = std::fs::read_to_string(j2.path()).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        drop(j2);
        let mut l3 = Leases::new(vec![pool()], HashMap::new());
        Journal::open(&dir, &mut l3, 10).unwrap();
        assert_eq!(l3.snapshot(10), l2.snapshot(10));

        // Garbage in the middle is an error that names the line.
        std::fs::write(
            dir.join(FILE_NAME),
            "nonsense\n{\"op\":\"decline\",\"ip\":\"10.0.0.10\",\"until\":5}\n",
        )
        .unwrap();
        let err =
            Journal::open(&dir, &mut Leases::new(vec![pool()], HashMap::new()), 0).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
