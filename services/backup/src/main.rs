//! `mercato-backup`: the bucket side of a Store's backups (see the library's docs).
//!
//! The bucket comes from flags or, as the operator sets them, from `S3_ENDPOINT`,
//! `S3_BUCKET`, `S3_REGION`, `S3_URL_STYLE` and `S3_PREFIX`; the credentials only from
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, so they never show
//! in a process list. Exits non-zero, with the reason on stderr, when anything fails.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use mercato_backup::{Backups, DEFAULT_PART_SIZE, Target, newest_dump};
use url::Url;

#[derive(Parser, Debug)]
#[command(
    name = "mercato-backup",
    version,
    about = "A Store's database dumps in an S3-compatible bucket"
)]
struct Cli {
    /// The S3 endpoint, e.g. https://s3.eu-west-1.amazonaws.com or http://minio.backups:9000.
    #[arg(long, env = "S3_ENDPOINT")]
    endpoint: Url,
    #[arg(long, env = "S3_BUCKET")]
    bucket: String,
    #[arg(long, env = "S3_REGION", default_value = "us-east-1")]
    region: String,
    #[arg(long, env = "S3_URL_STYLE", value_enum, default_value_t = UrlStyle::Path)]
    url_style: UrlStyle,
    /// The folder of this database's dumps in the bucket, e.g. demo/order.
    #[arg(long, env = "S3_PREFIX")]
    prefix: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum UrlStyle {
    /// <endpoint>/<bucket>/<key>
    Path,
    /// <bucket>.<endpoint host>/<key>
    VirtualHost,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Uploads the newest checked dump in a folder, then prunes the bucket to the retention.
    Push {
        /// The folder backup.sh wrote the dump to.
        #[arg(long)]
        from: PathBuf,
        /// How many dumps to keep in the bucket.
        #[arg(long, env = "BACKUP_RETENTION", value_parser = clap::value_parser!(u32).range(1..=1000))]
        retention: u32,
        /// Dumps bigger than this go in parts of this size (MiB, 5-5120).
        #[arg(long, default_value_t = (DEFAULT_PART_SIZE / (1024 * 1024)) as u32, value_parser = clap::value_parser!(u32).range(5..=5120))]
        part_size_mib: u32,
    },
    /// Downloads one dump (or the newest) into a folder, for restore.sh.
    Fetch {
        /// A dump's name (20261204T031700Z.dump) or `latest`.
        #[arg(long, env = "RESTORE_FILE")]
        file: String,
        #[arg(long)]
        into: PathBuf,
        /// Fetch nothing when this path exists (a database's PG_VERSION: its data directory
        /// is initialised, so its entrypoint restores nothing).
        #[arg(long)]
        unless_exists: Option<PathBuf>,
    },
    /// Lists the dumps in the bucket, oldest first.
    List,
}

fn env_secret(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let target = Target {
        endpoint: cli.endpoint,
        bucket: cli.bucket,
        region: cli.region,
        virtual_host: matches!(cli.url_style, UrlStyle::VirtualHost),
        prefix: cli.prefix,
        access_key_id: env_secret("AWS_ACCESS_KEY_ID")?,
        secret_access_key: env_secret("AWS_SECRET_ACCESS_KEY")?,
        session_token: std::env::var("AWS_SESSION_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    };
    let backups = Backups::new(&target)?;
    match cli.command {
        Command::Push {
            from,
            retention,
            part_size_mib,
        } => {
            let dump = newest_dump(&from)?;
            let part_size = part_size_mib as usize * 1024 * 1024;
            let stored = backups.upload(&dump, part_size).await?;
            println!(
                "backup: {} -> {}/{} ({} bytes, stored whole)",
                dump.display(),
                backups.place(),
                stored.name,
                stored.size
            );
            for name in backups.prune(retention as usize).await? {
                println!("backup: pruned {}/{name}", backups.place());
            }
        }
        Command::Fetch {
            file,
            into,
            unless_exists,
        } => {
            if let Some(path) = unless_exists.as_deref().filter(|p| exists(p)) {
                println!(
                    "restore: {} exists: the database is initialised, nothing fetched",
                    path.display()
                );
                return Ok(());
            }
            let path = backups.download(&file, &into).await?;
            println!("restore: {}/{file} -> {}", backups.place(), path.display());
        }
        Command::List => {
            for dump in backups.list().await? {
                println!("{}\t{}", dump.name, dump.size);
            }
        }
    }
    Ok(())
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mercato-backup: {e:#}");
            ExitCode::FAILURE
        }
    }
}
