//! `mercato`: log in, browse and manage products, order, pay and list orders against a
//! store's gateway. Tables for people, `--json` for scripts.
//!
//! Exit codes: 0 success, 1 the store refused the request, 2 bad usage, 3 the gateway
//! could not be reached.

mod args;
mod client;
mod commands;
mod session;
mod table;

use std::process::ExitCode;

use clap::Parser;

use crate::args::Cli;

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
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(json),
    }
}
