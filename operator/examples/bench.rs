//! What the operator costs the API server and the machine, for 1, 10 and 100 Stores:
//!
//!   cargo run --release -p mercato-operator --example bench [-- --stores 1,10,100 --out FILE]
//!
//! Against the in-memory API server of the reconciler tests (`src/tests/fake_api.rs`), so it
//! needs no cluster and measures the operator itself: no network, no etcd, no admission.
//! For each N, in a fresh process of its own (so one N's memory does not inflate the next):
//!
//! 1. N Stores are created and each is reconciled three times in turn, as the controller
//!    would: the reconcile that adds the finalizer, the one that creates every child
//!    ("create"), and one more with nothing changed ("unchanged"), all reading children
//!    from the API server; then once more unchanged, reading them from watch caches that
//!    have caught up ("cached"), as the controller's reconciles do. Each is timed, and the
//!    API requests it made are counted by verb (GET of one object, LIST, POST, PATCH, PUT,
//!    DELETE; Events are POSTs, also shown on their own).
//! 2. The real controller (`controller::run`, the watches on Stores and every child kind,
//!    their reflector caches) starts over the N settled Stores, as after an operator
//!    restart; once it has reconciled every Store, the process's resident memory is read,
//!    and again at the end for the peak (`VmHWM` in /proc/self/status).
//!
//! The process also holds the fake API server's own copy of every object, so the memory
//! figures are an upper bound of an operator's; "watching" minus "settled" approximates
//! what the controller's caches add. A table goes to stdout and the figures as JSON to
//! `bench/operator.json` (or `--out`).

// The fake API server of the tests, included as is; it takes MANAGER and permits from here. Not every
// helper of it is used here.
#[allow(dead_code)]
#[path = "../src/tests/fake_api.rs"]
mod fake_api;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mercato_operator::builders::{self, SecretData, secrets};
use mercato_operator::cache::{Cached, ChildCache, child_kinds};
use mercato_operator::controller;
use mercato_operator::crd::{Store, StoreSpec};
pub(crate) use mercato_operator::meta::MANAGER;
use mercato_operator::meta::{FINALIZER, Owner};
use mercato_operator::metrics::Metrics;
pub(crate) use mercato_operator::rbac::permits;
use mercato_operator::reconciler::{Context, reconcile};
use serde_json::{Value, json};

use fake_api::{FakeApi, Logged};

