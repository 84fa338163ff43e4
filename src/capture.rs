//! Bounded capture of a container's output stream, spooled to disk.
//!
//! The first `keep` bytes go to a spool file as they arrive; the last `keep` bytes are held in a
//! ring and appended when the stream ends, after a line that says how much was cut from the
//! middle. So a case costs the runner at most `keep` bytes of memory per stream while it runs,
//! and nothing but a file handle once it has ended: memory depends on one case's output, never
//! on how many cases ran. The JUnit report streams the spooled text back from disk.
//!
//! Spool files live in the folder given to [`set_spool_dir`] (the runner puts a temporary folder
//! beside the report), else in the system's temp folder, and are deleted when their [`Output`]
//! is dropped.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::OnceLock;

use tempfile::NamedTempFile;

/// Default bytes kept at each end of a stream.
pub const DEFAULT_KEEP: usize = 64 * 1024;

static SPOOL_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Where spool files go for the rest of the process (the first call wins).
pub fn set_spool_dir(dir: PathBuf) {
    let _ = SPOOL_DIR.set(dir);
}

fn new_spool_file() -> std::io::Result<NamedTempFile> {
    let dir = SPOOL_DIR.get().cloned().unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix("case-")
        .suffix(".out")
        .tempfile_in(dir)
}

/// A stream being captured.
#[derive(Debug)]
pub struct Captured {
    keep: usize,
    body: Body,
    head_len: usize,
    tail: VecDeque<u8>,
    total: u64,
}

/// Where the kept bytes are: a spool file, or memory when no spool file could be made (then the
/// first write error is noted in the output itself) or when asked for ([`Captured::in_memory`],
/// with no note).
#[derive(Debug)]
enum Body {
    Pending,
    File(NamedTempFile),
    Memory { bytes: Vec<u8>, why: String },
}

impl Captured {
    /// Keeps up to `keep` bytes of the head and `keep` bytes of the tail.
    pub fn new(keep: usize) -> Self {
        Self {
            keep,
            body: Body::Pending,
            head_len: 0,
            tail: VecDeque::new(),
            total: 0,
        }
    }

    /// Like [`Captured::new`], but kept in memory only, never spooled to disk: for output that
    /// may hold a secret (a credential helper's answer).
    pub fn in_memory(keep: usize) -> Self {
        Self {
            body: Body::Memory {
                bytes: Vec::new(),
                why: String::new(),
            },
            ..Self::new(keep)
        }
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = self.keep.saturating_sub(self.head_len);
        if room > 0 {
            let take = room.min(bytes.len());
            self.write_body(&bytes[..take]);
            self.head_len += take;
            bytes = &bytes[take..];
        }
        if bytes.len() >= self.keep {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.keep..]);
        } else {
            let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.keep);
            self.tail.drain(..overflow);
            self.tail.extend(bytes);
        }
    }

    fn write_body(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if matches!(self.body, Body::Pending) {
            self.body = match new_spool_file() {
                Ok(file) => Body::File(file),
                Err(e) => Body::Memory {
                    bytes: Vec::new(),
                    why: format!("could not create a spool file: {e}"),
                },
            };
        }
        let failed = match &mut self.body {
            Body::File(file) => file.write_all(bytes).err(),
            Body::Memory { bytes: kept, .. } => {
                kept.extend_from_slice(bytes);
                None
            }
            Body::Pending => None,
        };
        if let Some(e) = failed {
            // Keep going in memory (bounded by `keep`): what was spooled so far is read back.
            let mut kept = match std::mem::replace(&mut self.body, Body::Pending) {
                Body::File(file) => read_all(file.as_file()).unwrap_or_default(),
                _ => Vec::new(),
            };
            kept.extend_from_slice(bytes);
            self.body = Body::Memory {
                bytes: kept,
                why: format!("writing the spool file failed: {e}"),
            };
        }
    }

    /// Bytes seen but not kept.
    pub fn cut(&self) -> u64 {
        self.total - (self.head_len + self.tail.len()) as u64
    }

    /// Ends the stream: the cut line and the tail are appended, and what was kept is handed over.
    pub fn finish(mut self) -> Output {
        let cut = self.cut();
        if cut > 0 {
            let line = format!(
                "\n[zoo-runner: {cut} bytes of output cut here; {} bytes in all, first and last {} kept]\n",
                self.total, self.keep
            );
            self.write_body(line.as_bytes());
        }
        let (a, b) = self.tail.as_slices();
        let tail = [a, b].concat();
        self.write_body(&tail);
        let note = match &self.body {
            Body::Memory { why, .. } if !why.is_empty() => Some(why.clone()),
            _ => None,
        };
        Output {
            body: match self.body {
                Body::Pending => Stored::Empty,
                Body::File(file) => Stored::File(file),
                Body::Memory { bytes, .. } => Stored::Memory(bytes),
            },
            total: self.total,
            note,
        }
    }
}

