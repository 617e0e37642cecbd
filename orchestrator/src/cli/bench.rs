//! `herd bench kv` arguments; the benchmark itself lives in `crate::bench`.

pub use crate::bench::{KvBenchArgs, run};
