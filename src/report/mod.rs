//! What the run tells people. The [`Reporter`] is the one consumer of the run's event stream:
//! its display owns the terminal, and it keeps the cases' records, from which the JUnit report
//! and the Markdown summary are written at the end (never read back from what was just
//! written). `junit` also reads reports back (merge, --durations), for `merge`'s summary.

pub mod display;
pub mod junit;
pub mod summary;
pub mod workdir;

use std::sync::{Arc, Mutex};

use crate::events::{Event, Sink};
use crate::record::Record;
use display::Display;

/// The run's one reporter: draws every event, and keeps every case's record.
pub struct Reporter {
    display: Display,
    records: Mutex<Vec<Arc<Record>>>,
}

impl Reporter {
    pub fn new(display: Display) -> Reporter {
        Reporter {
            display,
            records: Mutex::default(),
        }
    }

    pub fn display(&self) -> &Display {
        &self.display
    }

    /// The records of the cases that ended, in the order they ended; the reporter keeps none.
    pub fn take_records(&self) -> Vec<Arc<Record>> {
        std::mem::take(&mut *self.records.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Sink for Reporter {
    fn event(&self, event: Event) {
        if let Event::CaseFinished { record, .. } = &event {
            self.records
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Arc::clone(record));
        }
        self.display.handle(event);
    }
}
