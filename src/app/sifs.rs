//! `zoo-runner sif list` and `zoo-runner sif prune [--all] [--unused-for D]`: the SIF folder
//! (`--sif-dir`): its SIFs with their size, when a runner last took them and whether one is
//! using them, and what runs left behind.
//!
//! `prune` removes what is of no use (quarantined copies, md5 records whose SIF is gone, build
//! folders of killed builds); with `--unused-for D` also the SIFs (and unfinished downloads) no
//! runner took for that long; with `--all` every SIF. A SIF a runner is using or fetching is
//! kept. Unfinished downloads are kept otherwise: the next fetch resumes them.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;

use crate::config::units::show_size;
use crate::store::caches::rfc3339;
use crate::store::sif::listing::{self, Busy, Entry, Kind};
use crate::store::sif::SifCache;

use super::table;

fn kind_words(kind: Kind) -> &'static str {
    match kind {
        Kind::Sif { built: false } => "SIF from the catalog",
        Kind::Sif { built: true } => "SIF built from Docker",
        Kind::Unfinished => "unfinished download",
        Kind::Quarantined => "quarantined copy",
        Kind::OrphanRecord => "md5 record without its SIF",
        Kind::BuildFolder => "killed build's folder",
    }
}

fn busy_words(busy: Busy) -> &'static str {
    match busy {
        Busy::Idle => "-",
        Busy::Fetching => "being fetched",
        Busy::InUse => "in use",
    }
}

/// `sif list`: one line per entry of the SIF folder.
pub fn list(dir: &Path) -> anyhow::Result<ExitCode> {
    let entries = listing::list(dir)
        .with_context(|| format!("cannot list the SIF folder `{}` (--sif-dir)", dir.display()))?;
    if entries.is_empty() {
        println!("no SIFs in {}", dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|e| {
            [
                e.file.clone(),
                kind_words(e.kind).to_string(),
                show_size(e.size),
                e.last_used.map(rfc3339).unwrap_or_else(|| "?".into()),
                busy_words(e.busy).to_string(),
            ]
        })
        .collect();
    for line in table::aligned(["FILE", "KIND", "SIZE", "LAST USED", "STATE"], &rows) {
        println!("{line}");
    }
    let sifs: Vec<&Entry> = entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::Sif { .. }))
        .collect();
    let total: u64 = entries.iter().map(|e| e.size).sum();
    println!(
        "{} SIF(s), {} in all with what runs left, in {}",
        sifs.len(),
        show_size(total),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Why `prune` removes an entry, or `None` to keep it.
fn why_remove(
    entry: &Entry,
    all: bool,
    unused_for: Option<Duration>,
    now: SystemTime,
) -> Option<String> {
    if all {
        return Some("--all".to_string());
    }
    let unused = |limit: Duration| {
        entry
            .last_used
            .and_then(|at| now.duration_since(at).ok())
            .is_some_and(|idle| idle > limit)
    };
    match entry.kind {
        Kind::Quarantined | Kind::OrphanRecord | Kind::BuildFolder => {
            Some(kind_words(entry.kind).to_string())
        }
        Kind::Sif { .. } | Kind::Unfinished => {
            unused_for.filter(|limit| unused(*limit)).map(|limit| {
                format!(
                    "unused for over {} (--unused-for)",
                    crate::config::units::show_duration(limit)
                )
            })
        }
    }
}

/// `sif prune`.
pub fn prune(dir: &Path, all: bool, unused_for: Option<Duration>) -> anyhow::Result<ExitCode> {
    let cache = SifCache::open(dir)?;
    if cache.is_read_only() {
        anyhow::bail!(
            "the SIF folder `{}` (--sif-dir) is read-only: nothing can be removed from it",
            dir.display()
        );
    }
    let entries = listing::list(dir)
        .with_context(|| format!("cannot list the SIF folder `{}` (--sif-dir)", dir.display()))?;
    let now = SystemTime::now();
    let (mut removed, mut freed, mut kept) = (0usize, 0u64, 0usize);
    for entry in &entries {
        let Some(why) = why_remove(entry, all, unused_for, now) else {
            continue;
        };
        match listing::remove(dir, entry) {
            Ok(None) => {
                removed += 1;
                freed += entry.size;
                println!("removed {} ({}, {why})", entry.file, show_size(entry.size));
            }
            Ok(Some(reason)) => {
                kept += 1;
                crate::events::note(format!("kept {}: {reason}", entry.file));
            }
            Err(e) => {
                kept += 1;
                crate::events::note(format!(
                    "kept {}: {}",
                    entry.file,
                    crate::error_chain::chain(&e)
                ));
            }
        }
    }
    println!(
        "removed {removed} file(s) from {}, {} freed{}",
        dir.display(),
        show_size(freed),
        if kept > 0 {
            format!("; kept {kept} (said above)")
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}
