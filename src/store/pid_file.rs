//! The holder's pid written into a lock file (SIF names, model-data caches), so that whoever
//! waits for the lock can say whom it waits for. Both halves are best effort: the pid is only
//! for messages.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

/// Writes this process's pid into the held lock file (which also marks the time of use).
pub fn write_holder(file: &mut File) {
    let _ = file
        .set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| write!(file, "{}", std::process::id()));
}

/// The pid the holder wrote into the lock file, if readable.
pub fn read_holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    Read::by_ref(file).take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
