//! The auth service binary: parse configuration, then run until SIGTERM.

#[tokio::main]
async fn main() {
    let config: mercato_auth::Config = mercato_kit::config::parse();
    if let Err(e) = mercato_auth::run(config).await {
        tracing::error!(error = %e, "auth service stopped");
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
