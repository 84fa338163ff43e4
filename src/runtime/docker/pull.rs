//! Pulling one image through the Engine API, with byte progress for the reporter.
//!
//! The daemon reports per layer: `Pulling fs layer`, `Downloading` with current/total bytes,
//! `Download complete`, `Extracting`, `Pull complete`, or `Already exists`. [`LayerBytes`]
//! sums those into bytes done and bytes in total (the total grows as layers start), which is
//! what a person wants to see, and what the report keeps as `pulled-bytes`.

use std::collections::BTreeMap;
use std::time::Instant;

use bollard::auth::DockerCredentials;
use bollard::models::CreateImageInfo;
use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;

use crate::config::units::{show_duration, show_size};
use crate::engine::short;
use crate::events::TransferHandle;

/// What a finished pull moved (its time is the caller's to measure: it may try several times).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PullStats {
    /// Compressed bytes downloaded (layers the daemon already had count nothing).
    pub bytes: u64,
}

/// Per-layer byte counts of one pull.
#[derive(Debug, Default)]
pub struct LayerBytes {
    layers: BTreeMap<String, Layer>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Layer {
    done: u64,
    total: Option<u64>,
    finished: bool,
}

impl LayerBytes {
    /// Takes one progress message into account.
    pub fn add(&mut self, info: &CreateImageInfo) {
        let (Some(id), Some(status)) = (info.id.as_deref(), info.status.as_deref()) else {
            return;
        };
        let detail = info.progress_detail.as_ref();
        let count = |v: Option<i64>| v.and_then(|n| u64::try_from(n).ok());
        match status {
            "Downloading" => {
                let layer = self.layers.entry(id.to_string()).or_default();
                if let Some(total) = count(detail.and_then(|d| d.total)) {
                    layer.total = Some(total);
                }
                if let Some(current) = count(detail.and_then(|d| d.current)) {
                    layer.done = current;
                }
            }
            // Past the download: the whole layer is here.
            "Download complete" | "Verifying Checksum" | "Extracting" | "Pull complete" => {
                let layer = self.layers.entry(id.to_string()).or_default();
                layer.finished = true;
                if let Some(total) = layer.total {
                    layer.done = total;
                }
            }
            _ => {}
        }
    }

    /// Bytes downloaded so far.
    pub fn done(&self) -> u64 {
        self.layers.values().map(|l| l.done).sum()
    }

    /// Bytes in total, as far as known: the sizes of the layers that started downloading.
    pub fn total(&self) -> Option<u64> {
        let known: u64 = self.layers.values().filter_map(|l| l.total).sum();
        (known > 0).then_some(known)
    }
}

/// Why a pull failed, as the daemon said it (the registry's module reads what it means).
#[derive(Debug, Clone)]
pub struct Refused(pub String);

/// Pulls `image`, showing its progress through the reporter. Dropping the future (an
/// interruption) drops the stream, which ends the pull on the daemon's side too.
pub async fn pull(
    docker: &Docker,
    image: &str,
    credentials: Option<DockerCredentials>,
) -> Result<PullStats, Refused> {
    let started = Instant::now();
    let transfer = TransferHandle::start(format!("pull {image}"), None);
    let options = CreateImageOptionsBuilder::default()
        .from_image(image)
        .build();
    let mut stream = docker.create_image(Some(options), None, credentials);
    let mut bytes = LayerBytes::default();
    let mut result = Ok(());
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(message) = info.error_detail.as_ref().and_then(|d| d.message.clone()) {
                    result = Err(Refused(message));
                    break;
                }
                bytes.add(&info);
                transfer.progress(bytes.done(), bytes.total());
            }
            Err(e) => {
                result = Err(Refused(short(&e)));
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    let summary = match &result {
        Ok(()) => format!(
            "pulled {image}: {} in {}",
            show_size(bytes.done()),
            show_duration(elapsed)
        ),
        Err(Refused(why)) => format!("pull of {image} failed: {why}"),
    };
    transfer.end(summary);
    result.map(|()| PullStats {
        bytes: bytes.done(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ProgressDetail;

    fn info(id: &str, status: &str, current: Option<i64>, total: Option<i64>) -> CreateImageInfo {
        CreateImageInfo {
            id: Some(id.into()),
            status: Some(status.into()),
            progress_detail: Some(ProgressDetail { current, total }),
            error_detail: None,
        }
    }

    #[test]
    fn layer_bytes_add_up_across_layers_and_statuses() {
        let mut b = LayerBytes::default();
        b.add(&info("a", "Pulling fs layer", None, None));
        b.add(&info("b", "Already exists", None, None));
        assert_eq!((b.done(), b.total()), (0, None));
        b.add(&info("a", "Downloading", Some(100), Some(1000)));
        b.add(&info("c", "Downloading", Some(50), Some(500)));
        assert_eq!((b.done(), b.total()), (150, Some(1500)));
        b.add(&info("a", "Download complete", None, None));
        assert_eq!(b.done(), 1050);
        // Extraction counts bytes of its own: they must not be added again.
        b.add(&info("a", "Extracting", Some(10), Some(3000)));
        b.add(&info("a", "Pull complete", None, None));
        b.add(&info("c", "Downloading", Some(500), Some(500)));
        b.add(&info("c", "Pull complete", None, None));
        assert_eq!((b.done(), b.total()), (1500, Some(1500)));
        // Nonsense from the daemon (negative counts) is ignored, not wrapped around.
        b.add(&info("d", "Downloading", Some(-5), Some(-1)));
        assert_eq!(b.done(), 1500);
    }
}
