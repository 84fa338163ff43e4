//! The runtimes: what runs a case. Each implements [`Runtime`]: make an image (or SIF) ready,
//! run a request in it, say how it ended. They know nothing of specs, verdicts or reports: the
//! run stage (`crate::run`) asks, and judges what they say.
//!
//! Adding a runtime touches this folder only: its module, and [`open`] and [`NAMES`] here, the
//! one place that picks a runtime by name.

pub mod apptainer;
pub mod docker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cancel::Cancel;
use crate::capture::Captured;
use crate::config::knobs::Waits;
use crate::config::spec::Network;
use crate::config::units::show_duration;
use crate::events::{self, Event};
use crate::record::facts::{CaseFacts, ImageFacts};
use crate::record::{Failure, RuntimeName};
use crate::store::caches::{CacheError, Caches};
use crate::store::sif::SifSource;
use crate::supervise::Notice;

/// What opening a runtime takes: the run's settings either runtime needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The run's id: the label on every container it makes (a sweep spares its own).
    pub run_id: String,
    pub cancel: Cancel,
    /// `--grace`: requests to the daemon may take as long as a stop does.
    pub grace: Duration,
    /// How long a target that will not stop is waited on, and the daemon's requests.
    pub waits: Waits,
    /// The deadline of a credential helper (Docker's logins).
    pub helper_timeout: Duration,
    /// `--prune-images`: Docker removes each image it pulled after its last case, and what a
    /// pull it stopped left behind when it finishes.
    pub prune_images: bool,
    /// `--prune-sifs`: Apptainer removes each SIF it downloaded or built after its last case.
    pub prune_sifs: bool,
    /// `--singularity-bin`: the Apptainer binary; `None` looks for `apptainer`, then
    /// `singularity`, on PATH.
    pub apptainer_bin: Option<PathBuf>,
    /// `--sif-dir`.
    pub sif_dir: PathBuf,
    /// `--sif-from-docker`: build a SIF from the Docker image when the catalog has none.
    pub sif_from_docker: bool,
    /// `--tmp-dir`: scratch space for SIF builds (else `$APPTAINER_TMPDIR`, else the SIF folder).
    pub tmp_dir: Option<PathBuf>,
    /// `--download-timeout`: one SIF download or build, in all.
    pub download_timeout: Duration,
    /// The images the selected cases of the runtime being opened need (a read-only SIF folder
    /// must hold all of theirs).
    pub images: Vec<Image>,
    /// The run's caches: Docker learns what an image's new cache volumes need as it makes the
    /// image ready.
    pub caches: Option<Arc<Caches>>,
}

/// Opens the runtime called `name`: connects to it and checks it can be used. The one place
/// that picks a runtime by name.
pub async fn open(name: RuntimeName, options: &Options) -> Result<Arc<dyn Runtime>, SetupError> {
    if name == DOCKER {
        let docker = docker::DockerRuntime::open(options).await?;
        Ok(Arc::new(docker))
    } else if name == APPTAINER {
        let apptainer = apptainer::SingularityRuntime::open(options).await?;
        Ok(Arc::new(apptainer))
    } else {
        Err(SetupError::Unusable(Failure::message(format!(
            "there is no runtime called `{name}`"
        ))))
    }
}

/// How a request ended whose caches could not be taken: an interruption while it waited (for
/// a cache's lock, or a volume's helper) ends it before it started; anything else is an error.
fn cache_ended(e: CacheError) -> Ended {
    if e.is_interrupted() {
        Ended::NotStarted {
            why: Failure::new(e),
        }
    } else {
        Ended::Errored {
            error: Failure::new(e),
        }
    }
}

/// What the supervisor of the request `case` (whose timeout is `timeout`) says as it goes, on
/// the run's event stream.
fn tell(case: &str, timeout: Duration) -> impl FnMut(Notice) + '_ {
    move |notice| match notice {
        Notice::Slow(running) => events::send(Event::SlowCase {
            case: case.to_string(),
            running,
        }),
        Notice::TimedOut => events::note(format!(
            "{case} timed out after {}; stopping it",
            show_duration(timeout)
        )),
        Notice::Note(text) => events::note(format!("{case}: {text}")),
    }
}

// ---------------------------------------------------------------------------------------------
// The interface every runtime implements.

/// Docker, through the Engine API.
pub const DOCKER: RuntimeName = RuntimeName::new("docker");
/// Apptainer or Singularity, as a binary on the machine (`apptainer exec`).
pub const APPTAINER: RuntimeName = RuntimeName::new("singularity");
/// Every runtime, in the order a run with several tests them.
pub const NAMES: [RuntimeName; 2] = [DOCKER, APPTAINER];

