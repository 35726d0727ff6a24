//! The auth binary as an operator runs it: `--help`, bad settings, SIGTERM.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::process::{Command, Stdio};
use std::time::Duration;

use mercato_contract::env;

const BIN: &str = env!("CARGO_BIN_EXE_mercato-auth");

#[test]
fn help_documents_every_setting_with_its_environment_variable() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for var in [
        env::HTTP_ADDR,
        env::OPS_ADDR,
        env::EDGE_KEY,
        env::DATABASE_URL,
        env::JWKS_PATH,
        env::JWT_PRIVATE_KEY_PATH,
        env::JWT_ISSUER,
        env::JWT_AUDIENCE,
        env::ACCESS_TOKEN_TTL_SECS,
        env::REFRESH_TOKEN_TTL_SECS,
        env::ADMIN_USERNAME,
        env::ADMIN_PASSWORD,
        env::SERVICE_CLIENTS,
        env::LOG_FORMAT,
        "ARGON2_MEMORY_KIB",
        "LOGIN_ATTEMPTS_PER_USERNAME",
    ] {
        assert!(
            help.contains(&format!("env: {var}")),
            "--help names {var}:\n{help}"
        );
    }
    assert!(help.contains("[default: 0.0.0.0:8080]"));
}

#[test]
fn a_missing_setting_stops_start_up_with_one_line_naming_it() {
    let out = Command::new(BIN)
        .env_clear()
        .env("JWKS_PATH", "/nonexistent/jwks.json")
        .env("JWT_PRIVATE_KEY_PATH", "/nonexistent/private.pem")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("--database-url"), "{err}");
}

#[test]
fn an_invalid_setting_is_named() {
    let out = Command::new(BIN)
        .env_clear()
        .env("DATABASE_URL", "postgres://x/y")
        .env("JWKS_PATH", "/x")
        .env("JWT_PRIVATE_KEY_PATH", "/x")
        .env("HTTP_ADDR", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("--http-addr"), "{err}");
}

#[tokio::test]
async fn sigterm_stops_the_service_cleanly() {
    let db = mercato_kit::testing::TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = mercato_contract::credentials::generate_jwt_keys();
    std::fs::write(dir.path().join("jwks.json"), &keys.jwks_json).unwrap();
    std::fs::write(dir.path().join("private.pem"), &keys.private_pem).unwrap();
    let free_port = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (port, ops_port) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .env("DATABASE_URL", &db.url)
        .env("JWKS_PATH", dir.path().join("jwks.json"))
        .env("JWT_PRIVATE_KEY_PATH", dir.path().join("private.pem"))
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("OPS_ADDR", format!("127.0.0.1:{ops_port}"))
        .env("ARGON2_MEMORY_KIB", "64")
        .env("ARGON2_ITERATIONS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{ops_port}/readyz"))
            .send()
            .await
            && r.status().is_success()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "service became ready");
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("service did not stop after SIGTERM")
    });
    assert!(status.success(), "exit status {status:?}");
}
