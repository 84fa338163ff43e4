//! The little of the tar format the Engine API's archive endpoints need here: read the entries
//! of an archive the daemon sends (ustar headers, with the PAX and GNU long-name records Go's
//! archive/tar may put before them), and write a folder's entry with an owner and a mode.

use thiserror::Error;

const BLOCK: usize = 512;

/// What an archive did not hold as tar holds it.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TarError {
    #[error("the archive ends inside an entry")]
    Truncated,
    #[error("a tar header's checksum does not match")]
    Checksum,
    #[error("a tar header's `{0}` field is not a number")]
    Field(&'static str),
    #[error("the name `{0}` is too long for a tar header (at most 99 bytes)")]
    NameTooLong(String),
}

/// One entry's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// The type flag: `0` a file, `5` a folder, `2` a symlink, ...
    pub kind: u8,
    /// Permission bits (and setuid/setgid/sticky).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    /// A link's target.
    pub link: String,
}

impl Entry {
    pub fn is_symlink(&self) -> bool {
        self.kind == b'2'
    }

    pub fn is_dir(&self) -> bool {
        self.kind == b'5'
    }
}

/// A number field: octal digits (space- or NUL-padded), or base-256 when its first byte has the
/// high bit set (GNU, for values that do not fit).
fn number(field: &[u8], name: &'static str) -> Result<u64, TarError> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or(TarError::Field(name))?;
        }
        return Ok(value);
    }
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| TarError::Field(name))
}

