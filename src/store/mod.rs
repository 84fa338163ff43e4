//! What is kept on disk between runs: the model-data caches, the SIF cache, and the registry
//! logins the docker CLI keeps.

pub mod caches;
pub mod lock;
pub mod registry;
pub mod sif;
