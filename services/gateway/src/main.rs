//! The gateway binary.

fn main() -> std::process::ExitCode {
    mercato_kit::server::main::<mercato_gateway::Config>()
}
