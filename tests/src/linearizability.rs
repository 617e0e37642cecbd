//! A Wing–Gong linearizability checker (with Lowe's memoisation, as in
//! Porcupine) for a key-value register model: put, get, delete and a
//! single-key compare-and-set transaction. Operations on different keys
//! commute, so the history is checked one key at a time (P-compositionality).

use std::collections::{HashMap, HashSet};

/// One client request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Input {
    Put {
        value: Vec<u8>,
    },
    Get,
    Delete,
    /// `txn: if value(key) == expected (None: key absent) then put(key, new)`.
    Cas {
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    },
}

/// What the client saw.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Output {
    Put,
    Get(Option<Vec<u8>>),
    /// Number of keys deleted (0 or 1).
    Delete(i64),
    Cas {
        succeeded: bool,
    },
}

/// A request with its invocation and response times (any monotonic clock).
/// `output: None` means the outcome is unknown (timeout, connection lost):
/// the operation may have taken effect at any time after its call, or never.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub client: usize,
    pub key: Vec<u8>,
    pub input: Input,
    pub call: u64,
    pub ret: u64,
    pub output: Option<Output>,
    /// Revisions the response carried (none for an unknown outcome).
    pub revisions: Option<Revisions>,
}

/// The revisions in a response, for the checks beyond values
/// (`robustness::check_revisions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revisions {
    /// The response header's revision: the store's revision the request saw
    /// (for a write, the revision it created).
    pub header: i64,
    /// A get that found the key: that value's mod revision. A write that
    /// changed the key (put, successful compare-and-set, delete of an
    /// existing key): the revision it wrote.
    pub key: Option<i64>,
}

/// The checker's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No valid order exists for this key's operations.
    Violation {
        key: Vec<u8>,
        operations: Vec<Operation>,
    },
    /// The search gave up after exploring `budget` states for this key.
    Undecided {
        key: Vec<u8>,
    },
}

type State = Option<Vec<u8>>;

/// Applies `input` to the register; returns the new state and what a client would see.
fn step(state: &State, input: &Input) -> (State, Output) {
    match input {
        Input::Put { value } => (Some(value.clone()), Output::Put),
        Input::Get => (state.clone(), Output::Get(state.clone())),
        Input::Delete => (None, Output::Delete(i64::from(state.is_some()))),
        Input::Cas { expected, new } => {
            if state == expected {
                (Some(new.clone()), Output::Cas { succeeded: true })
            } else {
                (state.clone(), Output::Cas { succeeded: false })
            }
        }
    }
}

/// Checks a whole history, key by key; `budget` bounds the states explored per key.
pub fn check(history: &[Operation], budget: usize) -> Verdict {
    let mut by_key: HashMap<&[u8], Vec<Operation>> = HashMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    let mut keys: Vec<_> = by_key.keys().copied().collect();
    keys.sort();
    for key in keys {
        let mut ops = by_key.remove(key).expect("key listed");
        ops.sort_by_key(|o| o.call);
        match check_key(&ops, budget) {
            Some(true) => {}
            Some(false) => {
                return Verdict::Violation {
                    key: key.to_vec(),
                    operations: ops,
                };
            }
            None => return Verdict::Undecided { key: key.to_vec() },
        }
    }
    Verdict::Linearizable
}

struct Search<'a> {
    ops: &'a [Operation],
    /// Unknown outcomes never constrain others: they "return" at the end of time.
    ret: Vec<u64>,
    must: usize,
    seen: HashSet<(Vec<u64>, State)>,
    budget: usize,
}

/// `Some(true)`: linearizable; `Some(false)`: not; `None`: budget exhausted.
fn check_key(ops: &[Operation], budget: usize) -> Option<bool> {
    let ret = ops
        .iter()
        .map(|o| if o.output.is_some() { o.ret } else { u64::MAX })
        .collect();
    let must = ops.iter().filter(|o| o.output.is_some()).count();
    let mut search = Search {
        ops,
        ret,
        must,
        seen: HashSet::new(),
        budget,
    };
    let mut done = vec![0u64; ops.len().div_ceil(64)];
    // Deep histories recurse deeply: run the search on a thread with room for it.
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn_scoped(s, || search.dfs(&mut done, &None, 0))
            .expect("spawning the checker thread")
            .join()
            .expect("checker thread panicked")
    })
}

