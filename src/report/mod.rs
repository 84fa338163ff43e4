//! What the run tells people: the terminal display, the JUnit report (written, read back,
//! merged), and the Markdown summary.

pub mod display;
pub mod junit;
pub mod summary;
pub mod workdir;
