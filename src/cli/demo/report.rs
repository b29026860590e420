//! The demo's figures: the summary table, the JSON file and the SVG plot of throughput and
//! acknowledgement latency over time, marking the kill and the failover.

use std::path::Path;

use serde_json::{Value, json};

use super::super::CliError;
use super::check::quantile;
use super::load::Ack;

/// One check and how it went.
#[derive(Debug, Clone)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// The figures behind it, or what went wrong.
    pub detail: String,
}

/// Everything the summary says.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// The failover path used (`operator-promote` or `etcd`).
    pub path: String,
    /// The leadership lease asked of etcd (etcd path), milliseconds.
    pub lease_ms: Option<u64>,
    /// The lease etcd granted the leader before the kill (etcd path; etcd counts in whole
    /// seconds, at least 1.5 election timeouts), milliseconds.
    pub lease_granted_ms: Option<u64>,
    /// Partitions of the demo topic.
    pub partitions: u32,
    /// Producer threads.
    pub producers: usize,
    /// Seconds of production asked for (`--seconds`).
    pub seconds: f64,
    /// Records sent, acknowledged (`acks=all`), consumed (distinct), in the final log
    /// (distinct), and the records lost: acknowledged but absent from the log.
    pub records_sent: u64,
    /// Records acknowledged.
    pub records_acked: u64,
    /// Distinct records the consumer group printed.
    pub records_consumed: u64,
    /// Acknowledged records the consumer group never printed.
    pub records_not_consumed: u64,
    /// Records read back from the final leader's log below its high watermark, each checked.
    pub records_checked: u64,
    /// Acknowledged records absent from the final log.
    pub records_lost: u64,
    /// Records found corrupt (in the log or as consumed).
    pub records_corrupt: u64,
    /// Records stored more than once (a batch sent again after a failover: at least once).
    pub records_duplicated: u64,
    /// Seconds from the first to the last acknowledgement, and records acknowledged per
    /// second over them.
    pub throughput: f64,
    /// Acknowledgement latency quantiles, milliseconds.
    pub latency_ms: [f64; 3],
    /// From the kill of the leader to the first write acknowledged by the new one (etcd
    /// path: the first write acknowledged on a partition the killed node led).
    pub failover_ms: Option<f64>,
    /// From the kill to the answer of `promote` (operator path).
    pub promote_ms: Option<f64>,
    /// From the kill to the demo seeing a new leader, named by etcd and leading, of every
    /// unit the killed node led (etcd path; etcd and status are polled, so this is an upper
    /// bound, which may come after the first acknowledged write).
    pub elected_ms: Option<f64>,
    /// Elections besides the failover and the handovers back (etcd path: a lease that lapsed
    /// under load; the demo follows the new leaders), counted from the epochs etcd holds.
    pub unplanned_elections: u64,
    /// The node SIGKILLed (etcd path: the one leading the most partitions).
    pub killed_node: Option<String>,
    /// The units it led (`topic/partition`; etcd path).
    pub killed_units: Vec<String>,
    /// Per partition it led: from the kill to the first write acknowledged on it (etcd path).
    pub failover_partition_ms: Vec<(String, f64)>,
    /// From the restart of the killed node to every partition led by its preferred leader
    /// again, the node's back included (etcd path).
    pub rebalanced_ms: Option<f64>,
    /// Each partition's leader at the end (etcd path).
    pub leaders_at_end: Vec<(String, String)>,
    /// Seconds since the load started of the kill.
    pub kill_at: Option<f64>,
    /// Seconds since the load started of the first acknowledgement after the kill.
    pub failover_at: Option<f64>,
    /// Seconds since the load started of the snapshot's request.
    pub snapshot_at: Option<f64>,
    /// Records of the demo topic in the snapshot.
    pub snapshot_records: u64,
    /// Consumer processes restarted because one exited early.
    pub consumer_restarts: u64,
    /// Wall-clock seconds of the whole demo.
    pub elapsed: f64,
    /// Every check.
    pub checks: Vec<Check>,
}

impl Figures {
    /// Throughput and latency quantiles from the acknowledgements.
    pub fn add_acks(&mut self, acks: &[Ack]) {
        let mut lat: Vec<u64> = acks.iter().map(|a| a.latency_us).collect();
        lat.sort_unstable();
        self.latency_ms = [0.5, 0.99, 0.999].map(|q| quantile(&lat, q) as f64 / 1000.0);
        let records: u64 = acks.iter().map(|a| u64::from(a.records)).sum();
        if let (Some(first), Some(last)) = (acks.first(), acks.last()) {
            let span = (last.at - first.at).max(1e-3);
            self.throughput = records as f64 / span;
        }
    }

