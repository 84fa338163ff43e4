//! A failure of the outside world, not of the model: a case whose output matched one of the
//! spec's `infra_failures` (a throttled or unreachable download server). It is an error (JUnit
//! `error` of type `infra`), retried with backoff apart from `--retries`, and counted apart in
//! the summary ("N models could not fetch their data").

use thiserror::Error;

/// The JUnit `error` type of such a case, and of its earlier attempts.
pub const INFRA: &str = "infra";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "its data could not be fetched (exit code {code}): the output says `{line}`, which the \
     spec's `infra_failures` count as the outside world failing (`{pattern}`), not the model"
)]
pub struct InfraFailure {
    /// The pattern of `infra_failures` that matched.
    pub pattern: String,
    /// The output line it matched in (cut to a readable length).
    pub line: String,
    /// The command's exit code.
    pub code: i64,
}
