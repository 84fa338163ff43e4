//! Names of caches: a Docker volume per (cache folder, image ID, path), an Apptainer folder per
//! (SIF md5, path). Names are readable (the image's short ID and the path, slugged) and unique
//! (a hash of what the slug loses).

use md5::{Digest, Md5};

/// The prefix of every cache volume's name.
pub const VOLUME_PREFIX: &str = "zoo-cache-";

/// The longest slug of a path kept in a name.
const SLUG_MAX: usize = 40;

/// The hex digest of `parts` joined by NUL bytes.
fn digest(parts: &[&str]) -> String {
    let mut hasher = Md5::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update([0u8]);
        }
        hasher.update(part.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `/root/.kipoi/models` -> `root_.kipoi_models`: the characters a Docker volume name and a file
/// name both allow (`[a-zA-Z0-9_.-]`), at most [`SLUG_MAX`] of them (the end is kept: it is the
/// part that tells two caches apart).
pub fn slug(path: &str) -> String {
    let mapped: String = path
        .trim_matches('/')
        .chars()
        .map(|c| match c {
            '/' => '_',
            c if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') => c,
            _ => '-',
        })
        .collect();
    let skip = mapped.chars().count().saturating_sub(SLUG_MAX);
    mapped.chars().skip(skip).collect()
}

/// The hex of an image ID without its `sha256:`, shortened to 12 digits as `docker images`
/// shows it.
pub fn short_id(image_id: &str) -> String {
    let hex = image_id.rsplit(':').next().unwrap_or(image_id);
    hex.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect()
}

/// The Docker volume of `path` for the image `image_id`, in the caches of the folder `dir` (the
/// folder's locks guard it, so another `--cache-dir` gets volumes of its own).
pub fn volume_name(dir: &str, image_id: &str, path: &str) -> String {
    let hash = digest(&[dir, image_id, path]);
    format!(
        "{VOLUME_PREFIX}{}-{}-{}",
        short_id(image_id),
        slug(path),
        &hash[..8]
    )
}

/// The replica `slot` of the cache named `name`: slot 0 is the name itself (the one replica a
/// cache had before it had slots, so older caches are slot 0), slot N is `NAME-sN`.
pub fn slot_name(name: &str, slot: usize) -> String {
    match slot {
        0 => name.to_string(),
        n => format!("{name}-s{n}"),
    }
}

/// The caches of one image in the cache folder `dir`, all paths and slots together: names the
/// record of which slot each model last used.
pub fn volume_set(dir: &str, image_id: &str) -> String {
    let hash = digest(&[dir, image_id]);
    format!("{VOLUME_PREFIX}{}-{}", short_id(image_id), &hash[..8])
}

/// The caches of one SIF (by its md5), all paths and slots together.
pub fn folder_set(md5: &str) -> String {
    md5.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The Apptainer folder of `path` for the SIF whose md5 is `md5` (a name inside the folder of
/// Apptainer caches).
pub fn folder_name(md5: &str, path: &str) -> String {
    let md5: String = md5
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let hash = digest(&[&md5, path]);
    let short: String = md5.chars().take(12).collect();
    format!("{short}-{}-{}", slug(path), &hash[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_docker_volume_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    }

    #[test]
    fn volume_names_are_readable_valid_and_keyed_by_every_part() {
        let id = "sha256:0123456789abcdef0123456789abcdef";
        let name = volume_name("/c", id, "/root/.kipoi/models");
        assert!(
            name.starts_with("zoo-cache-0123456789ab-root_.kipoi_models-"),
            "{name}"
        );
        assert!(is_docker_volume_name(&name), "{name}");
        // Another image ID, another path, another cache folder: another volume.
        let other_id = "sha256:fedcba9876543210";
        assert_ne!(name, volume_name("/c", other_id, "/root/.kipoi/models"));
        assert_ne!(name, volume_name("/c", id, "/root/.kipoi/model"));
        assert_ne!(name, volume_name("/d", id, "/root/.kipoi/models"));
        // Paths the slug cannot tell apart still get two names.
        assert_ne!(volume_name("/c", id, "/a_b"), volume_name("/c", id, "/a/b"));
        assert_eq!(name, volume_name("/c", id, "/root/.kipoi/models"));
    }

    #[test]
    fn odd_and_long_paths_make_valid_names() {
        let long = format!("/{}", "x/".repeat(80));
        for path in ["/home/u/.keras", "/with space/ü", &long, "/-lead"] {
            let name = volume_name("/c", "sha256:abc", path);
            assert!(is_docker_volume_name(&name), "{path}: {name}");
            assert!(name.len() < 100, "{name}");
            let folder = folder_name("ABCDEF0123456789", path);
            assert!(is_docker_volume_name(&folder), "{path}: {folder}");
        }
        assert_eq!(slug("/home/antspyuser/.keras"), "home_antspyuser_.keras");
    }

    #[test]
    fn slots_add_a_suffix_after_the_first_and_sets_are_keyed_by_image() {
        let name = volume_name("/c", "sha256:abc", "/root/.keras");
        assert_eq!(slot_name(&name, 0), name);
        assert_eq!(slot_name(&name, 3), format!("{name}-s3"));
        assert!(is_docker_volume_name(&slot_name(&name, 12)));
        let set = volume_set("/c", "sha256:abc");
        assert!(set.starts_with("zoo-cache-abc-"), "{set}");
        assert_ne!(set, volume_set("/d", "sha256:abc"));
        assert_ne!(set, volume_set("/c", "sha256:abd"));
        assert_eq!(folder_set("ABC-def"), "abcdef");
    }

    #[test]
    fn folder_names_are_keyed_by_md5_and_path() {
        let a = folder_name("0123456789abcdef0123456789abcdef", "/root/.keras");
        assert!(a.starts_with("0123456789ab-root_.keras-"), "{a}");
        assert_eq!(
            a,
            folder_name("0123456789ABCDEF0123456789ABCDEF", "/root/.keras")
        );
        assert_ne!(
            a,
            folder_name("1123456789abcdef0123456789abcdef", "/root/.keras")
        );
        assert_ne!(
            a,
            folder_name("0123456789abcdef0123456789abcdef", "/root/.kipoi")
        );
    }
}