    /// True if every check held.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The figures as JSON (numbers as numbers).
    pub fn to_json(&self) -> Value {
        json!({
            "passed": self.passed(),
            "failover_path": self.path,
            "lease_ms": self.lease_ms,
            "lease_granted_ms": self.lease_granted_ms,
            "partitions": self.partitions,
            "producers": self.producers,
            "seconds": self.seconds,
            "elapsed_seconds": self.elapsed,
            "records_sent": self.records_sent,
            "records_acked": self.records_acked,
            "records_consumed": self.records_consumed,
            "records_not_consumed": self.records_not_consumed,
            "records_checked": self.records_checked,
            "records_lost": self.records_lost,
            "records_corrupt": self.records_corrupt,
            "records_duplicated": self.records_duplicated,
            "throughput_records_per_sec": self.throughput,
            "ack_latency_ms": {
                "p50": self.latency_ms[0],
                "p99": self.latency_ms[1],
                "p999": self.latency_ms[2],
            },
            "failover_ms": self.failover_ms,
            "promote_ms": self.promote_ms,
            "elected_ms": self.elected_ms,
            "unplanned_elections": self.unplanned_elections,
            "killed_node": self.killed_node,
            "killed_partitions": self.killed_units,
            "failover_partition_ms": self.failover_partition_ms.iter()
                .map(|(p, ms)| (p.clone(), json!(ms)))
                .collect::<serde_json::Map<String, Value>>(),
            "rebalanced_ms": self.rebalanced_ms,
            "leaders_at_end": self.leaders_at_end.iter()
                .map(|(p, n)| (p.clone(), json!(n)))
                .collect::<serde_json::Map<String, Value>>(),
            "snapshot_records": self.snapshot_records,
            "consumer_restarts": self.consumer_restarts,
            "checks": self.checks.iter().map(|c| json!({
                "name": c.name,
                "passed": c.passed,
                "detail": c.detail,
            })).collect::<Vec<_>>(),
        })
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} ms"));
        let mut rows: Vec<(String, String)> = vec![
            (
                "failover path".into(),
                match self.lease_ms {
                    Some(lease) => format!(
                        "{} (a leader per partition; {} SIGKILLed, not promoted; lease {lease} \
                         ms asked, {} granted)",
                        self.path,
                        self.killed_node.as_deref().unwrap_or("the leader"),
                        ms(self.lease_granted_ms.map(|g| g as f64))
                    ),
                    None => format!("{} (leader SIGKILLed)", self.path),
                },
            ),
            ("records sent".into(), self.records_sent.to_string()),
            (
                "records acknowledged (acks=all)".into(),
                self.records_acked.to_string(),
            ),
            (
                "throughput (acknowledged)".into(),
                format!("{:.0} records/s", self.throughput),
            ),
            (
                "ack latency p50 / p99 / p99.9".into(),
                format!(
                    "{:.1} / {:.1} / {:.1} ms",
                    self.latency_ms[0], self.latency_ms[1], self.latency_ms[2]
                ),
            ),
            (
                "failover: kill to first acknowledged write".into(),
                ms(self.failover_ms),
            ),
            if self.lease_ms.is_some() {
                (
                    "  of which: kill to new leaders of all its partitions".into(),
                    ms(self.elected_ms),
                )
            } else {
                (
                    "  of which: kill to promote answered".into(),
                    ms(self.promote_ms),
                )
            },
            (
                "records consumed by the group (distinct)".into(),
                self.records_consumed.to_string(),
            ),
            (
                "records checked (final log, below the high watermark)".into(),
                self.records_checked.to_string(),
            ),
            (
                "records stored twice (sent again in the failover)".into(),
                self.records_duplicated.to_string(),
            ),
            ("records corrupt".into(), self.records_corrupt.to_string()),
            (
                "consumer processes restarted (the group resumed)".into(),
                self.consumer_restarts.to_string(),
            ),
            (
                "acknowledged records not consumed".into(),
                self.records_not_consumed.to_string(),
            ),
            ("records lost".into(), self.records_lost.to_string()),
        ];
        if self.lease_ms.is_some() {
            let firsts: Vec<String> = self
                .failover_partition_ms
                .iter()
                .map(|(p, v)| format!("{p} {v:.0} ms"))
                .collect();
            rows.insert(
                7,
                (
                    "  per partition it led".into(),
                    if firsts.is_empty() {
                        "-".into()
                    } else {
                        firsts.join(", ")
                    },
                ),
            );
            rows.insert(
                1,
                (
                    "killed node led".into(),
                    if self.killed_units.is_empty() {
                        "-".into()
                    } else {
                        self.killed_units.join(" ")
                    },
                ),
            );
            rows.push((
                "restart to its partitions back (handover)".into(),
                ms(self.rebalanced_ms),
            ));
            rows.push((
                "elections besides the failover and handovers".into(),
                self.unplanned_elections.to_string(),
            ));
        }
        rows.push(("demo took".into(), format!("{:.1} s", self.elapsed)));
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            out.push_str(&format!("  {k:<width$}  {v}\n"));
        }
        out.push('\n');
        for c in &self.checks {
            out.push_str(&format!(
                "  [{}] {}: {}\n",
                if c.passed { " ok " } else { "FAIL" },
                c.name,
                c.detail
            ));
        }
        out
    }
}

