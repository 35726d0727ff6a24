//! A throwaway S3-compatible server (s3s-fs on a temporary folder) for trying bucket
//! backups by hand: `cargo run -p mercato-backup --features test-server --example s3_server
//! -- 0.0.0.0:9000 shop-backups`. It prints the endpoint and the one key pair it accepts,
//! and forgets everything when stopped.

use mercato_backup::testing::{ACCESS_KEY_ID, S3Server, SECRET_ACCESS_KEY};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let address = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:9000".into())
        .parse()?;
    let bucket = args.next().unwrap_or_else(|| "shop-backups".into());
    let server = S3Server::start_at(address, &bucket).await?;
    println!("endpoint {} bucket {bucket}", server.endpoint);
    println!("AWS_ACCESS_KEY_ID={ACCESS_KEY_ID} AWS_SECRET_ACCESS_KEY={SECRET_ACCESS_KEY}");
    println!("objects are kept under {}", server.root().display());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
