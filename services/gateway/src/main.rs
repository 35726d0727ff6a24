//! The gateway binary.

fn main() -> std::process::ExitCode {
    mercato_kit::server::main("gateway", mercato_gateway::run)
}
