//! The order service binary.

// mimalloc: glibc's malloc spent about a sixth of the gateway's time under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    mercato_kit::server::main::<mercato_order::Config>()
}