/// Per time bucket: its middle (seconds), records acknowledged per second, p50 and p99 of the
/// acknowledgement latency (ms; `None` for a bucket with no acknowledgement).
pub type Bucket = (f64, f64, Option<(f64, f64)>);

/// The acknowledgements in buckets of `width` seconds, from 0 to the last one.
pub fn buckets(acks: &[Ack], width: f64) -> Vec<Bucket> {
    let end = acks.iter().map(|a| a.at).fold(0.0, f64::max);
    let n = (end / width).floor() as usize + 1;
    let mut lat: Vec<Vec<u64>> = vec![Vec::new(); n];
    let mut records = vec![0u64; n];
    for a in acks {
        let i = ((a.at / width).floor() as usize).min(n - 1);
        lat[i].push(a.latency_us);
        records[i] += u64::from(a.records);
    }
    (0..n)
        .map(|i| {
            lat[i].sort_unstable();
            let q = (!lat[i].is_empty()).then(|| {
                (
                    quantile(&lat[i], 0.5) as f64 / 1000.0,
                    quantile(&lat[i], 0.99) as f64 / 1000.0,
                )
            });
            ((i as f64 + 0.5) * width, records[i] as f64 / width, q)
        })
        .collect()
}

/// The plot: throughput over time above, latency p50 and p99 over time below, with vertical
/// lines at the kill, the failover and the snapshot's stop.
pub fn write_svg(path: &Path, acks: &[Ack], f: &Figures) -> Result<(), CliError> {
    use plotters::prelude::*;

    let b = buckets(acks, 0.5);
    let x_max = b.last().map_or(1.0, |x| x.0 + 0.5);
    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(320);
    let marks: Vec<(&str, f64, RGBColor)> = [
        ("leader killed", f.kill_at, RED),
        ("first ack after failover", f.failover_at, GREEN),
        ("snapshot taken", f.snapshot_at, MAGENTA),
    ]
    .into_iter()
    .filter_map(|(l, t, c)| t.map(|t| (l, t, c)))
    .collect();

    let top = b.iter().map(|x| x.1).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&upper)
        .caption(
            "records acknowledged per second (acks=all, 0.5 s buckets)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..top)?;
    chart.configure_mesh().x_desc("seconds").draw()?;
    chart.draw_series(LineSeries::new(b.iter().map(|x| (x.0, x.1)), &BLUE))?;
    for (label, t, color) in &marks {
        let color = *color;
        chart
            .draw_series(LineSeries::new([(*t, 0.0), (*t, top)], &color))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let top = b
        .iter()
        .filter_map(|x| x.2.map(|q| q.1))
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&lower)
        .caption(
            "acknowledgement latency (ms), p50 and p99 per bucket",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..top)?;
    chart.configure_mesh().x_desc("seconds").draw()?;
    for (label, pick, color) in [("p50", 0usize, GREEN), ("p99", 1, RED)] {
        chart
            .draw_series(LineSeries::new(
                b.iter()
                    .filter_map(|x| x.2.map(|q| (x.0, if pick == 0 { q.0 } else { q.1 }))),
                &color,
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
    }
    for (_, t, color) in &marks {
        chart.draw_series(LineSeries::new([(*t, 0.0), (*t, top)], color))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
