//! `zoo-runner cache list` and `zoo-runner cache prune [--all] [--unused-for D]`: the caches of
//! one cache folder (`--cache-dir`), Docker volumes and Apptainer folders alike; prune also
//! removes the quarantined SIFs (`NAME.sif.bad`) of the SIF folder (`--sif-dir`).

use std::collections::HashSet;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use bollard::Docker;
use clap::ValueEnum;

use crate::config::units::show_size;
use crate::runtime::docker::{docker_host, DockerError};
use crate::store::caches::{apptainer, docker, homes, names, rfc3339};

use super::table;

/// Exit code when the Docker daemon cannot be reached (as for a run).
const EXIT_DOCKER: u8 = 3;

/// Which caches a `cache` subcommand looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum CacheRuntime {
    Docker,
    Singularity,
    /// Both; an unreachable Docker daemon is then a warning, not an error.
    #[default]
    All,
}

/// One row of `cache list`.
struct Row {
    runtime: &'static str,
    image: String,
    path: String,
    slot: usize,
    size: Option<u64>,
    created: String,
    last_used: Option<std::time::SystemTime>,
    name: String,
}

/// Connects to the daemon as a run does (DOCKER_HOST, else the default socket).
async fn connect() -> Result<Docker, DockerError> {
    let unreachable = |source| DockerError::Unreachable {
        host: docker_host(),
        source,
    };
    let docker = Docker::connect_with_defaults().map_err(unreachable)?;
    let docker = docker.negotiate_version().await.map_err(unreachable)?;
    docker.ping().await.map_err(unreachable)?;
    Ok(docker)
}

/// Docker, when `which` asks for it: Ok(None) when only asked for `all` and it is unreachable
/// (a warning), Err when asked for `docker` alone.
async fn daemon(which: CacheRuntime) -> Result<Option<Docker>, String> {
    if which == CacheRuntime::Singularity {
        return Ok(None);
    }
    match connect().await {
        Ok(d) => Ok(Some(d)),
        Err(e) if which == CacheRuntime::All => {
            crate::events::line(format!(
                "zoo-runner: warning: Docker caches left out: {} (pass --runtime singularity to \
                 look at Apptainer caches only)",
                crate::error_chain::chain(&e)
            ));
            Ok(None)
        }
        Err(e) => Err(crate::error_chain::chain(&e)),
    }
}

fn block_on<T>(work: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(work))
}

/// `cache list`: one line per cache, with its image, path, size and when it was last used.
pub fn list(dir: &Path, which: CacheRuntime) -> anyhow::Result<ExitCode> {
    block_on(async {
        let mut rows = Vec::new();
        let docker = match daemon(which).await {
            Ok(d) => d,
            Err(e) => {
                crate::events::line(format!("error: {e}"));
                return Ok(ExitCode::from(EXIT_DOCKER));
            }
        };
        if let Some(docker) = &docker {
            for v in docker::list(docker, dir)
                .await
                .map_err(anyhow::Error::msg)?
            {
                let gone = !docker::image_exists(docker, &v.image_id)
                    .await
                    .unwrap_or(true);
                rows.push(Row {
                    runtime: "docker",
                    image: format!(
                        "{} ({}){}",
                        v.image,
                        names::short_id(&v.image_id),
                        if gone { " [image gone]" } else { "" }
                    ),
                    path: v.path,
                    slot: v.slot,
                    size: v.size,
                    created: v.created,
                    last_used: v.last_used,
                    name: v.name,
                });
            }
        }
        if which != CacheRuntime::Docker {
            for f in apptainer::list(dir).map_err(anyhow::Error::msg)? {
                let known = f.meta.known_sifs();
                let shown = known.first().unwrap_or(&f.meta.sif);
                let more = match known.len() {
                    0 | 1 => String::new(),
                    n => format!(" +{} more", n - 1),
                };
                rows.push(Row {
                    runtime: "singularity",
                    image: format!(
                        "{} ({}{more}, md5 {}){}",
                        f.meta.image,
                        shown.display(),
                        f.meta.md5.chars().take(12).collect::<String>(),
                        if known.is_empty() { " [SIF gone]" } else { "" }
                    ),
                    path: f.meta.path,
                    slot: f.meta.slot,
                    size: f.size,
                    created: f.meta.created,
                    last_used: f.last_used,
                    name: f.name,
                });
            }
        }
        print_rows(dir, &rows);
        Ok(ExitCode::SUCCESS)
    })?
}

