//! The database's own limit for a read: PostgreSQL's `pgbench` running the product
//! service's exact statement (`-M prepared`, as sqlx prepares it), with the connection count
//! of the HTTP scenario it is compared with. Every transaction's latency is logged (`-l`),
//! so its row has the same percentiles as the HTTP scenarios'.

use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::load::Stats;

/// Runs `statements` (each one script, picked with equal weight) against `url` on
/// `concurrency` connections for `duration`.
pub async fn run(
    scenario: &str,
    url: &str,
    statements: &[String],
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Stats> {
    let dir = tempfile::tempdir()?;
    let mut command = tokio::process::Command::new("pgbench");
    let threads = concurrency.min(std::thread::available_parallelism().map_or(1, |n| n.get()));
    command
        .args(["-n", "-M", "prepared"])
        .arg(format!("--client={concurrency}"))
        .arg(format!("--jobs={threads}"))
        .arg(format!("--time={}", duration.as_secs().max(1)))
        .arg("--log")
        .arg(format!("--log-prefix={}", dir.path().join("tx").display()));
    for (i, sql) in statements.iter().enumerate() {
        let script = dir.path().join(format!("statement-{i}.sql"));
        std::fs::write(&script, format!("{sql};\n"))?;
        command.arg(format!("--file={}", script.display()));
    }
    let output = command.arg(url).output().await.map_err(|e| {
        anyhow::anyhow!("cannot run pgbench ({e}): install PostgreSQL's client tools (Debian: postgresql-contrib)")
    })?;
    if !output.status.success() {
        anyhow::bail!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let tps = stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|t| t.parse::<f64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench's output: {stdout}"))?;
    let (histogram, errors) = latencies(dir.path())?;
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(Stats {
        scenario: scenario.to_string(),
        concurrency,
        ops: histogram.len(),
        errors,
        seconds: duration.as_secs_f64(),
        ops_per_sec: tps,
        p50_ms: ms(0.50),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        first_error: None,
    })
}

/// Every logged transaction's latency (the third field, in microseconds), and how many
/// transactions failed or were skipped.
fn latencies(dir: &Path) -> anyhow::Result<(Histogram<u64>, u64)> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_log = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("tx"));
        if !is_log {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            match line.split_whitespace().nth(2).map(str::parse::<u64>) {
                Some(Ok(us)) => histogram.record(us.max(1))?,
                _ => errors += 1,
            }
        }
    }
    Ok((histogram, errors))
}
