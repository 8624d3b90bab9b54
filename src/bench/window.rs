//! The measured window of a run: what the server under test (and this load generator) spent in
//! it, and what the server's own latency histograms saw.
//!
//! Implements: CPU time (user + system, every thread) of the processes `--server-pid` names and
//! of this process, from fields 14 (`utime`) and 15 (`stime`) of `/proc/PID/stat` (proc(5)), in
//! clock ticks (`sysconf(_SC_CLK_TCK)`, 100 per second on Linux); and, with `--server-metrics`,
//! the change in pushwire's Prometheus histograms `pushwire_delivery_write_seconds` and
//! `pushwire_fanout_last_write_seconds` over the window, read in the text exposition format
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format>), with
//! p50 and p99 estimated from the bucket counts as Prometheus' `histogram_quantile` does
//! (linear within the bucket the rank falls in; the highest finite bound if it falls in `+Inf`).
//!
//! A mode samples once when its window opens (echo: before the first send; fan-out: before the
//! first publish, after every subscriber is ready) and once when it closes (echo: the last echo
//! back or the drain's end; fan-out: every subscriber has every message or timed out), before
//! any closing handshake. The `/metrics` requests are made outside the CPU window (read before
//! the first CPU sample and after the second), so they are not counted as the server's work.
//!
//! Does not: see a server's child processes unless each is named (nginx: the master and every
//! worker), count CPU of threads that exited during the window, or resolve below one tick
//! (10 ms): CPU figures of runs shorter than a few hundred milliseconds of server CPU are coarse.

use std::time::Instant;

use super::publisher::get;
use super::report::Report;
use super::url::Url;

/// The histograms read from `--server-metrics`: the name in `/metrics`, then the reported
/// fields: observations in the window, p50 and p99 (microseconds).
const HISTOGRAMS: [(&str, [&str; 3]); 2] = [
    (
        "pushwire_delivery_write_seconds",
        ["server_delivery_writes", "server_delivery_write_p50_us", "server_delivery_write_p99_us"],
    ),
    (
        "pushwire_fanout_last_write_seconds",
        ["server_fanouts", "server_fanout_last_write_p50_us", "server_fanout_last_write_p99_us"],
    ),
];

/// Options that name the server under test, shared by `echo` and `fanout`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerOptions {
    /// A process of the server under test, whose CPU time over the measured window is reported
    /// (repeat for servers of several processes, e.g. nginx's master and workers).
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pids: Vec<u32>,
    /// pushwire's /metrics URL: the server-side delivery latency histograms are read before and
    /// after the measured window, and their p50/p99 over the window reported.
    #[arg(long, value_name = "URL")]
    pub server_metrics: Option<String>,
}

/// One sample, taken when the window opens or closes.
#[derive(Debug, Clone)]
pub struct Sample {
    at: Instant,
    server_ticks: u64,
    client_ticks: u64,
    /// Per entry of [`HISTOGRAMS`]: cumulative counts by upper bound (seconds).
    histograms: Vec<Vec<(f64, u64)>>,
}

/// What a window measured, ready to be added to a report.
#[derive(Debug, Clone)]
pub struct Window {
    options: ServerOptions,
    metrics: Option<Url>,
    ticks_per_s: f64,
}

impl Window {
    /// Checks the options: every PID readable, the metrics URL parsed.
    pub fn new(options: &ServerOptions) -> Result<Window, String> {
        for &pid in &options.server_pids {
            process_cpu_ticks(pid)?;
        }
        let metrics = options.server_metrics.as_deref().map(Url::parse).transpose()?;
        Ok(Window {
            options: options.clone(),
            metrics,
            ticks_per_s: rustix::param::clock_ticks_per_second() as f64,
        })
    }

    /// Samples when the window opens: `/metrics` first, then CPU.
    pub fn open(&self) -> Result<Sample, String> {
        let histograms = self.read_histograms()?;
        let (server_ticks, client_ticks) = self.cpu_ticks()?;
        Ok(Sample { at: Instant::now(), server_ticks, client_ticks, histograms })
    }

    /// Samples when the window closes: CPU first, then `/metrics`.
    pub fn close(&self) -> Result<Sample, String> {
        let at = Instant::now();
        let (server_ticks, client_ticks) = self.cpu_ticks()?;
        let histograms = self.read_histograms()?;
        Ok(Sample { at, server_ticks, client_ticks, histograms })
    }

    /// Adds the window's figures to `report`: `window_s`, `client_cpu_s`; with server PIDs
    /// `server_cpu_s` and `server_cpu_s_per_million_{unit}` (`units` messages or deliveries in
    /// the window); with metrics, each histogram's count, p50 and p99 over the window.
    pub fn report(&self, opened: &Sample, closed: &Sample, units: u64, unit: &str, report: &mut Report) {
        let window_s = closed.at.saturating_duration_since(opened.at).as_secs_f64();
        report.real("window_s", window_s);
        let client_cpu_s = closed.client_ticks.saturating_sub(opened.client_ticks) as f64 / self.ticks_per_s;
        report.real("client_cpu_s", client_cpu_s);
        if !self.options.server_pids.is_empty() {
            let server_cpu_s =
                closed.server_ticks.saturating_sub(opened.server_ticks) as f64 / self.ticks_per_s;
            report.real("server_cpu_s", server_cpu_s);
            let per_million = if units > 0 { server_cpu_s * 1e6 / units as f64 } else { f64::NAN };
            let name = if unit == "messages" {
                "server_cpu_s_per_million_messages"
            } else {
                "server_cpu_s_per_million_deliveries"
            };
            report.real(name, per_million);
        }
        if self.metrics.is_none() {
            return;
        }
        for (i, (_, [count_name, p50_name, p99_name])) in HISTOGRAMS.iter().enumerate() {
            let delta = bucket_delta(&opened.histograms[i], &closed.histograms[i]);
            let count = delta.last().map_or(0, |&(_, n)| n);
            report.count(count_name, count);
            for (name, q) in [(*p50_name, 0.5), (*p99_name, 0.99)] {
                match quantile_seconds(&delta, q) {
                    Some(s) => report.count(name, (s * 1e6).round() as u64),
                    None => report.real(name, f64::NAN),
                }
            }
        }
    }