fn read_all(file: &File) -> std::io::Result<Vec<u8>> {
    let mut file = file.try_clone()?;
    file.seek(SeekFrom::Start(0))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// What was kept of one finished stream.
#[derive(Debug)]
pub struct Output {
    body: Stored,
    total: u64,
    /// Why the output is held in memory rather than spooled, when it is.
    note: Option<String>,
}

#[derive(Debug)]
enum Stored {
    Empty,
    /// Not kept on purpose (a passing case, without --store-success-output).
    Discarded,
    File(NamedTempFile),
    Memory(Vec<u8>),
}

impl Output {
    /// No output at all.
    pub fn empty() -> Self {
        Self {
            body: Stored::Empty,
            total: 0,
            note: None,
        }
    }

    /// Text kept in memory.
    #[cfg(test)]
    pub fn from_text(text: &str) -> Self {
        Self {
            body: if text.is_empty() {
                Stored::Empty
            } else {
                Stored::Memory(text.as_bytes().to_vec())
            },
            total: text.len() as u64,
            note: None,
        }
    }

    /// Drops what was kept (deleting the spool file) but remembers that there was output.
    pub fn discard(&mut self) {
        self.body = Stored::Discarded;
    }

    pub fn is_discarded(&self) -> bool {
        matches!(self.body, Stored::Discarded)
    }

    /// True when nothing was kept to show.
    pub fn is_empty(&self) -> bool {
        match &self.body {
            Stored::Empty | Stored::Discarded => true,
            Stored::File(_) => self.total == 0,
            Stored::Memory(bytes) => bytes.is_empty(),
        }
    }

    /// Bytes the stream carried in all (kept or not).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// A reader over the kept bytes, from the start.
    pub fn reader(&self) -> std::io::Result<Box<dyn Read + '_>> {
        Ok(match &self.body {
            Stored::Empty | Stored::Discarded => Box::new(std::io::empty()),
            Stored::File(file) => {
                let mut f = file.reopen()?;
                f.seek(SeekFrom::Start(0))?;
                Box::new(std::io::BufReader::new(f))
            }
            Stored::Memory(bytes) => Box::new(bytes.as_slice()),
        })
    }

    /// The kept text (invalid UTF-8 replaced). Bounded by twice the keep size plus a line.
    pub fn text(&self) -> String {
        let mut bytes = Vec::new();
        let read = self.reader().and_then(|mut r| r.read_to_end(&mut bytes));
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if let Err(e) = read {
            text.push_str(&format!(
                "\n[zoo-runner: reading the spooled output failed: {e}]\n"
            ));
        }
        if let Some(note) = &self.note {
            text.push_str(&format!("\n[zoo-runner: {note}]\n"));
        }
        text
    }
}

impl Default for Captured {
    fn default() -> Self {
        Self::new(DEFAULT_KEEP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(keep: usize, chunks: &[&[u8]]) -> Output {
        let mut c = Captured::new(keep);
        for chunk in chunks {
            c.push(chunk);
        }
        c.finish()
    }

    #[test]
    fn short_output_is_kept_whole() {
        let out = captured(8, &[b"abc", b"defghijk"]);
        assert_eq!(out.text(), "abcdefghijk");
        assert_eq!(out.total(), 11);
    }

    #[test]
    fn long_output_keeps_head_and_tail() {
        let out = captured(4, &[b"HEAD", b"middle-middle", b"xyTA", b"IL"]);
        let text = out.text();
        assert!(text.starts_with("HEAD\n[zoo-runner: 15 bytes"), "{text}");
        assert!(text.ends_with("TAIL"), "{text}");
        assert_eq!(out.total(), 23);
    }

    #[test]
    fn memory_stays_bounded_and_the_head_is_on_disk() {
        let mut c = Captured::new(1024);
        let chunk = vec![b'x'; 65536];
        for _ in 0..200 {
            c.push(&chunk);
        }
        assert_eq!(c.tail.len(), 1024, "only the tail is in memory");
        assert!(
            matches!(c.body, Body::File(_)),
            "the head went to a spool file"
        );
        assert_eq!(c.total, 200 * 65536);
        let out = c.finish();
        assert!(out.text().len() < 3000);
    }

    #[test]
    fn spool_files_go_away_with_their_output() {
        let out = captured(16, &[b"some output"]);
        let path = match &out.body {
            Stored::File(f) => f.path().to_path_buf(),
            other => panic!("spooled: {other:?}"),
        };
        assert!(path.exists());
        let mut out = out;
        out.discard();
        assert!(!path.exists(), "discarding deletes the spool file");
        assert!(out.is_discarded() && out.is_empty());
        assert_eq!(out.total(), 11, "the size is remembered");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let out = captured(64, &[b"ok \xff\xfe end"]);
        assert_eq!(out.text(), "ok \u{fffd}\u{fffd} end");
    }

    #[test]
    fn nothing_pushed_is_empty() {
        let out = captured(64, &[]);
        assert!(out.is_empty());
        assert_eq!(out.text(), "");
    }
}
