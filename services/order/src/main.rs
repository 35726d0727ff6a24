//! The order service binary.

fn main() -> std::process::ExitCode {
    mercato_kit::server::main("order", mercato_order::run)
}
