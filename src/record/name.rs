//! A runtime's name: what a case's name starts with (`docker::HAL`), what `--runtime` takes,
//! and the first part of a JUnit classname (`docker:IMAGE`). The runtimes themselves live in
//! `crate::runtime`, which lists the names it knows; everything else only carries a name.

use std::fmt;

/// The name of a runtime (`docker`, `singularity`). Ordered by the name, so the cases of one
/// runtime run together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuntimeName(&'static str);

impl RuntimeName {
    /// A runtime's name; `crate::runtime` makes one per runtime it knows.
    pub const fn new(name: &'static str) -> Self {
        RuntimeName(name)
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for RuntimeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}
