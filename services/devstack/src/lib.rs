//! The whole store on one machine. [`env`] builds each service's environment exactly as
//! the operator's contract names it; [`dev`] prepares databases and credentials and runs
//! every service, as processes (`make dev`, `make bench`) or in-process (the tests that
//! cross service boundaries, through [`dev::TestStore`]).

pub mod dev;
pub mod env;
pub mod launch;
