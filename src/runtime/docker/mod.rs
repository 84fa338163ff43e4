//! The Docker runtime, through the Engine API (bollard). An image is made ready once per run
//! (inspected, or pulled with the login the docker CLI would use: [`image`]); each case runs in
//! a fresh labelled container (tty off, so stdout and stderr stay apart), attached to before it
//! starts, its output streamed into bounded captures while the supervisor waits on it, then
//! removed whatever happened ([`case`]). Containers that killed runs left behind are swept when
//! the runtime opens ([`sweep`]).

mod case;
mod image;
pub mod pull;
mod sweep;

pub use self::case::CaseError;
pub use self::image::ImageError;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::Docker;
use futures_util::future::{BoxFuture, Shared};
use thiserror::Error;
use tokio::sync::OnceCell;

pub use crate::engine::docker_host;
use crate::engine::labels;

use super::{
    Execution, Image, Options, PrepareError, Ready, RunRequest, Runtime, SetupError, Words,
};
use crate::cancel::Cancel;
use crate::config::knobs::Waits;
use crate::events;
use crate::identity::Identity;
use crate::record::{Failure, RuntimeName};
use crate::store::caches::Caches;
use crate::store::registry::HelperRun;
use crate::supervise::detached::Detached;

#[derive(Debug, Error)]
pub enum DockerError {
    #[error(
        "cannot reach the Docker daemon at {host} (start one: `sudo dockerd &` or \
         `sudo systemctl start docker`; or point DOCKER_HOST at one)"
    )]
    Unreachable {
        host: String,
        #[source]
        source: BollardError,
    },
}

/// The Docker daemon was lost during the run (the connection failed, not a request refused).
#[derive(Debug, Error)]
#[error("the Docker daemon at {host} was lost during the run")]
pub struct DaemonLost {
    pub host: String,
}

/// A container removal running in the background; any number of waiters may wait for it.
type Removal = Shared<BoxFuture<'static, ()>>;

pub struct DockerRuntime {
    docker: Docker,
    run_id: String,
    version: String,
    cancel: Cancel,
    identity: Identity,
    waits: Waits,
    /// How long a request may take (`Waits::request_timeout` for this run's grace period).
    request_timeout: Duration,
    /// Containers created for the next case while the case before it runs, by case name; the
    /// case takes its own, and those of cases that never ran are removed when their image is
    /// removed, or by `finish`.
    ahead: Mutex<HashMap<String, case::Ahead>>,
    /// Removals of finished containers, done while the next case runs; an image's removal and
    /// `finish` wait for them (each without taking them from the others).
    removals: Mutex<Vec<Removal>>,
    /// Set when the daemon stopped answering mid-run: later cases error at once.
    lost: AtomicBool,
    /// How credential helpers run (deadline, the lookups' cancel).
    helpers: HelperRun,
    /// The credential lookups, which run on blocking threads and outlive a `prepare` given up
    /// on: `finish` stops and waits for them, so no helper outlives the run.
    lookups: Detached,
    /// `--prune-images`: what a pull this run stopped left behind is removed by `finish`.
    prune: bool,
    /// With `prune`: the ids of the images the daemon had before this run's first pull (`None`
    /// when they could not be listed), so that cleaning up never touches one of them.
    before: OnceCell<Option<HashSet<String>>>,
    /// The images this run began to pull, and whether each pull finished.
    pulls: Mutex<HashMap<String, bool>>,
    /// The run's caches, whose plans for an image are learnt as it is made ready.
    caches: Option<Arc<Caches>>,
}

impl DockerRuntime {
    /// Connects (see [`DockerRuntime::connect`]) and removes what killed runs left behind.
    pub async fn open(options: &Options) -> Result<Self, SetupError> {
        let docker = Self::connect(options)
            .await
            .map_err(|e| SetupError::Unusable(Failure::new(e)))?;
        let sweep = docker.sweep_stale().await;
        if sweep.removed > 0 {
            events::send(events::Event::Swept {
                removed: sweep.removed,
            });
        }
        for problem in &sweep.problems {
            events::note(format!("sweep: {problem}"));
        }
        Ok(docker)
    }

