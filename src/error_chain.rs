//! Errors shown with their causes: "failed to X: because Y: because Z". Typed errors keep
//! their sources (`#[source]`), and this walks them once, where the error is finally shown (the
//! terminal, the JUnit message), instead of each layer flattening its cause into a string.

use std::error::Error;

/// The error's message followed by each cause's. The runner's own errors never embed their
/// source's text (the chain shows it); a cause whose text is already there is skipped only for
/// foreign errors that do (bollard's and hyper's).
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": because ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("failed to pull image `x`")]
    struct Pull(#[source] Io);

    #[derive(Debug, thiserror::Error)]
    #[error("connection refused")]
    struct Io(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("os error 111")]
    struct Inner;

    #[test]
    fn causes_follow_with_because() {
        assert_eq!(
            chain(&Pull(Io(Inner))),
            "failed to pull image `x`: because connection refused: because os error 111"
        );
    }

    /// A foreign error that repeats its source.
    #[derive(Debug, thiserror::Error)]
    #[error("failed to read: connection refused")]
    struct Repeats(#[source] Io);

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        assert_eq!(
            chain(&Repeats(Io(Inner))),
            "failed to read: connection refused: because os error 111"
        );
    }

    /// The runner's errors that keep a source show its text once, through this chain or
    /// through anyhow's `{:#}` (how `main` prints an input error).
    #[test]
    fn the_runners_errors_name_their_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone.xml");
        let read = crate::report::junit::read::scan(&missing).unwrap_err();
        let summary = crate::report::summary::write(Some(&missing.join("s.md")), "x").unwrap_err();
        let not_junit = dir.path().join("notj.xml");
        std::fs::write(&not_junit, "model,seconds").unwrap();
        let durations = crate::report::junit::durations::load(&not_junit).unwrap_err();
        for (text, cause) in [
            (chain(&read), "os error 2"),
            (format!("{:#}", anyhow::Error::from(read)), "os error 2"),
            (chain(&summary), "os error"),
            (format!("{:#}", anyhow::Error::from(summary)), "os error"),
            (chain(&durations), "is not a JUnit report"),
            (
                format!("{:#}", anyhow::Error::from(durations)),
                "is not a JUnit report",
            ),
        ] {
            assert_eq!(text.matches(cause).count(), 1, "{text}");
        }
    }
}
