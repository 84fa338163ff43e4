//! A STAND-IN runtime for the run stage's unit tests: no container, no process. Each case's
//! command says how it ends (`pass`, `fail`, `flaky` (fails on attempt 1), `slow:MS`), and
//! the stand-in records what it was asked (prepares, runs, removals), so the tests can check
//! what the dispatcher and the stage did.

use std::sync::Mutex;
use std::time::Duration;

use crate::capture::Captured;
use crate::record::facts::{CaseFacts, Fetched, ImageFacts};
use crate::record::{Failure, RuntimeName};
use crate::runtime::{Ended, Execution, Image, PrepareError, Ready, RunRequest, Runtime};

/// What the stand-in was asked, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    Prepare(String),
    Run(String),
    Remove(String),
}

pub struct StandIn {
    pub name: RuntimeName,
    pub asked: Mutex<Vec<Asked>>,
    /// Images whose `prepare` fails.
    pub broken_images: Vec<String>,
    /// Every `prepare` fetches (as a pull would), so the stage may prune.
    pub fetches: bool,
    /// The run asked to prune what it fetched (`--prune-images`).
    pub prunes: bool,
    /// Images that share one key (as the models of one SIF do): image -> key.
    pub keys: Vec<(String, String)>,
}

impl StandIn {
    pub fn new(name: RuntimeName) -> StandIn {
        StandIn {
            name,
            asked: Mutex::default(),
            broken_images: Vec::new(),
            fetches: false,
            prunes: false,
            keys: Vec::new(),
        }
    }

    pub fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }

    fn note(&self, asked: Asked) {
        self.asked.lock().unwrap().push(asked);
    }
}

#[async_trait::async_trait]
impl Runtime for StandIn {
    fn name(&self) -> RuntimeName {
        self.name
    }

    fn version(&self) -> &str {
        "stand-in 1.0"
    }

    fn key(&self, image: &Image) -> String {
        self.keys
            .iter()
            .find(|(i, _)| *i == image.name)
            .map_or_else(|| image.name.clone(), |(_, key)| key.clone())
    }

    fn prunes(&self) -> bool {
        self.prunes
    }

    async fn prepare(&self, image: &Image) -> Result<Ready, PrepareError> {
        self.note(Asked::Prepare(image.name.clone()));
        tokio::task::yield_now().await;
        if self.broken_images.contains(&image.name) {
            return Err(PrepareError::Failed(Failure::message(format!(
                "image `{}` is missing",
                image.name
            ))));
        }
        Ok(Ready {
            key: self.key(image),
            image: image.clone(),
            facts: ImageFacts {
                id: Some(format!("id-of-{}", image.name)),
                runtime_version: Some("stand-in 1.0".into()),
                fetched: self.fetches.then_some(Fetched {
                    elapsed: Duration::from_millis(10),
                    bytes: 100,
                }),
                ..ImageFacts::default()
            },
            sif: None,
        })
    }

    async fn run(&self, ready: &Ready, request: &RunRequest) -> Execution {
        self.note(Asked::Run(format!(
            "{}: {}",
            request.case_name,
            request.command.join(" ")
        )));
        let mut stdout = Captured::new(request.keep);
        let word = request.command.first().map(String::as_str).unwrap_or("");
        let attempt = request.command.get(1).map(String::as_str).unwrap_or("1");
        let code = match word {
            "pass" => 0,
            "flaky" if attempt == "1" => 1,
            "flaky" => 0,
            "versions" => {
                stdout.push(format!("pkg==1 in {}\n", ready.key).as_bytes());
                0
            }
            w if w.starts_with("slow:") => {
                let ms: u64 = w[5..].parse().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                0
            }
            _ => {
                stdout.push(b"ERROR [kipoi] deliberate failure\n");
                1
            }
        };
        Execution {
            ended: Ended::Exited { code },
            stdout,
            stderr: Captured::new(request.keep),
            duration: Duration::from_millis(3),
            facts: CaseFacts {
                command: request.command.clone(),
                container: Some("c0ffee".into()),
                ..CaseFacts::default()
            },
        }
    }

    async fn remove(&self, ready: &Ready) -> Result<(), Failure> {
        self.note(Asked::Remove(ready.key.clone()));
        Ok(())
    }

    async fn finish(&self) {}
}
