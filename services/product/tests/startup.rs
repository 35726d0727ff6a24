//! A product service started before its database: it stays up and says why it is not
//! ready, then serves once the database appears.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::net::SocketAddr;
use std::time::Duration;

use mercato_kit::server::{Listeners, spawn_starting};
use mercato_kit::testing::{TestAuth, TestDb, TestKeys, poll, problem};
use serde_json::Value;

async fn get(http: &reqwest::Client, url: String) -> (u16, Value) {
    let r = http.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_service_whose_database_is_missing_stays_up_not_ready_then_serves_when_it_appears() {
    let db = TestDb::not_created_yet();
    let keys = TestKeys::new();
    let auth = TestAuth::start(&keys).await;
    let mut args = vec![
        "mercato-product".to_string(),
        format!("--database-url={}", db.url),
        format!("--jwks-path={}", keys.jwks_path().display()),
        "--database-connect-timeout-secs=1".into(),
        "--log-level=warn".into(),
    ];
    args.extend(auth.flags());
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    let listeners = Listeners::bind(local, local).await.unwrap();
    let starting = spawn_starting::<mercato_product::Config>(args, listeners).unwrap();
    let server = &starting.server;
    let http = reqwest::Client::new();

    // Alive (no restart would help) but not ready, naming the database and why.
    let (status, _) = get(&http, server.ops_url("/healthz")).await;
    assert_eq!(status, 200);
    let (status, body) = poll(
        100,
        || get(&http, server.ops_url("/readyz")),
        |(_, body)| {
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("database"))
        },
    )
    .await;
    assert_eq!(status, 503, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("database not reachable yet"), "{detail}");
    assert!(detail.contains("does not exist"), "{detail}");

    // The public API answers problem+json 503 meanwhile, with a time to come back.
    let r = http.get(server.url("/products")).send().await.unwrap();
    assert_eq!(r.headers()["retry-after"], "5");
    let (status, body) = problem(r).await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "starting", "{body}");

    db.create().await;
    let server = tokio::time::timeout(Duration::from_secs(60), starting.built())
        .await
        .expect("the service is built within a minute of its database appearing")
        .unwrap();
    let (status, body) = poll(
        100,
        || get(&http, server.ops_url("/readyz")),
        |(status, _)| *status == 200,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&http, server.url("/products")).await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

/// The binary itself, as a cluster runs it: started before its database, it neither
/// exits nor restarts; it turns ready once the database appears, and stops on SIGTERM.
#[tokio::test]
async fn the_binary_waits_for_its_database_instead_of_exiting() {
    let db = TestDb::not_created_yet();
    let keys = TestKeys::new();
    let auth = TestAuth::start(&keys).await;
    let free_port = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (port, ops_port) = (free_port(), free_port());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mercato-product"))
        .args(auth.flags())
        .env("DATABASE_URL", &db.url)
        .env("JWKS_PATH", keys.jwks_path())
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("OPS_ADDR", format!("127.0.0.1:{ops_port}"))
        .env("LOG_LEVEL", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let ops = |path: &str| format!("http://127.0.0.1:{ops_port}{path}");
    let probe = |url: String| {
        let http = http.clone();
        async move {
            match http.get(url).send().await {
                Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
                Err(_) => (0, Value::Null),
            }
        }
    };

    let (status, body) = poll(
        100,
        || probe(ops("/readyz")),
        |(_, body)| {
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("database"))
        },
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(probe(ops("/healthz")).await.0, 200);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the process is still running"
    );

    db.create().await;
    let (status, body) = poll(300, || probe(ops("/readyz")), |(status, _)| *status == 200).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = probe(format!("http://127.0.0.1:{port}/products")).await;
    assert_eq!(status, 200);

    let killed = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let mut stopped = None;
    for _ in 0..100 {
        stopped = child.try_wait().unwrap();
        if stopped.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(status) = stopped else {
        let _ = child.kill();
        panic!("the service did not stop after SIGTERM");
    };
    assert!(status.success(), "exit status {status:?}");
}
