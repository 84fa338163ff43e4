//! The typed results every stage shares, from the runtime up to the report: a runtime's name,
//! an error kept with its sources, and the facts a result carries.

pub mod facts;
mod failure;
mod name;

pub use failure::Failure;
pub use name::RuntimeName;
