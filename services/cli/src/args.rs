//! The command line: global flags and one subcommand per thing a store lets you do.

use clap::{Parser, Subcommand};

/// A password given on the command line; `Debug` never shows it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl std::str::FromStr for Password {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "mercato",
    version,
    about = "Command-line client for a Mercato store"
)]
pub struct Cli {
    /// The store's gateway.
    #[arg(
        long,
        env = "MERCATO_GATEWAY",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub gateway: String,
    /// Print the store's JSON answers instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Where the login session is kept (default: ~/.config/mercato/session.json).
    #[arg(long, env = "MERCATO_SESSION", global = true)]
    pub session: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a customer account.
    Register {
        username: String,
        email: String,
        #[arg(long, env = "MERCATO_PASSWORD", hide_env_values = true)]
        password: Password,
    },
    /// Log in and keep the session for the next commands.
    Login {
        username: String,
        #[arg(long, env = "MERCATO_PASSWORD", hide_env_values = true)]
        password: Password,
    },
    /// End the session.
    Logout,
    /// Browse or manage the catalog.
    #[command(subcommand)]
    Products(ProductsCommand),
    /// Place an order: one or more PRODUCT_ID:QUANTITY.
    Order {
        #[arg(required = true, value_parser = parse_line)]
        lines: Vec<(String, u32)>,
        /// Makes a retried command place the order only once.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// List your orders (admins: everyone's), or act on one.
    Orders {
        #[command(subcommand)]
        command: Option<OrdersCommand>,
        /// PENDING, PAID, CANCELLED or EXPIRED.
        #[arg(long)]
        status: Option<String>,
    },
    /// Pay an order (the amount defaults to its total).
    Pay {
        order_id: String,
        #[arg(long, default_value = "fake-card")]
        method: String,
        #[arg(long)]
        amount: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProductsCommand {
    /// List products.
    List {
        #[arg(long)]
        category: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one product.
    Show { id: String },
    /// Add a product (admin).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        category: String,
        /// Price in minor units (cents).
        #[arg(long)]
        price: i64,
        #[arg(long, default_value = "EUR")]
        currency: String,
        #[arg(long)]
        stock: i64,
        #[arg(long, default_value = "")]
        description: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrdersCommand {
    /// Show one order.
    Show { id: String },
    /// Cancel a pending order.
    Cancel { id: String },
}

pub fn parse_line(s: &str) -> Result<(String, u32), String> {
    let (id, qty) = s.split_once(':').unwrap_or((s, "1"));
    let qty: u32 = qty
        .parse()
        .map_err(|_| format!("quantity in {s:?} is not a positive number"))?;
    if id.is_empty() || qty == 0 {
        return Err(format!("expected PRODUCT_ID:QUANTITY, got {s:?}"));
    }
    Ok((id.to_string(), qty))
}