fn text(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn checksum(header: &[u8]) -> u64 {
    header
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum()
}

/// The header in `block`, or None for an end-of-archive (zero) block.
fn header(block: &[u8]) -> Result<Option<Entry>, TarError> {
    if block.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    if number(&block[148..156], "checksum")? != checksum(block) {
        return Err(TarError::Checksum);
    }
    let mut name = text(&block[0..100]);
    if &block[257..262] == b"ustar" {
        let prefix = text(&block[345..500]);
        if !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
    }
    Ok(Some(Entry {
        name,
        kind: block[156],
        mode: number(&block[100..108], "mode")? as u32,
        uid: number(&block[108..116], "uid")?,
        gid: number(&block[116..124], "gid")?,
        size: number(&block[124..136], "size")?,
        link: text(&block[157..257]),
    }))
}

/// The records of a PAX extended header (`LEN key=value\n` ...).
fn pax_records(data: &[u8]) -> Vec<(String, String)> {
    let mut records = Vec::new();
    let mut rest = data;
    while let Some(space) = rest.iter().position(|&b| b == b' ') {
        let Ok(len) = std::str::from_utf8(&rest[..space])
            .unwrap_or("")
            .parse::<usize>()
        else {
            break;
        };
        if len <= space || len > rest.len() {
            break;
        }
        let record = String::from_utf8_lossy(&rest[space + 1..len]);
        if let Some((key, value)) = record.trim_end_matches('\n').split_once('=') {
            records.push((key.to_string(), value.to_string()));
        }
        rest = &rest[len..];
    }
    records
}

/// The first entry of `archive` with its data, or None when the archive has no entry (or
/// `archive` does not yet hold all of it: `Err(Truncated)`). PAX and GNU long-name records
/// before it are applied to it.
pub fn first(archive: &[u8]) -> Result<Option<(Entry, &[u8])>, TarError> {
    let mut at = 0;
    let mut pax: Vec<(String, String)> = Vec::new();
    let mut long_name = None;
    let mut long_link = None;
    loop {
        let block = archive.get(at..at + BLOCK).ok_or(TarError::Truncated)?;
        let Some(mut entry) = header(block)? else {
            return Ok(None);
        };
        let start = at + BLOCK;
        let size = usize::try_from(entry.size).map_err(|_| TarError::Field("size"))?;
        let data = archive
            .get(start..start + size)
            .ok_or(TarError::Truncated)?;
        at = start + size.div_ceil(BLOCK) * BLOCK;
        match entry.kind {
            b'x' => pax = pax_records(data),
            b'g' => {}
            b'L' => long_name = Some(text(data)),
            b'K' => long_link = Some(text(data)),
            _ => {
                if let Some(name) = long_name {
                    entry.name = name;
                }
                if let Some(link) = long_link {
                    entry.link = link;
                }
                for (key, value) in pax {
                    match key.as_str() {
                        "path" => entry.name = value,
                        "linkpath" => entry.link = value,
                        "uid" => entry.uid = value.parse().unwrap_or(entry.uid),
                        "gid" => entry.gid = value.parse().unwrap_or(entry.gid),
                        _ => {}
                    }
                }
                return Ok(Some((entry, data)));
            }
        }
    }
}

/// An archive of one folder entry `name/` (no content), owned by `uid:gid` with `mode`: what
/// the archive upload needs to set a folder's owner and mode.
pub fn folder(name: &str, uid: u32, gid: u32, mode: u32) -> Result<Vec<u8>, TarError> {
    let name = format!("{}/", name.trim_end_matches('/'));
    if name.len() > 99 {
        return Err(TarError::NameTooLong(name));
    }
    let mut block = [0u8; BLOCK];
    block[..name.len()].copy_from_slice(name.as_bytes());
    let mut octal = |at: usize, width: usize, value: u64| {
        let digits = format!("{value:0w$o}", w = width - 1);
        block[at..at + width - 1].copy_from_slice(digits.as_bytes());
    };
    octal(100, 8, u64::from(mode & 0o7777));
    octal(108, 8, u64::from(uid));
    octal(116, 8, u64::from(gid));
    octal(124, 12, 0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    octal(136, 12, now);
    block[156] = b'5';
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    let sum = format!("{:06o}\0 ", checksum(&block));
    block[148..156].copy_from_slice(sum.as_bytes());
    let mut archive = block.to_vec();
    archive.extend([0u8; 2 * BLOCK]);
    Ok(archive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_entry_reads_back_as_written() {
        let archive = folder("keras", 1000, 100, 0o755).unwrap();
        assert_eq!(archive.len(), 3 * BLOCK);
        let (entry, data) = first(&archive).unwrap().unwrap();
        assert_eq!(
            entry,
            Entry {
                name: "keras/".into(),
                kind: b'5',
                mode: 0o755,
                uid: 1000,
                gid: 100,
                size: 0,
                link: String::new(),
            }
        );
        assert!(entry.is_dir() && data.is_empty());
        assert!(matches!(
            folder(&"x".repeat(99), 0, 0, 0o755),
            Err(TarError::NameTooLong(_))
        ));
    }

    /// A header as GNU tar or Go's archive/tar writes it, for the reader's tests.
    fn entry_block(name: &str, kind: u8, uid: u64, data: &[u8]) -> Vec<u8> {
        let mut block = [0u8; BLOCK];
        block[..name.len()].copy_from_slice(name.as_bytes());
        let fields: [(usize, usize, u64); 4] = [
            (100, 8, 0o644),
            (108, 8, uid),
            (116, 8, 0),
            (124, 12, data.len() as u64),
        ];
        for (at, width, value) in fields {
            let digits = format!("{value:0w$o}", w = width - 1);
            block[at..at + width - 1].copy_from_slice(digits.as_bytes());
        }
        block[156] = kind;
        block[257..263].copy_from_slice(b"ustar\0");
        let sum = format!("{:06o}\0 ", checksum(&block));
        block[148..156].copy_from_slice(sum.as_bytes());
        let mut out = block.to_vec();
        out.extend(data);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
        out
    }

    #[test]
    fn the_first_entry_takes_its_pax_records_and_its_data() {
        let record = |k: &str, v: &str| {
            let body = format!(" {k}={v}\n");
            let mut len = body.len() + 1;
            while len.to_string().len() + body.len() != len {
                len += 1;
            }
            format!("{len}{body}")
        };
        let pax = format!(
            "{}{}",
            record("path", "etc/passwd"),
            record("uid", "2000000000")
        );
        let mut archive = entry_block("PaxHeaders/passwd", b'x', 0, pax.as_bytes());
        archive.extend(entry_block(
            "passwd",
            b'0',
            7,
            b"root:x:0:0::/root:/bin/sh\n",
        ));
        archive.extend([0u8; 2 * BLOCK]);
        let (entry, data) = first(&archive).unwrap().unwrap();
        assert_eq!(entry.name, "etc/passwd");
        assert_eq!(entry.uid, 2_000_000_000);
        assert_eq!(data, b"root:x:0:0::/root:/bin/sh\n");
        // Cut short: the caller reads on.
        assert_eq!(first(&archive[..700]), Err(TarError::Truncated));
        // A GNU long name, and an empty archive.
        let mut gnu = entry_block("././@LongLink", b'L', 0, b"a/long/name\0");
        gnu.extend(entry_block("a/long/na", b'2', 0, b""));
        assert_eq!(first(&gnu).unwrap().unwrap().0.name, "a/long/name");
        assert_eq!(first(&[0u8; 1024]), Ok(None));
        let mut bad = entry_block("f", b'0', 0, b"");
        bad[0] = b'g';
        assert_eq!(first(&bad), Err(TarError::Checksum));
    }

    #[test]
    fn numbers_are_octal_or_base_256() {
        assert_eq!(number(b"0001750\0", "uid"), Ok(1000));
        assert_eq!(number(b"   17 \0\0", "uid"), Ok(15));
        assert_eq!(number(&[0x80, 0, 0, 0, 0, 0, 0x03, 0xe8], "uid"), Ok(1000));
        assert_eq!(number(b"12a\0", "uid"), Err(TarError::Field("uid")));
    }
}