const NAMESPACE: &str = "bench";
const COMMAND: &str = "cargo run --release -p mercato-operator --example bench";
/// The verbs requests are counted by, in table order.
const VERBS: [&str; 6] = ["GET", "LIST", "POST", "PATCH", "PUT", "DELETE"];
/// The reconciles of each Store, in order: three reading children from the API server, then
/// one more of the unchanged Stores reading them from the controller's watch caches.
const PASSES: [&str; 4] = ["finalizer", "create", "unchanged", "cached"];
/// The kinds of a Store's children, by plural.
const KINDS: [&str; 7] = [
    "secrets",
    "serviceaccounts",
    "services",
    "statefulsets",
    "deployments",
    "poddisruptionbudgets",
    "networkpolicies",
];
/// How long the controller may take to reconcile every Store once.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
#[command(about = "Operator cost: API requests per reconcile, reconcile time, memory")]
struct Args {
    /// Store counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    stores: Vec<usize>,
    /// Where to write the JSON results [default: bench/operator.json in the workspace].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Measure this many Stores in this process and print the JSON (what each child does).
    #[arg(long, hide = true)]
    measure: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(n) = args.measure {
        let run = tokio::runtime::Runtime::new()?.block_on(measure(n))?;
        println!("{run}");
        return Ok(());
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: an unoptimised build; run `{COMMAND}` for representative times");
    }
    let started = Instant::now();
    let mut runs = Vec::new();
    for &n in &args.stores {
        eprintln!("measuring {n} Store(s)...");
        let output = Command::new(std::env::current_exe()?)
            .args(["--measure", &n.to_string()])
            .output()
            .context("running the measuring process")?;
        ensure!(
            output.status.success(),
            "measuring {n} Stores failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        runs.push(serde_json::from_slice::<Value>(&output.stdout)?);
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    print_table(&runs, cores);
    let report = json!({
        "command": COMMAND,
        "api_server": "in-memory fake (operator/src/tests/fake_api.rs): no network, etcd or admission",
        "optimised": !cfg!(debug_assertions),
        "cores": cores,
        "wall_seconds": round(started.elapsed().as_secs_f64(), 1),
        "runs": runs,
    });
    let out = args.out.unwrap_or_else(|| {
        let operator = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        operator
            .parent()
            .unwrap_or(operator)
            .join("bench/operator.json")
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "wrote {} ({:.1} s)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn store(i: usize) -> Store {
    Store {
        metadata: ObjectMeta {
            name: Some(format!("store-{i:03}")),
            namespace: Some(NAMESPACE.into()),
            uid: Some(format!("00000000-0000-4000-8000-{i:012}")),
            generation: Some(1),
            ..ObjectMeta::default()
        },
        spec: StoreSpec::default(),
        status: None,
    }
}

/// `GET` of one object or `LIST`, else the method.
fn verb(request: &Logged) -> &'static str {
    let named = request
        .short()
        .split_once(' ')
        .is_some_and(|(_, what)| what.contains('/'));
    match request.method.as_str() {
        "GET" if request.query.contains("watch=true") => "WATCH",
        "GET" if named => "GET",
        "GET" => "LIST",
        "POST" => "POST",
        "PATCH" => "PATCH",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        _ => "OTHER",
    }
}

/// Requests by verb (plus `events` and `total`).
fn count(requests: &[Logged]) -> BTreeMap<&'static str, usize> {
    let mut out: BTreeMap<&'static str, usize> = VERBS.iter().map(|v| (*v, 0)).collect();
    for r in requests {
        *out.entry(verb(r)).or_default() += 1;
    }
    out.insert(
        "events",
        requests
            .iter()
            .filter(|r| r.path.ends_with("/events"))
            .count(),
    );
    out.insert("total", requests.len());
    out
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Mean, p95 (nearest rank) and max, in milliseconds.
fn timing(mut times: Vec<Duration>) -> Value {
    times.sort();
    let ms = |d: Duration| round(d.as_secs_f64() * 1000.0, 3);
    let n = times.len().max(1);
    let mean = times.iter().sum::<Duration>() / u32::try_from(n).unwrap_or(u32::MAX);
    let p95 = times
        .get((n * 95).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or_default();
    json!({
        "mean": ms(mean),
        "p95": ms(p95),
        "max": ms(times.last().copied().unwrap_or_default()),
    })
}

/// One reconcile of every Store in turn: the requests each made, by verb, and its time.
async fn pass(fake: &FakeApi, ctx: &Arc<Context>, n: usize) -> anyhow::Result<Value> {
    let mut per_store = Vec::new();
    let mut times = Vec::new();
    for i in 0..n {
        let name = format!("store-{i:03}");
        let live = fake
            .get("stores", NAMESPACE, &name)
            .context("store exists")?;
        let store: Store = serde_json::from_value(live)?;
        fake.clear_log();
        let started = Instant::now();
        reconcile(Arc::new(store), ctx.clone())
            .await
            .with_context(|| format!("reconciling {name}"))?;
        times.push(started.elapsed());
        per_store.push(count(&fake.requests()));
    }
    let first = per_store.first().cloned().unwrap_or_default();
    Ok(json!({
        "requests_per_store": first,
        // Every Store is alike, so every Store should cost the same.
        "same_for_every_store": per_store.iter().all(|c| *c == first),
        "time_ms": timing(times),
    }))
}

/// The "unchanged" pass again, with the reconciler reading children from watch caches that
/// have caught up with the API server, as under the controller.
async fn cached_pass(fake: &FakeApi, client: &kube::Client, n: usize) -> anyhow::Result<Value> {
    let (cache, feeds) = ChildCache::watch(client, Some(NAMESPACE));
    let feeding = tokio::spawn(
        futures::stream::select_all(feeds.into_iter().map(|f| f.stream)).for_each(|_| async {}),
    );
    let expected: usize = KINDS.iter().map(|plural| fake.names(plural).len()).sum();
    let started = Instant::now();
    loop {
        let cached: usize = child_kinds()
            .iter()
            .map(|kind| match cache.list(kind, NAMESPACE, &BTreeMap::new()) {
                Cached::Known(objects) => objects.len(),
                Cached::Unknown => 0,
            })
            .sum();
        if cache.is_synced() && cached == expected {
            break;
        }
        ensure!(
            started.elapsed() < SYNC_TIMEOUT,
            "the watch caches hold {cached} of {expected} children after {SYNC_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            Arc::new(Metrics::default()),
            Some("bench".into()),
        )
        .with_cache(cache),
    );
    let result = pass(fake, &ctx, n).await;
    feeding.abort();
    result
}

/// The objects the fake API server holds, as JSON text (its memory holds them as trees,
/// which take several times that).
fn fake_size_kib(fake: &FakeApi) -> u64 {
    let bytes: usize = KINDS
        .iter()
        .chain(&["stores"])
        .flat_map(|plural| {
            fake.names(plural)
                .into_iter()
                .filter_map(move |name| fake.get(plural, NAMESPACE, &name))
        })
        .map(|object| object.to_string().len())
        .sum();
    (bytes / 1024) as u64
}

/// The operator's own CPU in a reconcile: building the desired state of one Store (every
/// child with its fingerprint), without any API request. Timed over every Store.
fn desired_state_time(fake: &FakeApi) -> anyhow::Result<Value> {
    let mut times = Vec::new();
    for name in fake.names("stores") {
        let live = fake
            .get("stores", NAMESPACE, &name)
            .context("store exists")?;
        let store: Store = serde_json::from_value(live)?;
        let owner = Owner::of(&store).context("stores have a namespace and uid")?;
        let data: SecretData = secrets::specs(&name, &store.spec)
            .into_iter()
            .filter_map(|spec| {
                let live = fake.get("secrets", NAMESPACE, &spec.name)?;
                let secret: Secret = serde_json::from_value(live).ok()?;
                Some((spec.name, secret.data.unwrap_or_default()))
            })
            .collect();
        let started = Instant::now();
        let children = builders::desired(&owner, &store.spec, &Default::default(), &data);
        times.push(started.elapsed());
        ensure!(!children.is_empty(), "{name} has children");
    }
    Ok(timing(times))
}

/// A line of /proc/self/status in KiB (`VmRSS`, `VmHWM`), or 0 where there is none.
fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::to_owned))
        })
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn measure(n: usize) -> anyhow::Result<Value> {
    let (fake, client) = FakeApi::new();
    for i in 0..n {
        fake.insert("stores", serde_json::to_value(store(i))?);
    }
    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::new(Metrics::default()),
        Some("bench".into()),
    ));
    let mut passes = serde_json::Map::new();
    for name in &PASSES[..3] {
        passes.insert((*name).into(), pass(&fake, &ctx, n).await?);
    }
    passes.insert("cached".into(), cached_pass(&fake, &client, n).await?);
    let finalized = fake
        .get("stores", NAMESPACE, "store-000")
        .is_some_and(|s| s["metadata"]["finalizers"][0] == FINALIZER);
    ensure!(finalized, "the first pass adds the finalizer");
    let objects: usize = KINDS.iter().map(|plural| fake.names(plural).len()).sum();
    let fake_json_kib = fake_size_kib(&fake);
    let desired_state = desired_state_time(&fake)?;
    let rss_settled = proc_status_kib("VmRSS");

    // The controller over the settled Stores, as after a restart.
    fake.clear_log();
    let metrics = Arc::new(Metrics::default());
    let watching = Context::new(client, metrics.clone(), Some("bench".into()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let running = tokio::spawn(controller::run(watching, Some(NAMESPACE), stopped));
    let done = |m: &Metrics| m.reconciles("success") + m.reconciles("error");
    while done(&metrics) < n as u64 {
        if started.elapsed() > SYNC_TIMEOUT {
            bail!(
                "the controller reconciled {} of {n} Stores in {SYNC_TIMEOUT:?}",
                done(&metrics)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let synced = started.elapsed();
    // Anything a reconcile set off would show up now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_watching = proc_status_kib("VmRSS");
    let requests = fake.requests();
    let failed = metrics.reconciles("error");
    let reconciles = done(&metrics);
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
    ensure!(
        failed == 0,
        "{failed} reconciles failed under the controller"
    );

    Ok(json!({
        "stores": n,
        "children": objects,
        "reconcile": passes,
        "desired_state_ms": desired_state,
        "controller": {
            "note": "controller::run started over the settled Stores (an operator restart)",
            "all_reconciled_ms": round(synced.as_secs_f64() * 1000.0, 1),
            "reconciles": reconciles,
            "requests": count(&requests),
        },
        "memory_kib": {
            "fake_api_objects_as_json": fake_json_kib,
            "rss_settled": rss_settled,
            "rss_watching": rss_watching,
            "peak_rss_vmhwm": proc_status_kib("VmHWM"),
        },
    }))
}

fn print_table(runs: &[Value], cores: usize) {
    println!(
        "\nOperator cost against the in-memory API server ({}, {cores} cores)\n",
        if cfg!(debug_assertions) {
            "unoptimised"
        } else {
            "optimised"
        }
    );
    println!("API requests per reconcile of one Store (Events are POSTs, also counted apart)");
    let mut header = format!("{:>6}  {:<10}", "stores", "reconcile");
    for v in VERBS {
        header.push_str(&format!("{v:>7}"));
    }
    header.push_str(&format!("{:>7}{:>8}", "total", "events"));
    println!("{header}");
    for run in runs {
        for pass in PASSES {
            let c = &run["reconcile"][pass]["requests_per_store"];
            let mut line = format!("{:>6}  {:<10}", run["stores"].as_u64().unwrap_or(0), pass);
            for v in VERBS.iter().chain(&["total", "events"]) {
                let width = if *v == "events" { 8 } else { 7 };
                line.push_str(&format!("{:>width$}", c[v].as_u64().unwrap_or(0)));
            }
            if run["reconcile"][pass]["same_for_every_store"] != json!(true) {
                line.push_str("  (first Store; others differ)");
            }
            println!("{line}");
        }
    }
    println!("\nReconcile time per Store (ms), and memory (MiB) with the controller watching");
    println!(
        "{:>6}  {:>17}  {:>18}  {:>12}  {:>11}  {:>11}  {:>9}  {:>9}",
        "stores",
        "create mean/p95",
        "unchanged mean/p95",
        "desired mean",
        "restart: ms",
        "RSS settled",
        "RSS watch",
        "peak RSS"
    );
    let mib = |v: &Value| v.as_f64().unwrap_or(0.0) / 1024.0;
    for run in runs {
        let t = |pass: &str, k: &str| run["reconcile"][pass]["time_ms"][k].as_f64().unwrap_or(0.0);
        let pair = |pass: &str| format!("{:.2} / {:.2}", t(pass, "mean"), t(pass, "p95"));
        let m = &run["memory_kib"];
        println!(
            "{:>6}  {:>17}  {:>18}  {:>12.3}  {:>11.0}  {:>11.1}  {:>9.1}  {:>9.1}",
            run["stores"].as_u64().unwrap_or(0),
            pair("create"),
            pair("unchanged"),
            run["desired_state_ms"]["mean"].as_f64().unwrap_or(0.0),
            run["controller"]["all_reconciled_ms"]
                .as_f64()
                .unwrap_or(0.0),
            mib(&m["rss_settled"]),
            mib(&m["rss_watching"]),
            mib(&m["peak_rss_vmhwm"]),
        );
    }
    let writes: Vec<String> = runs
        .iter()
        .map(|r| {
            let c = &r["controller"]["requests"];
            let writes: u64 = ["POST", "PATCH", "PUT", "DELETE"]
                .iter()
                .map(|v| c[*v].as_u64().unwrap_or(0))
                .sum();
            format!(
                "{writes} writes of {} requests for {} Stores",
                c["total"].as_u64().unwrap_or(0),
                r["stores"]
            )
        })
        .collect();
    println!(
        "\n\"desired\": building one Store's children and their fingerprints, the operator's own \
         CPU in a reconcile; the rest of a reconcile's time is its API round trips, here to a \
         fake that (de)serialises every object in this process.\n\
         \"restart\": controller::run over the settled Stores until it has reconciled each once \
         (its {} ms debounce included), watches and their first lists included: {}.\n\
         Memory is the whole process, the fake API server's copy of every object included (an \
         upper bound). The controller caches the Stores and every child (whole objects: the \
         reconciler reads them from there instead of GETting them), so RSS watch minus RSS \
         settled is those caches plus the transient peak of reconciling every Store at once \
         after the restart, which the allocator keeps.\n\
         \"cached\": the unchanged reconcile again, reading children from the controller's \
         watch caches instead of the API server.\n",
        controller::DEBOUNCE.as_millis(),
        writes.join(", ")
    );
}
