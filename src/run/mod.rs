//! Running the cases: the dispatcher (order, threads, retries, fail-fast, cancel), the stage
//! that makes an image or SIF ready before its cases (pull-ahead, prune), the verdict, and the
//! spec's `versions` command, and the runner's own prediction check.

pub mod dispatcher;
pub mod predictions;
pub mod stage;
#[cfg(test)]
mod standin;
pub mod verdict;
pub mod versions;
