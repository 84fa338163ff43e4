//! A container's files through the Engine API's archive endpoints, with no program of its image
//! run: read a file (the image's `/etc/passwd`), read who owns a path and its mode, and set a
//! folder's owner and mode. They work on a container that is created and never started: the
//! daemon mounts its root and its volumes for each request.

use std::time::Duration;

use bollard::body_full;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use thiserror::Error;

use super::tar::{self, Entry, TarError};
use crate::config::units::show_duration;

/// The most of a file [`read_file`] reads (an `/etc/passwd` is a few KiB).
pub const READ_MAX: usize = 4 << 20;

/// How many symlinks [`read_file`] follows.
const LINKS_MAX: usize = 8;

#[derive(Debug, Error)]
pub enum ArchiveError {
    #[error("the daemon did not answer within {}", show_duration(*.0))]
    TimedOut(Duration),
    #[error(transparent)]
    Request(BollardError),
    #[error("the daemon's archive does not read as tar")]
    Tar(#[source] TarError),
    #[error("the daemon's archive is empty")]
    Empty,
    #[error("larger than {} bytes", READ_MAX)]
    TooLarge,
    #[error("more than {LINKS_MAX} symlinks to follow")]
    Links,
    #[error("not a file")]
    NotAFile,
}

/// The request's answer within `limit`.
async fn within<T>(
    limit: Duration,
    request: impl std::future::Future<Output = Result<T, ArchiveError>>,
) -> Result<T, ArchiveError> {
    tokio::time::timeout(limit, request)
        .await
        .unwrap_or(Err(ArchiveError::TimedOut(limit)))
}

/// The start of the archive of `path`: enough for its first entry and that entry's data (up to
/// [`READ_MAX`]); None when the path is not there.
async fn first_entry(
    docker: &Docker,
    id: &str,
    path: &str,
) -> Result<Option<(Entry, Vec<u8>)>, ArchiveError> {
    let options = DownloadFromContainerOptionsBuilder::default()
        .path(path)
        .build();
    let mut stream = Box::pin(docker.download_from_container(id, Some(options)));
    let mut bytes = Vec::new();
    loop {
        match tar::first(&bytes) {
            Ok(Some((entry, data))) => {
                let data = data.to_vec();
                // Dropping the stream closes the request: the rest is never sent.
                return Ok(Some((entry, data)));
            }
            Ok(None) => return Err(ArchiveError::Empty),
            Err(TarError::Truncated) if bytes.len() <= READ_MAX + 2048 => {}
            Err(TarError::Truncated) => return Err(ArchiveError::TooLarge),
            Err(e) => return Err(ArchiveError::Tar(e)),
        }
        match stream.next().await {
            Some(Ok(chunk)) => bytes.extend_from_slice(&chunk),
            Some(Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            })) => return Ok(None),
            Some(Err(e)) => return Err(ArchiveError::Request(e)),
            None if bytes.is_empty() => return Err(ArchiveError::Empty),
            None => return Err(ArchiveError::Tar(TarError::Truncated)),
        }
    }
}

/// Who owns `path` in the container and its mode, as the daemon's archive of it says (only its
/// first entry is read); None when the path is not there.
pub async fn owner(
    docker: &Docker,
    id: &str,
    path: &str,
    limit: Duration,
) -> Result<Option<Entry>, ArchiveError> {
    within(limit, async {
        Ok(first_entry(docker, id, path).await?.map(|(entry, _)| entry))
    })
    .await
}

/// The content of the file at `path` in the container, following symlinks; None when it is
/// not there.
pub async fn read_file(
    docker: &Docker,
    id: &str,
    path: &str,
    limit: Duration,
) -> Result<Option<Vec<u8>>, ArchiveError> {
    within(limit, async {
        let mut path = path.to_string();
        for _ in 0..LINKS_MAX {
            let Some((entry, data)) = first_entry(docker, id, &path).await? else {
                return Ok(None);
            };
            if entry.is_symlink() {
                path = resolve_link(&path, &entry.link);
                continue;
            }
            if !matches!(entry.kind, b'0' | 0) {
                return Err(ArchiveError::NotAFile);
            }
            return Ok(Some(data));
        }
        Err(ArchiveError::Links)
    })
    .await
}

