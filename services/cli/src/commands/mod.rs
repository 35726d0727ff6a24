//! One module a group of commands; [`run`] sends each subcommand to its own.

mod account;
mod orders;
mod pay;
mod products;

use crate::args::{Cli, Command};
use crate::client::{Client, Failure};
use crate::session::Session;

pub async fn run(cli: Cli) -> Result<(), Failure> {
    let session_path = cli.session.clone().unwrap_or_else(Session::default_path);
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| Failure::Unreachable(e.to_string()))?,
        gateway: cli.gateway.clone(),
        session: Session::load(&session_path),
        session_path,
        json: cli.json,
    };
    match cli.command {
        Command::Register {
            username,
            email,
            password,
        } => account::register(&client, &username, &email, password.expose()).await,
        Command::Login { username, password } => {
            account::login(&client, &username, password.expose()).await
        }
        Command::Logout => account::logout(&client).await,
        Command::Products(command) => products::run(&client, command).await,
        Command::Order {
            lines,
            idempotency_key,
        } => orders::place(&client, &lines, idempotency_key.as_deref()).await,
        Command::Orders { command, status } => orders::run(&client, command, status).await,
        Command::Pay {
            order_id,
            method,
            amount,
        } => pay::run(&client, &order_id, &method, amount).await,
    }
}
