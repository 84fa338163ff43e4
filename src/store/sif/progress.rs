//! A SIF download's progress, shown by the run's reporter (a live bar on a terminal, plain
//! lines with byte counts elsewhere), like an image pull's.

use crate::config::units::show_size;
use crate::events::TransferHandle;

/// The progress of one download attempt; silent when not enabled.
pub(super) struct Progress {
    transfer: Option<TransferHandle>,
    label: String,
    total: Option<u64>,
}

impl Progress {
    /// A download of `total` bytes that starts at byte `start` (a resumed one further than 0).
    pub(super) fn new(enabled: bool, label: &str, start: u64, total: Option<u64>) -> Self {
        Progress {
            transfer: enabled.then(|| TransferHandle::start_at(label, start, total)),
            label: label.to_string(),
            total,
        }
    }

    pub(super) fn update(&mut self, done: u64) {
        if let Some(t) = &self.transfer {
            t.progress(done, self.total);
        }
    }

    pub(super) fn finish(&mut self, done: u64) {
        if let Some(t) = self.transfer.take() {
            t.progress(done, self.total);
            t.end(format!("{}: {} fetched", self.label, show_size(done)));
        }
    }
}