/// The runtime called `name`, if there is one.
pub fn by_name(name: &str) -> Option<RuntimeName> {
    NAMES.into_iter().find(|n| n.as_str() == name)
}

/// What a case runs in: its Docker image, and the SIF the catalog names for it (Apptainer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The Docker image reference (`kipoi/kipoi-docker:mmsplice`, with `-slim` when asked).
    pub name: String,
    /// The catalog's SIF for the case's model, if it has one.
    pub sif: Option<SifSource>,
}

/// An image (or SIF) a runtime has made ready to run cases in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// What cases share this: the runtime's [`Runtime::key`] of their image.
    pub key: String,
    /// What it was made ready from.
    pub image: Image,
    /// What the report says of the image (id, runtime version, what making it ready took).
    pub facts: ImageFacts,
    /// Apptainer: the verified SIF to run.
    pub sif: Option<PathBuf>,
}

/// How messages about making a runtime's images ready speak of them: `pulled 2 images`,
/// `interrupted while `IMAGE` was being pulled`, `--prune-images: removed IMAGE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Words {
    /// What it makes ready: `image`, `SIF`.
    pub noun: &'static str,
    /// What it did when it made one ready in this run: `pulled`, `fetched`.
    pub fetched: &'static str,
    /// The flag that prunes what it fetched.
    pub prune_flag: &'static str,
}

/// Why an image (or SIF) could not be made ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepareError {
    /// The run was interrupted while it was being made ready: `what` ends "the run was
    /// interrupted while ...": "`IMAGE` was being pulled" (Docker), "its SIF was downloading"
    /// (Apptainer).
    Interrupted { what: String },
    /// It cannot be had: every case of it is an error that says why.
    Failed(Failure),
}

/// Why a runtime cannot be used at all.
#[derive(Debug)]
pub enum SetupError {
    /// An input is wrong (a `--sif-dir` that cannot be used): exit 2.
    Input(Failure),
    /// The runtime is missing or broken (no daemon, no apptainer): exit 3, every case errors.
    Unusable(Failure),
    /// The run was interrupted while it was being set up.
    Interrupted,
}

/// Everything a runtime needs to run one command in a ready image.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The case it is for (`docker::HAL`), or what else (`versions of IMAGE`): for labels
    /// and messages.
    pub case_name: String,
    pub command: Vec<String>,
    pub workdir: Option<String>,
    /// `NAME=value` pairs: all the container sees of an environment.
    pub env: Vec<String>,
    pub network: Network,
    /// `SOURCE:/path[:ro]` mounts (Docker volume names or host paths).
    pub volumes: Vec<String>,
    pub timeout: Duration,
    /// How long after SIGTERM before SIGKILL.
    pub grace: Duration,
    /// After this long it is reported as slow (and again each period).
    pub slow_period: Duration,
    pub memory: Option<u64>,
    /// Bytes kept at each end of stdout and of stderr.
    pub keep: usize,
    /// The run's caches; `None` with `--no-cache`, a spec without `caches`, or a probe.
    pub caches: Option<Arc<Caches>>,
    /// `--offline`: no network at all (for Docker `network` already says `none`).
    pub offline: bool,
    /// Apptainer only: the image's home folder (the spec's `apptainer_home`).
    pub apptainer_home: Option<String>,
    /// The case's output folder on the host, where it writes its predictions: mounted
    /// read-write at `crate::config::predictions::CONTAINER_DIR` (Apptainer: a `--bind`).
    pub output: Option<PathBuf>,
}

/// How a run of a request ended, as the runtime saw it (the run stage judges it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The command exited with this code (0: it passed; 128 + n: a shell's way to say it died
    /// of signal n).
    Exited { code: i64 },
    /// The command was killed by a signal it did not ask for.
    Signalled { signal: i32 },
    /// The kernel killed it for memory; `limit` is the memory limit it had, if any.
    OutOfMemory { limit: Option<u64> },
    /// Stopped after running past its timeout; `killed` when SIGTERM did not end it and
    /// SIGKILL did, after the grace period.
    TimedOut { after: Duration, killed: bool },
    /// Stopped because the run was interrupted (Ctrl-C, SIGTERM) while it ran.
    Interrupted,
    /// Ended before its command started, by an interruption while it waited (for a cache's
    /// lock): `why` says where it was.
    NotStarted { why: Failure },
    /// Stopped (at its timeout when `timed_out`, else on interruption), but it would not go:
    /// still there `waited` after the stop, through its grace period and a SIGKILL. The
    /// runner gave up on it.
    Stuck {
        timed_out: Option<Duration>,
        waited: Duration,
        /// What would not go: `container`, `process`.
        what: &'static str,
    },
    /// It could not run (a container that could not be created, a daemon lost mid-run).
    Errored { error: Failure },
}

