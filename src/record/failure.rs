//! An error kept with its sources for as long as a result lives: what kept a case from running
//! (a missing image, a failed download, a daemon gone). It is shared by every case it concerns,
//! hence an `Arc`; it is shown by the one chain printer (`crate::error_chain`), so its message
//! never needs to embed its source's text.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use crate::error_chain::chain;

#[derive(Clone)]
pub struct Failure(Arc<dyn Error + Send + Sync + 'static>);

impl Failure {
    /// Keeps an error with its sources.
    pub fn new(error: impl Error + Send + Sync + 'static) -> Self {
        Failure(Arc::new(error))
    }

    /// A failure that is only a sentence (no source to keep).
    pub fn message(text: impl Into<String>) -> Self {
        Failure(Arc::new(Message(text.into())))
    }

    /// The error itself (to look for a cause of a given type).
    pub fn error(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.0
    }
}

/// The whole chain, "X: because Y: because Z".
impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&chain(&*self.0))
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Failure({self})")
    }
}

/// Two failures are the same when they say the same.
impl PartialEq for Failure {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for Failure {}

#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Message {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("failed to pull image `x`")]
    struct Pull(#[source] std::io::Error);

    #[test]
    fn a_failure_shows_its_chain_once() {
        let f = Failure::new(Pull(std::io::Error::other("connection refused")));
        assert_eq!(
            f.to_string(),
            "failed to pull image `x`: because connection refused"
        );
        assert_eq!(f.clone(), f);
        assert_eq!(Failure::message("no image").to_string(), "no image");
    }
}
