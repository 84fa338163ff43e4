//! The facts a result carries, as typed fields. Their names in a JUnit report are given in one
//! place (`crate::report::junit::names`), not here.

use std::path::PathBuf;
use std::time::Duration;

use super::predictions::PredictionCheck;
use super::RuntimeName;

/// What one attempt at a case ran, and with what: the first lines of its `system-out`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseFacts {
    /// The command as run (after the placeholders were filled).
    pub command: Vec<String>,
    /// Docker: the container's short id.
    pub container: Option<String>,
    /// Apptainer: the SIF file it ran.
    pub sif: Option<PathBuf>,
    /// The caches it used.
    pub caches: Vec<CacheUse>,
    /// Its predictions, read and compared (a spec with `[predictions]`, a command that passed).
    pub predictions: Option<PredictionCheck>,
}

/// A cache a case held while it ran: a Docker volume or a host folder, at a container path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheUse {
    pub source: String,
    pub path: String,
    /// How long the case waited for the cache's lock.
    pub waited: Duration,
}

/// What it took to make an image (or SIF) ready in this run: a pull, a download or a build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fetched {
    pub elapsed: Duration,
    /// Bytes transferred (compressed layers for a pull; the file for a download).
    pub bytes: u64,
}

/// What is the same for every case of one runtime and image: its testsuite's properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFacts {
    /// Docker: the image id. Apptainer: the SIF's md5.
    pub id: Option<String>,
    /// Apptainer: the SIF file.
    pub sif: Option<PathBuf>,
    /// The runtime's version (`docker version`, `apptainer --version`).
    pub runtime_version: Option<String>,
    /// What this run spent making it ready; `None` when it was there already.
    pub fetched: Option<Fetched>,
    /// What the spec's `versions` command printed in it.
    pub versions: Option<String>,
}

/// What is the same for every case of the run: every testsuite's properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFacts {
    pub run_id: String,
    pub runner_version: String,
    /// The spec's path.
    pub spec: String,
    /// The network every case had, when the run decided it (`--offline`).
    pub network: Option<String>,
    /// The caches the run used, or why none (`off (--no-cache)`).
    pub caches: Option<String>,
    /// The version of each runtime the run used.
    pub runtime_versions: Vec<(RuntimeName, String)>,
}