    fn cpu_ticks(&self) -> Result<(u64, u64), String> {
        let mut server = 0;
        for &pid in &self.options.server_pids {
            server += process_cpu_ticks(pid)?;
        }
        Ok((server, process_cpu_ticks(std::process::id())?))
    }

    fn read_histograms(&self) -> Result<Vec<Vec<(f64, u64)>>, String> {
        let Some(url) = &self.metrics else {
            return Ok(vec![Vec::new(); HISTOGRAMS.len()]);
        };
        let body = get(url)?;
        let text = String::from_utf8_lossy(&body);
        Ok(HISTOGRAMS.iter().map(|(name, _)| histogram_buckets(&text, name)).collect())
    }
}

/// User + system CPU of process `pid` so far, in clock ticks.
pub fn process_cpu_ticks(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    stat_cpu_ticks(&text).ok_or_else(|| format!("unreadable {path}: {text:?}"))
}

/// `utime + stime` (fields 14 and 15) of a `/proc/PID/stat` line. The command name (field 2)
/// is in parentheses and may itself hold spaces and parentheses, so fields are counted from
/// the last `)`.
pub fn stat_cpu_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards: utime is the 12th of them, stime the 13th.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The cumulative buckets of histogram `name` in a text exposition: (upper bound in seconds,
/// count), in the order given, `+Inf` as infinity. Empty if the histogram is absent.
pub fn histogram_buckets(text: &str, name: &str) -> Vec<(f64, u64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (le, rest) = rest.split_once("\"}")?;
            let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((bound, rest.trim().parse().ok()?))
        })
        .collect()
}

/// The observations between two readings of the same histogram, bucket by bucket (still
/// cumulative). A histogram absent from the first reading (no observation yet) counts as zero.
pub fn bucket_delta(before: &[(f64, u64)], after: &[(f64, u64)]) -> Vec<(f64, u64)> {
    after
        .iter()
        .map(|&(bound, n)| {
            let earlier = before.iter().find(|(b, _)| *b == bound).map_or(0, |&(_, n)| n);
            (bound, n.saturating_sub(earlier))
        })
        .collect()
}

/// The `q` quantile (0..=1) of cumulative `buckets`, in seconds, as Prometheus'
/// `histogram_quantile` estimates it; None when there are no observations.
pub fn quantile_seconds(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for &(upper, cumulative) in buckets {
        if cumulative as f64 >= rank && cumulative > below {
            if upper.is_infinite() {
                return Some(lower);
            }
            let within = (rank - below as f64) / (cumulative - below) as f64;
            return Some(lower + (upper - lower) * within);
        }
        (lower, below) = (upper, cumulative);
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_5_stat_cpu_is_utime_plus_stime_counted_after_the_name() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 3 0";
        assert_eq!(stat_cpu_ticks(line), Some(281));
        assert_eq!(stat_cpu_ticks("12 (short) S 1"), None);
        assert!(process_cpu_ticks(std::process::id()).is_ok());
    }

    #[test]
    fn exposition_histogram_buckets_delta_and_quantiles() {
        let before = "# TYPE pushwire_x_seconds histogram\n\
            pushwire_x_seconds_bucket{le=\"0.0001\"} 10\n\
            pushwire_x_seconds_bucket{le=\"0.001\"} 10\n\
            pushwire_x_seconds_bucket{le=\"+Inf\"} 10\n\
            pushwire_x_seconds_count 10\n";
        let after = "pushwire_x_seconds_bucket{le=\"0.0001\"} 10\n\
            pushwire_x_seconds_bucket{le=\"0.001\"} 110\n\
            pushwire_x_seconds_bucket{le=\"+Inf\"} 112\n\
            pushwire_other_seconds_bucket{le=\"0.0001\"} 5\n";
        let delta = bucket_delta(
            &histogram_buckets(before, "pushwire_x_seconds"),
            &histogram_buckets(after, "pushwire_x_seconds"),
        );
        assert_eq!(delta, vec![(0.0001, 0), (0.001, 100), (f64::INFINITY, 102)]);
        // Rank 51 of 102 is the 51st of the 100 in the (0.1 ms, 1 ms] bucket.
        let p50 = quantile_seconds(&delta, 0.5).unwrap();
        assert!((p50 - (0.0001 + 0.0009 * 0.51)).abs() < 1e-12, "{p50}");
        // Rank 100.98 falls in +Inf: the highest finite bound.
        assert_eq!(quantile_seconds(&delta, 0.99), Some(0.001));
        // Rank 1 of 4 in the first bucket: a quarter of the way up from zero.
        let first = quantile_seconds(&[(0.0001, 4), (f64::INFINITY, 4)], 0.25).unwrap();
        assert!((first - 0.000025).abs() < 1e-12, "{first}");
        assert_eq!(quantile_seconds(&[(0.1, 0), (f64::INFINITY, 0)], 0.5), None);
        assert!(histogram_buckets(after, "pushwire_absent_seconds").is_empty());
    }
}
