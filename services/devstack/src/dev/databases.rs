//! One PostgreSQL role and database per service, created (or updated) from the
//! administrative URL, and dropped again on reset.

use std::collections::BTreeMap;

use mercato_contract::Component;
use sqlx::{Connection, Executor, PgConnection};

use super::{DevOptions, Secrets};

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// One role and one database per service; returns each service's own URL.
pub(super) async fn prepare_databases(
    options: &DevOptions,
    secrets: &Secrets,
) -> anyhow::Result<BTreeMap<Component, String>> {
    let mut admin = PgConnection::connect(&options.postgres_url)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach PostgreSQL at {}: {e}",
                mercato_kit::db::redact(&options.postgres_url)
            )
        })?;
    let mut urls = BTreeMap::new();
    for c in Component::WITH_DATABASE {
        let name = format!("{}{}", options.db_prefix, c.name());
        let password = secrets
            .db_passwords
            .get(c.name())
            .ok_or_else(|| anyhow::anyhow!("no database password for {c}; run `make dev-reset`"))?;
        let role_exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                .bind(&name)
                .fetch_one(&mut admin)
                .await?;
        let verb = if role_exists { "ALTER" } else { "CREATE" };
        admin
            .execute(
                format!(
                    "{verb} ROLE {} LOGIN PASSWORD {}",
                    quote_ident(&name),
                    quote_literal(password)
                )
                .as_str(),
            )
            .await?;
        let db_exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&name)
                .fetch_one(&mut admin)
                .await?;
        if !db_exists {
            admin
                .execute(
                    format!(
                        "CREATE DATABASE {} OWNER {}",
                        quote_ident(&name),
                        quote_ident(&name)
                    )
                    .as_str(),
                )
                .await?;
        }
        // Some clusters' template leaves `public` to the bootstrap superuser; hand it over.
        let mut in_db = url::Url::parse(&options.postgres_url)?;
        in_db.set_path(&name);
        let mut conn = PgConnection::connect(in_db.as_str()).await?;
        conn.execute(format!("ALTER SCHEMA public OWNER TO {}", quote_ident(&name)).as_str())
            .await?;
        conn.close().await?;
        let mut url = url::Url::parse(&options.postgres_url)?;
        url.set_username(&name)
            .map_err(|()| anyhow::anyhow!("cannot set user in the PostgreSQL URL"))?;
        url.set_password(Some(password))
            .map_err(|()| anyhow::anyhow!("cannot set password in the PostgreSQL URL"))?;
        url.set_path(&name);
        mercato_kit::db::plain_on_loopback(&mut url);
        urls.insert(c, url.to_string());
    }
    Ok(urls)
}

/// Drops the databases and roles of this prefix, and the generated credentials.
pub async fn reset(options: &DevOptions) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&options.postgres_url).await?;
    for c in Component::WITH_DATABASE {
        let name = quote_ident(&format!("{}{}", options.db_prefix, c.name()));
        admin
            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await?;
        admin
            .execute(format!("DROP ROLE IF EXISTS {name}").as_str())
            .await?;
    }
    for file in ["secrets.json", "keys"] {
        let path = options.state_dir.join(file);
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else if path.exists() {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}
