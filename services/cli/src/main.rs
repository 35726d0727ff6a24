//! `mercato`: log in, browse and manage products, order, pay and list orders against a
//! store's gateway. Tables for people, `--json` for scripts.
//!
//! Exit codes: 0 success, 1 the store refused the request, 2 bad usage, 3 the gateway
//! could not be reached.

mod session;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use crate::session::Session;
use crate::table::{money, print_table};

#[derive(Debug, Parser)]
#[command(
    name = "mercato",
    version,
    about = "Command-line client for a Mercato store"
)]
struct Cli {
    /// The store's gateway.
    #[arg(
        long,
        env = "MERCATO_GATEWAY",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    gateway: String,
    /// Print the store's JSON answers instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Where the login session is kept (default: ~/.config/mercato/session.json).
    #[arg(long, env = "MERCATO_SESSION", global = true)]
    session: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a customer account.
    Register {
        username: String,
        email: String,
        #[arg(long, env = "MERCATO_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Log in and keep the session for the next commands.
    Login {
        username: String,
        #[arg(long, env = "MERCATO_PASSWORD", hide_env_values = true)]
        password: String,
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
enum ProductsCommand {
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
enum OrdersCommand {
    /// Show one order.
    Show { id: String },
    /// Cancel a pending order.
    Cancel { id: String },
}

fn parse_line(s: &str) -> Result<(String, u32), String> {
    let (id, qty) = s.split_once(':').unwrap_or((s, "1"));
    let qty: u32 = qty
        .parse()
        .map_err(|_| format!("quantity in {s:?} is not a positive number"))?;
    if id.is_empty() || qty == 0 {
        return Err(format!("expected PRODUCT_ID:QUANTITY, got {s:?}"));
    }
    Ok((id.to_string(), qty))
}

/// How a command failed, mapped to the exit code.
enum Failure {
    Refused(Value, u16),
    Unreachable(String),
    Usage(String),
}

struct Client {
    http: reqwest::Client,
    gateway: String,
    session: Session,
    json: bool,
}

impl Client {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        auth: bool,
    ) -> Result<Value, Failure> {
        self.call_with(method, path, body, auth, None).await
    }

    async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        auth: bool,
        idempotency_key: Option<&str>,
    ) -> Result<Value, Failure> {
        let mut req = self.http.request(
            method,
            format!("{}{path}", self.gateway.trim_end_matches('/')),
        );
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        if auth {
            let token = self.session.access_token().ok_or_else(|| {
                Failure::Usage("not logged in: run `mercato login <username>`".into())
            })?;
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let response = req
            .send()
            .await
            .map_err(|e| Failure::Unreachable(format!("cannot reach {}: {e}", self.gateway)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            Ok(value)
        } else {
            Err(Failure::Refused(value, status.as_u16()))
        }
    }

    fn show(&self, value: &Value, human: impl FnOnce(&Value)) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            human(value);
        }
    }
}

fn product_rows(items: &[Value]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|p| {
            vec![
                p["id"].as_str().unwrap_or("").to_string(),
                p["name"].as_str().unwrap_or("").to_string(),
                p["category"].as_str().unwrap_or("").to_string(),
                money(
                    p["price"].as_i64().unwrap_or(0),
                    p["currency"].as_str().unwrap_or(""),
                ),
                p["stock"].to_string(),
            ]
        })
        .collect()
}

fn order_rows(items: &[Value]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|o| {
            let lines = o["items"]
                .as_array()
                .map(|ls| {
                    ls.iter()
                        .map(|l| format!("{}×{}", l["quantity"], l["name"].as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            vec![
                o["id"].as_str().unwrap_or("").to_string(),
                o["status"].as_str().unwrap_or("").to_string(),
                money(
                    o["total"].as_i64().unwrap_or(0),
                    o["currency"].as_str().unwrap_or(""),
                ),
                lines,
                o["created_at"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect()
}

const PRODUCT_HEADER: [&str; 5] = ["ID", "NAME", "CATEGORY", "PRICE", "STOCK"];
const ORDER_HEADER: [&str; 5] = ["ID", "STATUS", "TOTAL", "ITEMS", "CREATED"];

async fn run(cli: Cli) -> Result<(), Failure> {
    let session_path = cli.session.clone().unwrap_or_else(Session::default_path);
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| Failure::Unreachable(e.to_string()))?,
        gateway: cli.gateway.clone(),
        session: Session::load(&session_path),
        json: cli.json,
    };
    match cli.command {
        Command::Register {
            username,
            email,
            password,
        } => {
            let user = client
                .call(
                    Method::POST,
                    "/auth/register",
                    Some(json!({"username": username, "email": email, "password": password})),
                    false,
                )
                .await?;
            client.show(&user, |u| {
                println!(
                    "registered {} ({})",
                    u["username"].as_str().unwrap_or(""),
                    u["id"].as_str().unwrap_or("")
                )
            });
        }
        Command::Login { username, password } => {
            let tokens = client
                .call(
                    Method::POST,
                    "/auth/login",
                    Some(json!({"username": username, "password": password})),
                    false,
                )
                .await?;
            Session::from_tokens(&tokens, &cli.gateway)
                .save(&session_path)
                .map_err(|e| {
                    Failure::Usage(format!(
                        "cannot save the session to {}: {e}",
                        session_path.display()
                    ))
                })?;
            client.show(&json!({"logged_in": username}), |_| {
                println!("logged in as {username}")
            });
        }
        Command::Logout => {
            if let Some(refresh) = client.session.refresh_token() {
                client
                    .call(
                        Method::POST,
                        "/auth/logout",
                        Some(json!({"refresh_token": refresh})),
                        true,
                    )
                    .await?;
            }
            let _ = std::fs::remove_file(&session_path);
            client.show(&json!({"logged_out": true}), |_| println!("logged out"));
        }
        Command::Products(ProductsCommand::List { category, limit }) => {
            let mut path = format!("/products?limit={limit}");
            if let Some(c) = category {
                path.push_str(&format!("&category={c}"));
            }
            let page = client.call(Method::GET, &path, None, false).await?;
            client.show(&page, |p| {
                print_table(
                    &PRODUCT_HEADER,
                    &product_rows(p["items"].as_array().map_or(&[][..], Vec::as_slice)),
                )
            });
        }
        Command::Products(ProductsCommand::Show { id }) => {
            let p = client
                .call(Method::GET, &format!("/products/{id}"), None, false)
                .await?;
            client.show(&p, |p| {
                print_table(&PRODUCT_HEADER, &product_rows(std::slice::from_ref(p)))
            });
        }
        Command::Products(ProductsCommand::Create {
            name,
            category,
            price,
            currency,
            stock,
            description,
        }) => {
            let body = json!({"name": name, "category": category, "price": price, "currency": currency, "stock": stock, "description": description});
            let p = client
                .call(Method::POST, "/products", Some(body), true)
                .await?;
            client.show(&p, |p| {
                print_table(&PRODUCT_HEADER, &product_rows(std::slice::from_ref(p)))
            });
        }
        Command::Order {
            lines,
            idempotency_key,
        } => {
            let items: Vec<Value> = lines
                .iter()
                .map(|(id, q)| json!({"product_id": id, "quantity": q}))
                .collect();
            let value = client
                .call_with(
                    Method::POST,
                    "/orders",
                    Some(json!({"items": items})),
                    true,
                    idempotency_key.as_deref(),
                )
                .await?;
            client.show(&value, |o| {
                print_table(&ORDER_HEADER, &order_rows(std::slice::from_ref(o)))
            });
        }
        Command::Orders {
            command: None,
            status,
        } => {
            let path = match status {
                Some(s) => format!("/orders?status={s}&limit=100"),
                None => "/orders?limit=100".into(),
            };
            let page = client.call(Method::GET, &path, None, true).await?;
            client.show(&page, |p| {
                print_table(
                    &ORDER_HEADER,
                    &order_rows(p["items"].as_array().map_or(&[][..], Vec::as_slice)),
                )
            });
        }
        Command::Orders {
            command: Some(OrdersCommand::Show { id }),
            ..
        } => {
            let o = client
                .call(Method::GET, &format!("/orders/{id}"), None, true)
                .await?;
            client.show(&o, |o| {
                print_table(&ORDER_HEADER, &order_rows(std::slice::from_ref(o)))
            });
        }
        Command::Orders {
            command: Some(OrdersCommand::Cancel { id }),
            ..
        } => {
            let o = client
                .call(Method::POST, &format!("/orders/{id}/cancel"), None, true)
                .await?;
            client.show(&o, |o| {
                print_table(&ORDER_HEADER, &order_rows(std::slice::from_ref(o)))
            });
        }
        Command::Pay {
            order_id,
            method,
            amount,
        } => {
            let amount = match amount {
                Some(a) => a,
                None => client
                    .call(Method::GET, &format!("/orders/{order_id}"), None, true)
                    .await?["total"]
                    .as_i64()
                    .unwrap_or(0),
            };
            let body = json!({"order_id": order_id, "amount": amount, "method": method});
            let p = client
                .call(Method::POST, "/payments", Some(body), true)
                .await?;
            client.show(&p, |p| {
                print_table(
                    &["PAYMENT", "ORDER", "AMOUNT", "STATUS"],
                    &[vec![
                        p["id"].as_str().unwrap_or("").to_string(),
                        p["order_id"].as_str().unwrap_or("").to_string(),
                        money(
                            p["amount"].as_i64().unwrap_or(0),
                            p["currency"].as_str().unwrap_or(""),
                        ),
                        p["status"].as_str().unwrap_or("").to_string(),
                    ]],
                )
            });
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(problem, status)) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&problem).unwrap_or_default()
                );
            }
            let title = problem["title"].as_str().unwrap_or("request refused");
            eprint!("error: {title} ({status})");
            if let Some(detail) = problem["detail"].as_str() {
                eprint!(": {detail}");
            }
            eprintln!();
            for e in problem["errors"].as_array().into_iter().flatten() {
                eprintln!(
                    "  {}: {}",
                    e["field"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                );
            }
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Unreachable(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(3)
        }
    }
}