    /// Connects as the docker CLI would (DOCKER_HOST, else the default socket), agrees on an API
    /// version, and checks the daemon answers. Requests may take as long as the longest stop
    /// (the grace period) and some.
    pub async fn connect(options: &Options) -> Result<Self, DockerError> {
        let unreachable = |source| DockerError::Unreachable {
            host: docker_host(),
            source,
        };
        let request_timeout = options.waits.request_timeout(options.grace);
        let docker = Docker::connect_with_defaults()
            .map_err(unreachable)?
            .with_timeout(request_timeout);
        let docker = docker.negotiate_version().await.map_err(unreachable)?;
        let version = docker.version().await.map_err(unreachable)?;
        let lookups = Detached::new(&options.cancel);
        Ok(Self {
            docker,
            run_id: options.run_id.clone(),
            version: version.version.unwrap_or_else(|| "unknown".into()),
            cancel: options.cancel.clone(),
            identity: Identity::of_this_process(),
            waits: options.waits,
            request_timeout,
            ahead: Mutex::default(),
            removals: Mutex::default(),
            lost: AtomicBool::new(false),
            helpers: HelperRun {
                timeout: options.helper_timeout,
                cancel: lookups.cancel().clone(),
            },
            lookups,
            prune: options.prune_images,
            before: OnceCell::new(),
            pulls: Mutex::default(),
            caches: options.caches.clone(),
        })
    }

    /// True once the daemon was lost during the run.
    pub fn daemon_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Notes that the daemon stopped answering when `e` says the connection failed (not that the
    /// daemon refused a request): the rest of the run is then not attempted.
    fn note_if_lost(&self, e: &BollardError) {
        if is_connection_error(e) {
            self.lost.store(true, Ordering::SeqCst);
        }
    }

    /// The labels of every container the runner creates (`case` names what it is for).
    fn labels(&self, case: &str) -> HashMap<String, String> {
        labels::for_container(&self.run_id, &self.identity, case)
    }
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> RuntimeName {
        super::DOCKER
    }

    fn version(&self) -> &str {
        &self.version
    }

    /// The image's name: one pull, and one removal, per image.
    fn key(&self, image: &Image) -> String {
        image.name.clone()
    }

    async fn prepare(&self, image: &Image) -> Result<Ready, PrepareError> {
        self.prepare_image(image).await
    }

    async fn run(&self, ready: &Ready, request: &RunRequest) -> Execution {
        self.run_case(ready, request).await
    }

    fn expect(&self, ready: &Ready, request: &RunRequest) {
        self.create_ahead(ready, request);
    }

    async fn remove(&self, ready: &Ready) -> Result<(), Failure> {
        self.remove_image(&ready.key).await
    }

    /// Waits for every container removal still in flight and removes the containers created
    /// ahead for cases that did not run; with `--prune-images`, once no credential helper runs
    /// any more, removes what the pulls this run stopped left behind.
    async fn finish(&self) {
        self.discard_ahead(|_| true).await;
        self.settle_removals().await;
        self.removals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        // A credential helper still running was given up on: its case was interrupted (the
        // run's cancel stopped it), or its image was pulled ahead for cases that did not run
        // (`--fail-fast`), which is killed here. Its end is waited for.
        self.lookups.stop_all(None).await;
        if self.prune {
            self.clean_stopped_pulls().await;
        }
    }

    fn prunes(&self) -> bool {
        self.prune
    }

    fn words(&self) -> Words {
        Words {
            noun: "image",
            fetched: "pulled",
            prune_flag: "--prune-images",
        }
    }

    fn interrupted_while(&self, image: &Image) -> String {
        format!("`{}` was being pulled", image.name)
    }

    fn lost(&self) -> Option<Failure> {
        self.daemon_lost().then(|| {
            Failure::new(DaemonLost {
                host: docker_host(),
            })
        })
    }
}

/// True when the request never got an answer from the daemon (as opposed to an answer that
/// refuses it).
fn is_connection_error(e: &BollardError) -> bool {
    !matches!(
        e,
        BollardError::DockerResponseServerError { .. }
            | BollardError::DockerContainerWaitError { .. }
            | BollardError::JsonDataError { .. }
            | BollardError::JsonSerdeError { .. }
    )
}
