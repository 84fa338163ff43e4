//! Just enough XML writing to stream a JUnit report: escaped text and attributes, and text
//! copied from a reader in chunks (so a spooled output never has to fit in memory at once).
//!
//! Container logs hold ANSI escapes, other control characters, `]]>` and bytes that are not
//! UTF-8. XML 1.0 cannot hold most control characters at all, escaped or not, so they are
//! dropped (as quick-junit does); invalid UTF-8 becomes U+FFFD; `<`, `&`, `>` and quotes are
//! escaped. No CDATA is written, so `]]>` needs no special case.

use std::io::{self, Read, Write};

/// Characters XML 1.0 allows: tab, newline, carriage return, and everything from space up
/// except the surrogates and U+FFFE/U+FFFF.
fn allowed(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..=char::MAX)
}

/// Writes `text` as element content.
pub fn text(out: &mut impl Write, text: &str) -> io::Result<()> {
    Escaper::default().write(out, text, false)
}

/// Writes `text` as an attribute value (the caller writes the quotes).
pub fn attr(out: &mut impl Write, text: &str) -> io::Result<()> {
    Escaper::default().write(out, text, true)
}

#[cfg(test)]
fn escape(out: &mut impl Write, text: &str, in_attribute: bool) -> io::Result<()> {
    Escaper::default().write(out, text, in_attribute)
}

/// Where an ANSI escape sequence (colours, cursor moves) stands: such sequences are dropped
/// whole, not only their ESC, even when one spans two chunks of a stream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Ansi {
    #[default]
    Text,
    /// Just after ESC.
    Escape,
    /// Inside `ESC [ ... final`.
    Csi,
}

/// Escapes text for XML, one piece after another.
#[derive(Debug, Default)]
struct Escaper {
    ansi: Ansi,
}

impl Escaper {
    fn write(&mut self, out: &mut impl Write, text: &str, in_attribute: bool) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in text.char_indices() {
            let in_sequence = match (self.ansi, c) {
                (Ansi::Text, '\u{1b}') => {
                    self.ansi = Ansi::Escape;
                    true
                }
                (Ansi::Text, _) => false,
                (Ansi::Escape, '[') => {
                    self.ansi = Ansi::Csi;
                    true
                }
                (Ansi::Escape, _) => {
                    self.ansi = Ansi::Text;
                    true
                }
                (Ansi::Csi, '@'..='~') => {
                    self.ansi = Ansi::Text;
                    true
                }
                (Ansi::Csi, _) => true,
            };
            let replacement: Option<&str> = match c {
                _ if in_sequence => Some(""),
                '<' => Some("&lt;"),
                '>' => Some("&gt;"),
                '&' => Some("&amp;"),
                '"' if in_attribute => Some("&quot;"),
                // Attribute values are normalised by parsers: keep line breaks and tabs as such.
                '\n' if in_attribute => Some("&#10;"),
                '\r' if in_attribute => Some("&#13;"),
                '\t' if in_attribute => Some("&#9;"),
                '\r' => Some("&#13;"),
                c if !allowed(c) => Some(""),
                _ => None,
            };
            if let Some(r) = replacement {
                out.write_all(&text.as_bytes()[start..i])?;
                out.write_all(r.as_bytes())?;
                start = i + c.len_utf8();
            }
        }
        out.write_all(&text.as_bytes()[start..])
    }
}

/// Copies a reader's bytes as escaped element content, in chunks: invalid UTF-8 becomes U+FFFD,
/// and a character split across two chunks is kept whole.
pub fn text_from(out: &mut impl Write, mut input: impl Read) -> io::Result<()> {
    let mut escaper = Escaper::default();
    let mut text = |out: &mut _, s: &str| escaper.write(out, s, false);
    let mut buf = vec![0u8; 64 * 1024];
    // Bytes of a character cut off at the end of the previous chunk (at most 3).
    let mut carry: Vec<u8> = Vec::with_capacity(4);
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            if !carry.is_empty() {
                text(out, &String::from_utf8_lossy(&carry))?;
            }
            return Ok(());
        }
        let mut chunk: &[u8] = &buf[..n];
        let joined;
        if !carry.is_empty() {
            joined = [carry.as_slice(), chunk].concat();
            chunk = &joined;
            carry.clear();
        }
        let mut rest = chunk;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    text(out, s)?;
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    // `good` is valid UTF-8: that is what `valid_up_to` measured.
                    text(out, std::str::from_utf8(good).unwrap_or_default())?;
                    match e.error_len() {
                        Some(len) => {
                            text(out, "\u{FFFD}")?;
                            rest = &bad[len..];
                        }
                        None => {
                            // An incomplete character at the end: finish it with the next chunk.
                            carry.extend_from_slice(bad);
                            break;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str, attribute: bool) -> String {
        let mut out = Vec::new();
        escape(&mut out, s, attribute).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn markup_is_escaped_and_illegal_characters_dropped() {
        assert_eq!(
            escaped("a<b>&c ]]> \u{1b}[31mred\u{1b}[0m\u{0}\u{7}", false),
            "a&lt;b&gt;&amp;c ]]&gt; red"
        );
        assert_eq!(
            escaped("say \"hi\"\nthere", true),
            "say &quot;hi&quot;&#10;there"
        );
        assert_eq!(escaped("\u{FFFE}ok\u{1F600}", false), "ok\u{1F600}");
    }

    #[test]
    fn chunked_copy_keeps_split_characters_and_replaces_bad_bytes() {
        // 64 KiB - 1 bytes of ASCII, then a 3-byte character split by the chunk boundary.
        let mut input = vec![b'a'; 64 * 1024 - 1];
        input.extend_from_slice("€".as_bytes());
        input.extend_from_slice(b" \xff end <");
        let mut out = Vec::new();
        text_from(&mut out, input.as_slice()).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.ends_with("a€ \u{FFFD} end &lt;"),
            "{}",
            &s[s.len() - 20..]
        );
        assert_eq!(s.matches('a').count(), 64 * 1024 - 1);
    }

    #[test]
    fn an_escape_sequence_split_across_chunks_is_dropped_whole() {
        let mut input = vec![b'a'; 64 * 1024 - 2];
        input.extend_from_slice(b"\x1b[1;31mred\x1b[0m");
        let mut out = Vec::new();
        text_from(&mut out, input.as_slice()).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with("aared"), "{}", &s[s.len() - 10..]);
    }

    #[test]
    fn a_truncated_character_at_the_very_end_is_replaced() {
        let mut out = Vec::new();
        text_from(&mut out, &b"ok \xe2\x82"[..]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "ok \u{FFFD}");
    }
}
