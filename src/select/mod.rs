//! Which cases run: the zoo's catalog, the selection planned into cases, and the narrowing by
//! changed files.

pub mod catalog;
pub mod changed_since;
pub mod filter;
pub mod inputs;
pub mod order;
pub mod plan;
pub mod rerun;
