//! The auth service binary.

fn main() -> std::process::ExitCode {
    mercato_kit::server::main::<mercato_auth::Config>()
}
