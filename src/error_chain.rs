//! Errors shown with their causes: "failed to X: because Y: because Z". Typed errors keep
//! their sources (`#[source]`), and this walks them once, where the error is finally shown (the
//! terminal, the JUnit message), instead of each layer flattening its cause into a string.

use std::error::Error;

/// The error's message followed by each cause's, skipping a cause whose text the message
/// already holds (some errors repeat their source in their own message).
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
}
