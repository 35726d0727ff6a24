//! The product service binary.

fn main() -> std::process::ExitCode {
    mercato_kit::server::main::<mercato_product::Config>()
}
