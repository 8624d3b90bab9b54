//! A latency histogram of fixed size: exact below 1,024 µs, within 0.2 % above.
//!
//! Implements: recording microsecond samples and reading percentiles by nearest rank, in the
//! manner of HdrHistogram (buckets of equal relative width), so a run of any length keeps the
//! same few hundred kilobytes however many messages it measures.
//!
//! Does not: interpolate between buckets (a percentile reads the lowest value of its bucket);
//! the maximum is kept exactly apart from the buckets.

/// Values below this are counted exactly, one bucket per microsecond.
const LINEAR_US: u64 = 1024;
/// Buckets per power of two above [`LINEAR_US`]: the relative width of a bucket is 1/512.
const SUB_BUCKETS: u64 = 512;
/// Powers of two covered above [`LINEAR_US`]: up to 2^40 µs (about 12 days).
const OCTAVES: u64 = 30;

/// Counts of microsecond samples.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram (about 130 KiB of counters).
    pub fn new() -> Histogram {
        Histogram { counts: vec![0; (LINEAR_US + OCTAVES * SUB_BUCKETS) as usize], total: 0, max_us: 0 }
    }

    /// Records one sample, in microseconds; values beyond the range land in the last bucket.
    pub fn record(&mut self, us: u64) {
        let index = bucket_of(us).min(self.counts.len() - 1);
        self.counts[index] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// How many samples were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest sample, in microseconds (0 when empty).
    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// The `percent` percentile by nearest rank, in microseconds (0 when empty).
    pub fn percentile_us(&self, percent: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((percent / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return lowest_of(index as u64).min(self.max_us);
            }
        }
        self.max_us
    }
}

/// The bucket of a value: itself below [`LINEAR_US`], else its octave and its top 9 bits.
fn bucket_of(us: u64) -> usize {
    if us < LINEAR_US {
        return us as usize;
    }
    let octave = u64::from(63 - us.leading_zeros()) - 10; // 0 for 1024..2047
    let sub = (us >> (octave + 1)) - SUB_BUCKETS; // the 9 bits after the leading one
    (LINEAR_US + octave * SUB_BUCKETS + sub) as usize
}

/// The lowest value that falls into bucket `index`.
fn lowest_of(index: u64) -> u64 {
    if index < LINEAR_US {
        return index;
    }
    let octave = (index - LINEAR_US) / SUB_BUCKETS;
    let sub = (index - LINEAR_US) % SUB_BUCKETS;
    (SUB_BUCKETS + sub) << (octave + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_shares_is_exactly_recording_everything_in_one() {
        // The samples of a multi-threaded run, dealt to 3 threads' histograms round-robin.
        let samples: Vec<u64> = (0..10_000u64).map(|i| (i * 7919) % 5_000_000 + i % 3).collect();
        let mut whole = Histogram::new();
        let mut shares = [Histogram::new(), Histogram::new(), Histogram::new()];
        for (i, &us) in samples.iter().enumerate() {
            whole.record(us);
            shares[i % 3].record(us);
        }
        let mut merged = Histogram::new();
        for share in &shares {
            merged.merge(share);
        }
        assert_eq!(merged.counts, whole.counts);
        assert_eq!((merged.count(), merged.max_us()), (whole.count(), whole.max_us()));
        for p in [50.0, 90.0, 99.0, 99.9, 100.0] {
            assert_eq!(merged.percentile_us(p), whole.percentile_us(p), "p{p}");
        }
    }

    #[test]
    fn percentiles_are_exact_below_1024_us() {
        let mut h = Histogram::new();
        for us in 1..=100 {
            h.record(us);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.percentile_us(50.0), 50);
        assert_eq!(h.percentile_us(99.0), 99);
        assert_eq!(h.percentile_us(100.0), 100);
        assert_eq!(h.max_us(), 100);
        assert_eq!(Histogram::new().percentile_us(50.0), 0);
    }

    #[test]
    fn large_values_stay_within_a_fifth_of_a_percent() {
        for us in [1024, 1500, 2047, 2048, 99_999, 1_234_567, 3_600_000_000] {
            let index = bucket_of(us) as u64;
            let low = lowest_of(index);
            assert!(low <= us && us - low <= us / 500, "{us}: bucket starts at {low}");
            assert_eq!(bucket_of(low) as u64, index, "{us}");
        }
        let mut h = Histogram::new();
        h.record(5_000_000);
        h.record(u64::MAX);
        assert_eq!(h.max_us(), u64::MAX);
        let mut merged = Histogram::new();
        merged.merge(&h);
        assert_eq!(merged.count(), 2);
        assert!(merged.percentile_us(50.0) <= 5_000_000 && merged.percentile_us(50.0) > 4_980_000);
    }
}