fn print_rows(dir: &Path, rows: &[Row]) {
    if rows.is_empty() {
        println!("no caches in {}", dir.display());
        return;
    }
    let table: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.runtime.to_string(),
                r.image.clone(),
                r.path.clone(),
                r.slot.to_string(),
                r.size.map(show_size).unwrap_or_else(|| "?".into()),
                r.created.clone(),
                r.last_used.map(rfc3339).unwrap_or_else(|| "never".into()),
                r.name.clone(),
            ]
        })
        .collect();
    let head = [
        "RUNTIME",
        "IMAGE",
        "PATH",
        "SLOT",
        "SIZE",
        "CREATED",
        "LAST USED",
        "CACHE",
    ];
    for line in table::aligned(head, &table) {
        println!("{line}");
    }
    println!("{}", total_line(dir, rows));
}

/// The last line of `cache list`: how many caches, and the disk they take (every slot of every
/// cache counted).
fn total_line(dir: &Path, rows: &[Row]) -> String {
    let known: u64 = rows.iter().filter_map(|r| r.size).sum();
    let unknown = rows.iter().filter(|r| r.size.is_none()).count();
    let size = match unknown {
        0 => format!("{} in all", show_size(known)),
        n => format!(
            "at least {} in all ({n} size(s) unreadable here)",
            show_size(known)
        ),
    };
    format!("{} cache(s) in {}: {size}", rows.len(), dir.display())
}

/// True when a cache last used at `last_used` has lain unused for longer than `unused_for`.
fn unused_for_over(last_used: Option<SystemTime>, unused_for: Option<Duration>) -> bool {
    match (last_used, unused_for) {
        (Some(at), Some(limit)) => at.elapsed().is_ok_and(|idle| idle > limit),
        _ => false,
    }
}

/// `cache prune`: removes the caches whose image the daemon no longer has (Docker) or for which
/// no SIF with their md5 is known any more (Apptainer); with `unused_for`, also those no case has
/// used for that long; with `all`, every cache. A cache a running case holds is kept. Unless
/// only Docker is asked for, the quarantined SIFs of `sif_dir` go too.
pub fn prune(
    dir: &Path,
    sif_dir: &Path,
    all: bool,
    unused_for: Option<Duration>,
    which: CacheRuntime,
) -> anyhow::Result<ExitCode> {
    block_on(async {
        let docker = match daemon(which).await {
            Ok(d) => d,
            Err(e) => {
                crate::events::line(format!("error: {e}"));
                return Ok(ExitCode::from(EXIT_DOCKER));
            }
        };
        let (mut removed, mut freed, mut kept) = (0usize, 0u64, 0usize);
        let mut report = |what: String, result: Result<(), String>, size: Option<u64>| match result
        {
            Ok(()) => {
                removed += 1;
                freed += size.unwrap_or(0);
                println!("removed {what}");
            }
            Err(why) => {
                kept += 1;
                crate::events::note(kept_line(&what, &why));
            }
        };
        if let Some(docker) = &docker {
            for v in docker::list(docker, dir)
                .await
                .map_err(anyhow::Error::msg)?
            {
                let why = if all {
                    "--all".to_string()
                } else if unused_for_over(v.last_used, unused_for) {
                    unused_note(unused_for)
                } else {
                    match docker::image_exists(docker, &v.image_id).await {
                        Ok(true) => continue,
                        Ok(false) => "its image is gone".to_string(),
                        Err(e) => {
                            crate::events::note(kept_line(&v.name, &e));
                            continue;
                        }
                    }
                };
                let what = format!("docker cache {} ({}, {}; {why})", v.name, v.image, v.path);
                report(what, docker::remove(docker, dir, &v.name).await, v.size);
            }
            // The slot records of images whose caches are all gone go too.
            if let Ok(left) = docker::list(docker, dir).await {
                let sets: HashSet<String> = left.into_iter().map(|v| v.set).collect();
                homes::forget(&docker::lock_dir(dir), |set| sets.contains(set));
            }
        }
        if which != CacheRuntime::Docker {
            for f in apptainer::list(dir).map_err(anyhow::Error::msg)? {
                let why = if all {
                    "--all".to_string()
                } else if unused_for_over(f.last_used, unused_for) {
                    unused_note(unused_for)
                } else if !f.meta.known_sifs().is_empty() {
                    continue;
                } else {
                    "its SIF is gone: no SIF file that used it still has its md5".to_string()
                };
                let what = format!(
                    "singularity cache {} ({}, {}; {why})",
                    f.name, f.meta.image, f.meta.path
                );
                report(what, apptainer::remove(dir, &f.name), f.size);
            }
            if let Ok(left) = apptainer::list(dir) {
                let sets: HashSet<String> = left
                    .iter()
                    .map(|f| names::folder_set(&f.meta.md5))
                    .collect();
                homes::forget(&apptainer::root(dir), |set| sets.contains(set));
            }
        }
        println!(
            "removed {removed} cache(s), {} freed{}",
            show_size(freed),
            if kept > 0 {
                format!("; kept {kept} in use")
            } else {
                String::new()
            }
        );
        if which != CacheRuntime::Docker {
            prune_quarantined(sif_dir);
        }
        Ok(ExitCode::SUCCESS)
    })?
}

