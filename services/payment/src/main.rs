//! The payment service binary.

fn main() -> std::process::ExitCode {
    mercato_kit::server::main("payment", mercato_payment::run)
}
