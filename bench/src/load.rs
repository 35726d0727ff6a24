//! A closed-loop load generator: N workers each run one operation after another for a
//! fixed time; latencies go into HDR histograms.

use std::future::Future;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// What one scenario at one concurrency produced.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub scenario: String,
    pub concurrency: usize,
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// First error seen, to tell what went wrong when `errors` is not zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 60 s at 3 significant figures: constant, valid bounds.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Runs `op(worker, iteration)` on `concurrency` workers for `duration`.
pub async fn run<F, Fut>(scenario: &str, concurrency: usize, duration: Duration, op: F) -> Stats
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let started = Instant::now();
    let deadline = started + duration;
    let workers = (0..concurrency).map(|worker| {
        let op = op.clone();
        tokio::spawn(async move {
            let mut histogram = new_histogram();
            let (mut errors, mut first_error, mut i) = (0u64, None, 0u64);
            while Instant::now() < deadline {
                let t = Instant::now();
                match op(worker, i).await {
                    Ok(()) => {
                        let micros = u64::try_from(t.elapsed().as_micros())
                            .unwrap_or(u64::MAX)
                            .max(1);
                        let _ = histogram.record(micros.min(60_000_000));
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
                i += 1;
            }
            (histogram, errors, first_error)
        })
    });
    let mut total = new_histogram();
    let (mut errors, mut first_error) = (0, None);
    for (h, e, first) in futures::future::join_all(workers)
        .await
        .into_iter()
        .flatten()
    {
        let _ = total.add(&h);
        errors += e;
        if first_error.is_none() {
            first_error = first;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let ms = |q: f64| total.value_at_quantile(q) as f64 / 1000.0;
    Stats {
        scenario: scenario.to_string(),
        concurrency,
        ops: total.len(),
        errors,
        seconds,
        ops_per_sec: total.len() as f64 / seconds,
        p50_ms: ms(0.50),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        first_error,
    }
}