/// What a runtime says of one run of a request.
#[derive(Debug)]
pub struct Execution {
    pub ended: Ended,
    pub stdout: Captured,
    pub stderr: Captured,
    /// The command's own time: from its start to its end, without making the image ready.
    pub duration: Duration,
    pub facts: CaseFacts,
}

impl Execution {
    /// An end reached before anything ran (no output, no time).
    pub fn before_start(ended: Ended, request: &RunRequest) -> Self {
        Execution {
            ended,
            stdout: Captured::new(request.keep),
            stderr: Captured::new(request.keep),
            duration: Duration::ZERO,
            facts: CaseFacts {
                command: request.command.clone(),
                ..CaseFacts::default()
            },
        }
    }
}

/// A runtime: Docker through the Engine API, Apptainer as a binary. Shared by every case of a
/// run, across threads.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    /// Its name (cases' names start with it).
    fn name(&self) -> RuntimeName;

    /// Its version, for the report.
    fn version(&self) -> &str;

    /// Which cases share one [`Runtime::prepare`] (and one prune): Docker's image name,
    /// Apptainer's SIF name. Cheap, and the same for the same image all run long.
    fn key(&self, image: &Image) -> String;

    /// Makes the image ready to run: found or pulled (Docker), fetched, verified or built
    /// (Apptainer). Called once per key and run by the run stage, before the image's cases,
    /// so a case's time never holds it. Interruptible.
    async fn prepare(&self, image: &Image) -> Result<Ready, PrepareError>;

    /// Runs one request in a ready image and says how it ended; removes what it made for it
    /// (perhaps in the background: [`Runtime::finish`] waits). Every wait is bounded (the
    /// supervisor), and an interruption stops it.
    async fn run(&self, ready: &Ready, request: &RunRequest) -> Execution;

    /// A hint that `request` will run next in `ready` (Docker creates its container ahead).
    fn expect(&self, _ready: &Ready, _request: &RunRequest) {}

    /// Whether the run asked it to remove what it fetched after each image's last case (its
    /// [`Words::prune_flag`]): the stage then calls [`Runtime::remove`].
    fn prunes(&self) -> bool {
        false
    }

    /// Removes what [`Runtime::prepare`] fetched (`--prune-images`, `--prune-sifs`): after the
    /// image's last case, once nothing of the runner uses it. Only for an image this run
    /// fetched.
    async fn remove(&self, ready: &Ready) -> Result<(), Failure>;

    /// Before the run ends: waits for what runs in the background (removals) and cleans up
    /// what is left (containers made ahead for cases that never ran, a stopped pull's layers).
    async fn finish(&self);

    /// How messages about making its images ready speak of them.
    fn words(&self) -> Words {
        Words {
            noun: "image",
            fetched: "fetched",
            prune_flag: "--prune-images",
        }
    }

    /// What was happening to `image` when an interruption came while it was made ready, as
    /// "the run was interrupted while ..." ends.
    fn interrupted_while(&self, image: &Image) -> String {
        format!("`{}` was being made ready", image.name)
    }

    /// Set when the runtime was lost during the run (the Docker daemon went away): the run
    /// ends with exit 3, and later cases are not attempted.
    fn lost(&self) -> Option<Failure> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(sif_dir: PathBuf, apptainer_bin: Option<PathBuf>) -> Options {
        Options {
            run_id: "unit".into(),
            cancel: Cancel::new(),
            grace: Duration::from_secs(1),
            waits: Waits::default(),
            helper_timeout: Duration::from_secs(1),
            prune_images: false,
            prune_sifs: false,
            apptainer_bin,
            sif_dir,
            sif_from_docker: false,
            tmp_dir: None,
            download_timeout: Duration::from_secs(1),
            images: Vec::new(),
            caches: None,
        }
    }

    fn setup_error(opened: Result<Arc<dyn Runtime>, SetupError>) -> SetupError {
        match opened {
            Ok(runtime) => panic!("{} opened", runtime.name()),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn a_bad_sif_dir_is_an_input_and_a_missing_binary_makes_the_runtime_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let missing = Some(dir.path().join("no-apptainer"));
        match setup_error(open(APPTAINER, &options(file, missing.clone())).await) {
            SetupError::Input(e) => assert!(e.to_string().contains("--sif-dir"), "{e}"),
            other => panic!("{other:?}"),
        }
        let sifs = dir.path().join("sifs");
        match setup_error(open(APPTAINER, &options(sifs.clone(), missing)).await) {
            SetupError::Unusable(e) => assert!(e.to_string().contains("does not exist"), "{e}"),
            other => panic!("{other:?}"),
        }
        let unknown = RuntimeName::new("podman");
        match setup_error(open(unknown, &options(sifs, None)).await) {
            SetupError::Unusable(e) => assert!(e.to_string().contains("`podman`"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