/// `unused for over 30d (--unused-for)`: whole days as days, as such a limit is given.
fn unused_note(unused_for: Option<Duration>) -> String {
    let limit = unused_for.unwrap_or_default();
    let secs = limit.as_secs();
    let shown = if secs >= 86_400 && secs.is_multiple_of(86_400) && limit.subsec_nanos() == 0 {
        format!("{}d", secs / 86_400)
    } else {
        crate::config::units::show_duration(limit)
    };
    format!("unused for over {shown} (--unused-for)")
}

/// Removes the quarantined SIFs of the SIF folder: downloads whose md5 did not match, kept as
/// evidence (one per name; the error that made them names both sums).
fn prune_quarantined(sif_dir: &Path) {
    let found = match crate::store::sif::quarantined(sif_dir) {
        Ok(found) => found,
        Err(e) => {
            crate::events::line(format!(
                "zoo-runner: warning: cannot list the SIF folder `{}` (--sif-dir): {e}",
                sif_dir.display()
            ));
            return;
        }
    };
    if found.is_empty() {
        return;
    }
    let (mut removed, mut freed) = (0usize, 0u64);
    for path in found {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                removed += 1;
                freed += size;
                println!(
                    "removed quarantined SIF {} (its md5 did not match)",
                    path.display()
                );
            }
            Err(e) => crate::events::note(format!("kept {}: {e}", path.display())),
        }
    }
    println!(
        "removed {removed} quarantined SIF(s) from {}, {} freed",
        sif_dir.display(),
        show_size(freed)
    );
}

/// The line for a cache `prune` leaves: `what` it is and why (the reason does not say "kept").
fn kept_line(what: &str, why: &str) -> String {
    format!("kept {what}: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cancel::Cancel;
    use crate::store::caches::lock::{self, lock_path};
    use crate::store::caches::{Caches, For, Held};

    /// "kept" once: the reason a held cache is kept does not repeat the word.
    fn says_kept_once(line: &str) {
        assert_eq!(line.matches("kept").count(), 1, "{line}");
        assert!(line.contains("in use by a running case"), "{line}");
    }

    #[test]
    fn a_held_docker_cache_is_kept_with_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let name = "zoo-runner-cache-test";
        let _held = lock::try_acquire(&lock_path(&docker::lock_dir(dir.path()), name))
            .unwrap()
            .unwrap();
        // The lock is tried before the daemon is asked anything.
        let client = Docker::connect_with_defaults().unwrap();
        let why = block_on(docker::remove(&client, dir.path(), name))
            .unwrap()
            .unwrap_err();
        says_kept_once(&kept_line(
            &format!("docker cache {name} (img, /p; --all)"),
            &why,
        ));
    }

    #[test]
    fn a_held_apptainer_cache_is_kept_with_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let caches = Caches::new(dir.path(), vec!["/data".into()], 1, Cancel::new()).unwrap();
        let held: Held = block_on(apptainer::prepare(
            &caches,
            "img:1",
            Path::new("/sifs/img.sif"),
            "0123456789abcdef0123456789abcdef",
            For {
                case: "c",
                offline: false,
            },
        ))
        .unwrap()
        .unwrap();
        let name = apptainer::list(&caches.dir).unwrap()[0].name.clone();
        let why = apptainer::remove(&caches.dir, &name).unwrap_err();
        says_kept_once(&kept_line(&format!("singularity cache {name}"), &why));
        drop(held);
    }
}
