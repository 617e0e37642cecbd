//! The benchmark's tables: medians over rounds per workload and system,
//! ratios against the reference system (the last one, etcd) with their
//! range across rounds, failed requests, the members' CPU time and context
//! switches per request, and memory and disk per member.

use std::fmt::Write;

use super::Placement;
use super::load::{ClientKind, Measured, Op};

/// One workload: where, with which client, what, how many clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    pub placement: Placement,
    pub client: ClientKind,
    pub op: Op,
    pub clients: usize,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            Op::Put => "put",
            Op::Get => "linearizable get",
        };
        write!(
            f,
            "{op}, {} client{}, {}, {}",
            self.clients,
            if self.clients == 1 { "" } else { "s" },
            self.client,
            self.placement
        )
    }
}

/// What one cluster produced in one round.
#[derive(Debug, Clone)]
pub enum Sample {
    Run {
        system: String,
        workload: Workload,
        measured: Measured,
    },
    Footprint {
        system: String,
        rss_kib: Vec<u64>,
        disk_bytes: Vec<u64>,
    },
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn runs<'a>(samples: &'a [Sample], system: &str, w: &Workload) -> Vec<&'a Measured> {
    samples
        .iter()
        .filter_map(|s| match s {
            Sample::Run {
                system: s,
                workload,
                measured,
            } if s == system && workload == w => Some(measured),
            _ => None,
        })
        .collect()
}

/// The report, as Markdown tables. `labels`: the systems, reference last.
pub fn render(labels: &[String], samples: &[Sample], rounds: usize) -> String {
    let mut out = String::new();
    let reference = labels.last().filter(|_| labels.len() > 1);
    let mut workloads: Vec<Workload> = Vec::new();
    for s in samples {
        if let Sample::Run { workload, .. } = s
            && !workloads.contains(workload)
        {
            workloads.push(*workload);
        }
    }
    let _ = writeln!(
        out,
        "Medians of {rounds} round(s); ratio = ops/s against {} (median, min–max over rounds).\n",
        reference.map_or("-", |r| r.as_str())
    );
    let mut header = vec!["workload".to_owned()];
    for l in labels {
        header.extend([
            format!("{l} ops/s"),
            format!("{l} p50 ms"),
            format!("{l} p99 ms"),
            format!("{l} failed"),
            format!("{l} CPU µs/op"),
            format!("{l} ctx sw/op"),
        ]);
    }
    if let Some(r) = reference {
        for l in &labels[..labels.len() - 1] {
            header.push(format!("{l}/{r}"));
        }
    }
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
    for w in &workloads {
        let mut cells = vec![w.to_string()];
        for l in labels {
            let r = runs(samples, l, w);
            let ms = |f: fn(&Measured) -> std::time::Duration| {
                median(r.iter().map(|m| f(m).as_secs_f64() * 1000.0).collect())
            };
            cells.extend([
                format!("{:.0}", median(r.iter().map(|m| m.per_sec()).collect())),
                format!("{:.2}", ms(|m| m.p50)),
                format!("{:.2}", ms(|m| m.p99)),
                r.iter().map(|m| m.errors).sum::<usize>().to_string(),
                format!(
                    "{:.0}",
                    median(r.iter().map(|m| m.cpu_us_per_op()).collect())
                ),
                format!(
                    "{:.1}",
                    median(r.iter().map(|m| m.switches_per_op()).collect())
                ),
            ]);
        }
        if let Some(reference) = reference {
            let base = runs(samples, reference, w);
            for l in &labels[..labels.len() - 1] {
                // Round by round: the two clusters of one round ran back to back.
                let ratios: Vec<f64> = runs(samples, l, w)
                    .iter()
                    .zip(&base)
                    .map(|(a, b)| a.per_sec() / b.per_sec())
                    .collect();
                let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                cells.push(format!("{:.2}x ({lo:.2}–{hi:.2})", median(ratios)));
            }
        }
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    let _ = writeln!(
        out,
        "\n| after the same workload | {} |\n|---|{}",
        labels.join(" | "),
        "---|".repeat(labels.len())
    );
    let footprint = |l: &str, pick: fn(&Sample) -> Option<Vec<u64>>, unit: f64| -> String {
        samples
            .iter()
            .filter(|s| matches!(s, Sample::Footprint { system, .. } if system == l))
            .filter_map(pick)
            .map(|per_member| {
                per_member
                    .iter()
                    .map(|v| format!("{:.0}", *v as f64 / unit))
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let rss: Vec<String> = labels
        .iter()
        .map(|l| {
            footprint(
                l,
                |s| match s {
                    Sample::Footprint { rss_kib, .. } => Some(rss_kib.clone()),
                    _ => None,
                },
                1024.0,
            )
        })
        .collect();
    let disk: Vec<String> = labels
        .iter()
        .map(|l| {
            footprint(
                l,
                |s| match s {
                    Sample::Footprint { disk_bytes, .. } => Some(disk_bytes.clone()),
                    _ => None,
                },
                1024.0 * 1024.0,
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "| RSS per member, MiB (each round) | {} |",
        rss.join(" | ")
    );
    let _ = writeln!(
        out,
        "| disk per member, MiB (each round) | {} |",
        disk.join(" | ")
    );
    out
}
