//! Running the cases: the harness (order, retries, fail-fast, records), the stages that make an
//! image or SIF ready before its cases, the verdict, and the spec's `versions` command.

pub mod harness;
pub mod images;
pub mod record;
pub mod sifs;
pub mod verdict;
pub mod versions;
