//! The `mercato` binary against a running store, as a person or a script uses it.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::process::Output;

use mercato_devstack::dev::TestStore;
use mercato_kit::testing::poll;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mercato");

struct Cli {
    gateway: String,
    session: tempfile::TempDir,
}

impl Cli {
    async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(args)
            .env("MERCATO_GATEWAY", &self.gateway)
            .env("MERCATO_SESSION", self.session.path().join("session.json"))
            .env_remove("MERCATO_PASSWORD");
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all).await).unwrap()
    }
}

#[tokio::test]
async fn an_admin_and_a_customer_run_the_shop_from_the_command_line() {
    let store = TestStore::start(&[], true).await.unwrap();
    let admin_password = store.dev.as_ref().unwrap().admin_password.clone();
    let cli = Cli {
        gateway: store.gateway_url(),
        session: tempfile::tempdir().unwrap(),
    };

    let table = cli.ok(&["products", "list", "--category", "kitchen"]).await;
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("Espresso cup") && table.contains("9.00 EUR"),
        "{table}"
    );

    cli.ok(&["login", "admin", "--password", &admin_password])
        .await;
    let created = cli
        .json(&[
            "products",
            "create",
            "--name",
            "CLI lamp",
            "--category",
            "cli",
            "--price",
            "2500",
            "--stock",
            "3",
        ])
        .await;
    let product = created["id"].as_str().unwrap().to_string();

    cli.ok(&[
        "register",
        "rita",
        "rita@example.com",
        "--password",
        "correct-horse",
    ])
    .await;
    cli.ok(&["login", "rita", "--password", "correct-horse"])
        .await;
    let order = cli
        .json(&[
            "order",
            &format!("{product}:2"),
            "--idempotency-key",
            "cli-1",
        ])
        .await;
    assert_eq!(
        (order["status"].as_str(), order["total"].as_i64()),
        (Some("PENDING"), Some(5000))
    );
    let again = cli
        .json(&[
            "order",
            &format!("{product}:2"),
            "--idempotency-key",
            "cli-1",
        ])
        .await;
    assert_eq!(
        again["id"], order["id"],
        "a retried command places the order once"
    );

    let payment = cli.json(&["pay", order["id"].as_str().unwrap()]).await;
    assert_eq!(payment["status"], "SUCCEEDED");
    let id = order["id"].as_str().unwrap();
    let status = poll(
        50,
        || async {
            cli.json(&["orders", "show", id]).await["status"]
                .as_str()
                .unwrap()
                .to_string()
        },
        |s| s == "PAID",
    )
    .await;
    assert_eq!(status, "PAID");
    let listing = cli.ok(&["orders"]).await;
    assert!(
        listing.contains("PAID") && listing.contains("50.00 EUR") && listing.contains("2×CLI lamp"),
        "{listing}"
    );
    cli.ok(&["logout"]).await;
}

#[tokio::test]
async fn exit_codes_tell_scripts_what_happened() {
    let store = TestStore::start(&[], false).await.unwrap();
    let cli = Cli {
        gateway: store.gateway_url(),
        session: tempfile::tempdir().unwrap(),
    };

    let refused = cli
        .run(&["products", "show", &uuid::Uuid::new_v4().to_string()])
        .await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Product not found"));

    let not_logged_in = cli.run(&["orders"]).await;
    assert_eq!(not_logged_in.status.code(), Some(2));
    let usage = cli.run(&["order", "no-quantity:zero"]).await;
    assert_eq!(usage.status.code(), Some(2));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let away = Cli {
        gateway: format!("http://127.0.0.1:{port}"),
        session: tempfile::tempdir().unwrap(),
    };
    assert_eq!(away.run(&["products", "list"]).await.status.code(), Some(3));

    let bad_login = cli
        .run(&["--json", "login", "nobody", "--password", "wrong-password"])
        .await;
    assert_eq!(bad_login.status.code(), Some(1));
    let problem: Value = serde_json::from_slice(&bad_login.stdout).unwrap();
    assert_eq!(problem["code"], "invalid_credentials");
}
