//! The whole store on one machine. [`env`] builds each service's environment exactly as
//! the operator's contract names it; [`stack`] runs every service in-process on random
//! ports against fresh databases, for tests that cross service boundaries.

pub mod dev;
pub mod env;
pub mod launch;
pub mod stack;
