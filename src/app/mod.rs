//! The commands: a test run, `matrix`, `merge` and `cache`. Each glues the stages together
//! (select, partition, run, runtime, store, report); none holds a stage's logic.

pub mod cache;
pub mod matrix;
pub mod merge;
pub mod run;
