//! What the criterion benches share (each bench is its own crate and includes this module).

use std::time::Duration;

use criterion::Criterion;

/// Short runs (1 s warm-up, 2 s measuring, 20 samples): enough for the ratios the README
/// reports, short enough to rerun on a shared machine.
pub fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}
