//! Bounded capture of a container's output stream: the first and last `limit` bytes are kept,
//! the middle is counted and dropped, so a container that prints gigabytes costs the runner a
//! fixed amount of memory.

use std::collections::VecDeque;

/// Default bytes kept at each end of a stream.
pub const DEFAULT_KEEP: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct Captured {
    keep: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl Captured {
    /// Keeps up to `keep` bytes of the head and `keep` bytes of the tail.
    pub fn new(keep: usize) -> Self {
        Self {
            keep,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
        }
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = self.keep.saturating_sub(self.head.len());
        if room > 0 {
            let take = room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
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

    /// Bytes seen but not kept.
    pub fn cut(&self) -> u64 {
        self.total - (self.head.len() + self.tail.len()) as u64
    }

    /// What was kept, as text: invalid UTF-8 replaced, and a line saying how much was cut.
    pub fn render(&self) -> String {
        let mut out = String::from_utf8_lossy(&self.head).into_owned();
        if self.cut() > 0 {
            out.push_str(&format!(
                "\n[zoo-runner: {} bytes of output cut here; {} bytes in all, first and last {} kept]\n",
                self.cut(),
                self.total,
                self.keep
            ));
        }
        let (a, b) = self.tail.as_slices();
        let mut tail = Vec::with_capacity(a.len() + b.len());
        tail.extend_from_slice(a);
        tail.extend_from_slice(b);
        out.push_str(&String::from_utf8_lossy(&tail));
        out
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

    #[test]
    fn short_output_is_kept_whole() {
        let mut c = Captured::new(8);
        c.push(b"abc");
        c.push(b"defghijk");
        assert_eq!(c.render(), "abcdefghijk");
        assert_eq!(c.cut(), 0);
    }

    #[test]
    fn long_output_keeps_head_and_tail() {
        let mut c = Captured::new(4);
        for chunk in [&b"HEAD"[..], b"middle-middle", b"xyTA", b"IL"] {
            c.push(chunk);
        }
        let text = c.render();
        assert!(text.starts_with("HEAD\n[zoo-runner: 15 bytes"), "{text}");
        assert!(text.ends_with("TAIL"), "{text}");
        assert_eq!(c.total, 23);
    }

    #[test]
    fn memory_stays_bounded() {
        let mut c = Captured::new(1024);
        let chunk = vec![b'x'; 65536];
        for _ in 0..200 {
            c.push(&chunk);
        }
        assert_eq!(c.head.len() + c.tail.len(), 2048);
        assert_eq!(c.total, 200 * 65536);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let mut c = Captured::new(64);
        c.push(b"ok \xff\xfe end");
        assert_eq!(c.render(), "ok \u{fffd}\u{fffd} end");
    }
}
