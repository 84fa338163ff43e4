//! How a zoo is tested: the spec (TOML), the testing knobs from the environment, and the units
//! (durations, sizes) every input is given in.

pub mod backoff;
pub mod knobs;
pub mod predictions;
pub mod spec;
pub mod units;