/// Where the symlink at `path` pointing to `target` leads.
fn resolve_link(path: &str, target: &str) -> String {
    if target.starts_with('/') {
        return target.to_string();
    }
    let parent = path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
    format!("{parent}/{target}")
}

/// Makes the folder at `path` (absolute, not `/`) belong to `uid:gid` with `mode`: an archive
/// of its one entry uploaded into its parent, which the daemon unpacks with the entry's owner
/// and mode (a folder that is there is kept, only its owner and mode change).
pub async fn set_owner(
    docker: &Docker,
    id: &str,
    path: &str,
    (uid, gid, mode): (u32, u32, u32),
    limit: Duration,
) -> Result<(), ArchiveError> {
    let trimmed = path.trim_end_matches('/');
    let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    let parent = if parent.is_empty() { "/" } else { parent };
    let archive = tar::folder(name, uid, gid, mode).map_err(ArchiveError::Tar)?;
    let options = UploadToContainerOptionsBuilder::default()
        .path(parent)
        .no_overwrite_dir_non_dir("true")
        .build();
    within(limit, async {
        docker
            .upload_to_container(id, Some(options), body_full(archive.into()))
            .await
            .map_err(ArchiveError::Request)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_lead_from_the_link_folder_or_the_root() {
        assert_eq!(
            resolve_link("/etc/passwd", "/usr/etc/passwd"),
            "/usr/etc/passwd"
        );
        assert_eq!(
            resolve_link("/etc/passwd", "../lib/passwd"),
            "/etc/../lib/passwd"
        );
        assert_eq!(resolve_link("/passwd", "p2"), "/p2");
    }

    /// Against the real daemon: a created container of the fixture image, never started. Its
    /// /etc/passwd is read; a folder a fresh volume is mounted at belongs to root and is given
    /// to another uid with a mode; a path that is not there is None.
    #[tokio::test]
    async fn files_and_owners_of_a_created_container() {
        use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
        let docker = Docker::connect_with_defaults().unwrap();
        let volume = format!("zoo-runner-unit-archive-{}", std::process::id());
        let body = ContainerCreateBody {
            image: Some("local/kipoi-fixture:py3".into()),
            cmd: Some(vec!["/never-started".into()]),
            entrypoint: Some(vec![]),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                mounts: Some(vec![Mount {
                    target: Some("/opt/absent/cache".into()),
                    source: Some(volume.clone()),
                    typ: Some(MountType::VOLUME),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = docker
            .create_container(None, body)
            .await
            .expect("a container of the fixture image (bash fixtures/build.sh makes it)")
            .id;
        let limit = Duration::from_secs(30);
        let checks = async {
            let passwd = read_file(&docker, &id, "/etc/passwd", limit).await?;
            let passwd = String::from_utf8(passwd.expect("an /etc/passwd")).unwrap();
            assert!(passwd.starts_with("root:x:0:0:"), "{passwd}");
            assert!(read_file(&docker, &id, "/etc/nothing", limit)
                .await?
                .is_none());
            let before = owner(&docker, &id, "/opt/absent/cache", limit)
                .await?
                .unwrap();
            assert_eq!((before.uid, before.is_dir()), (0, true), "{before:?}");
            set_owner(&docker, &id, "/opt/absent/cache", (4321, 99, 0o750), limit).await?;
            let after = owner(&docker, &id, "/opt/absent/cache", limit)
                .await?
                .unwrap();
            assert_eq!(
                (after.uid, after.gid, after.mode & 0o7777),
                (4321, 99, 0o750)
            );
            Ok::<_, ArchiveError>(())
        }
        .await;
        let _ = crate::engine::remove_container(&docker, &id).await;
        let _ = docker
            .remove_volume(
                &volume,
                None::<bollard::query_parameters::RemoveVolumeOptions>,
            )
            .await;
        checks.unwrap();
    }
}