impl Search<'_> {
    fn dfs(&mut self, done: &mut Vec<u64>, state: &State, linearized_known: usize) -> Option<bool> {
        if linearized_known == self.must {
            return Some(true);
        }
        if !self.seen.insert((done.clone(), state.clone())) {
            return Some(false);
        }
        if self.seen.len() > self.budget {
            return None;
        }
        let is_done = |d: &Vec<u64>, i: usize| d[i / 64] & (1 << (i % 64)) != 0;
        // An operation can go next only if it was called before every pending
        // operation returned.
        let horizon = (0..self.ops.len())
            .filter(|&i| !is_done(done, i))
            .map(|i| self.ret[i])
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..self.ops.len() {
            if is_done(done, i) {
                continue;
            }
            let op = &self.ops[i];
            if op.call > horizon {
                break;
            }
            let (next, out) = step(state, &op.input);
            if op.output.as_ref().is_some_and(|o| *o != out) {
                continue;
            }
            done[i / 64] |= 1 << (i % 64);
            let known = linearized_known + usize::from(op.output.is_some());
            let r = self.dfs(done, &next, known);
            done[i / 64] &= !(1 << (i % 64));
            match r {
                Some(true) => return Some(true),
                None => return None,
                Some(false) => {}
            }
        }
        Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, call: u64, ret: u64, input: Input, output: Option<Output>) -> Operation {
        Operation {
            client,
            key: b"k".to_vec(),
            input,
            call,
            ret,
            output,
            revisions: None,
        }
    }

    fn put(v: &str) -> Input {
        Input::Put {
            value: v.as_bytes().to_vec(),
        }
    }

    fn got(v: Option<&str>) -> Option<Output> {
        Some(Output::Get(v.map(|v| v.as_bytes().to_vec())))
    }

    #[test]
    fn accepts_concurrent_put_and_get_either_way() {
        let h = vec![
            op(0, 0, 10, put("a"), Some(Output::Put)),
            op(1, 5, 15, Input::Get, got(None)),
            op(2, 6, 16, Input::Get, got(Some("a"))),
        ];
        assert_eq!(check(&h, 10_000), Verdict::Linearizable);
    }

    #[test]
    fn rejects_a_stale_read_after_a_completed_write() {
        let h = vec![
            op(0, 0, 10, put("a"), Some(Output::Put)),
            op(0, 11, 20, put("b"), Some(Output::Put)),
            op(1, 21, 30, Input::Get, got(Some("a"))),
        ];
        assert!(matches!(check(&h, 10_000), Verdict::Violation { .. }));
    }

    #[test]
    fn rejects_a_value_read_back_after_it_was_overwritten_and_read() {
        // Reads of b then a, both after both writes completed: a is stale.
        let h = vec![
            op(0, 0, 10, put("a"), Some(Output::Put)),
            op(1, 0, 10, put("b"), Some(Output::Put)),
            op(2, 11, 12, Input::Get, got(Some("b"))),
            op(2, 13, 14, Input::Get, got(Some("a"))),
        ];
        assert!(matches!(check(&h, 10_000), Verdict::Violation { .. }));
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_have_happened() {
        let lost = vec![
            op(0, 0, 10, put("a"), None),
            op(1, 20, 30, Input::Get, got(None)),
        ];
        assert_eq!(check(&lost, 10_000), Verdict::Linearizable);
        let late = vec![
            op(0, 0, 10, put("a"), None),
            op(1, 20, 30, Input::Get, got(None)),
            op(1, 40, 50, Input::Get, got(Some("a"))),
        ];
        assert_eq!(check(&late, 10_000), Verdict::Linearizable);
        // But once seen, it cannot un-happen.
        let flicker = vec![
            op(0, 0, 10, put("a"), None),
            op(1, 20, 30, Input::Get, got(Some("a"))),
            op(1, 40, 50, Input::Get, got(None)),
        ];
        assert!(matches!(check(&flicker, 10_000), Verdict::Violation { .. }));
    }

    #[test]
    fn cas_and_delete_follow_the_register() {
        let ok = vec![
            op(0, 0, 1, put("a"), Some(Output::Put)),
            op(
                0,
                2,
                3,
                Input::Cas {
                    expected: Some(b"a".to_vec()),
                    new: b"b".to_vec(),
                },
                Some(Output::Cas { succeeded: true }),
            ),
            op(1, 4, 5, Input::Delete, Some(Output::Delete(1))),
            op(
                1,
                6,
                7,
                Input::Cas {
                    expected: None,
                    new: b"c".to_vec(),
                },
                Some(Output::Cas { succeeded: true }),
            ),
            op(0, 8, 9, Input::Get, got(Some("c"))),
        ];
        assert_eq!(check(&ok, 10_000), Verdict::Linearizable);
        let double_win = vec![
            op(0, 0, 1, put("a"), Some(Output::Put)),
            op(
                1,
                2,
                5,
                Input::Cas {
                    expected: Some(b"a".to_vec()),
                    new: b"b".to_vec(),
                },
                Some(Output::Cas { succeeded: true }),
            ),
            op(
                2,
                2,
                5,
                Input::Cas {
                    expected: Some(b"a".to_vec()),
                    new: b"c".to_vec(),
                },
                Some(Output::Cas { succeeded: true }),
            ),
        ];
        assert!(matches!(
            check(&double_win, 10_000),
            Verdict::Violation { .. }
        ));
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut h = vec![op(0, 0, 10, put("a"), Some(Output::Put))];
        let mut other = op(1, 0, 10, Input::Get, got(None));
        other.key = b"other".to_vec();
        h.push(other);
        assert_eq!(check(&h, 10_000), Verdict::Linearizable);
    }

    #[test]
    fn many_concurrent_clients_finish_quickly() {
        // 8 clients, 200 rounds of overlapping puts of unique values and reads.
        let mut h = Vec::new();
        let mut last = None;
        for round in 0..200u64 {
            let t = round * 100;
            for c in 0..4 {
                h.push(op(
                    c,
                    t,
                    t + 50,
                    put(&format!("{round}-{c}")),
                    Some(Output::Put),
                ));
            }
            // Reads strictly after the round see one of its writes.
            let v = format!("{round}-3");
            h.push(op(9, t + 60, t + 70, Input::Get, got(Some(&v))));
            last = Some(v);
        }
        assert!(last.is_some());
        assert_eq!(check(&h, 1_000_000), Verdict::Linearizable);
    }
}
