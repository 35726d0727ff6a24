//! The storefront binary.

fn main() -> std::process::ExitCode {
    mercato_kit::server::main::<mercato_storefront::Config>()
}
