//! The image's user (its `USER`: `name`, `uid`, `name:group`, `uid:gid`) as the numbers a
//! cache folder is given to, read from the image's own `/etc/passwd` and `/etc/group` as the
//! container's runtime would, without running anything in the image.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UserError {
    #[error("the image has no /etc/passwd to look its user `{0}` up in")]
    NoPasswd(String),
    #[error("the image's user `{0}` is not in its /etc/passwd")]
    NoUser(String),
    #[error("the image has no /etc/group to look its group `{0}` up in")]
    NoGroup(String),
    #[error("the image's group `{0}` is not in its /etc/group")]
    NoSuchGroup(String),
}

/// A user as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// True for a `USER` the container runs as root with.
pub fn is_root(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or_default();
    matches!(name, "" | "root" | "0")
}

/// Whether resolving `user` needs the image's /etc/passwd and /etc/group.
pub fn needs(user: &str) -> (bool, bool) {
    let (name, group) = split(user);
    let passwd = name.parse::<u32>().is_err() || group.is_none();
    let group = group.is_some_and(|g| g.parse::<u32>().is_err());
    (passwd, group)
}

fn split(user: &str) -> (&str, Option<&str>) {
    match user.split_once(':') {
        Some((name, group)) => (name, Some(group)),
        None => (user, None),
    }
}

/// The fields of the `/etc/passwd` or `/etc/group` line whose name (first field) or number
/// (third field) is `key`.
fn line<'a>(file: &'a str, key: &str, by_number: bool) -> Option<Vec<&'a str>> {
    file.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && if by_number { f[2] == key } else { f[0] == key })
}

/// `user` as numbers. A uid not in `passwd` is taken as it is, with group 0 unless one is
/// given (as Docker runs it); a name must be there.
pub fn resolve(user: &str, passwd: Option<&str>, group: Option<&str>) -> Result<Ids, UserError> {
    let (name, group_name) = split(user);
    let entry = match name.parse::<u32>() {
        Ok(uid) => passwd
            .and_then(|p| line(p, name, true))
            .map_or(Ok((uid, None)), |f| {
                Ok((uid, f.get(3).and_then(|g| g.parse::<u32>().ok())))
            }),
        Err(_) => {
            let passwd = passwd.ok_or_else(|| UserError::NoPasswd(name.to_string()))?;
            let f = line(passwd, name, false).ok_or_else(|| UserError::NoUser(name.to_string()))?;
            let uid = f[2]
                .parse::<u32>()
                .map_err(|_| UserError::NoUser(name.to_string()))?;
            Ok((uid, f.get(3).and_then(|g| g.parse::<u32>().ok())))
        }
    };
    let (uid, primary) = entry?;
    let gid = match group_name {
        None => primary.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = group.ok_or_else(|| UserError::NoGroup(g.to_string()))?;
                line(groups, g, false)
                    .and_then(|f| f[2].parse::<u32>().ok())
                    .ok_or_else(|| UserError::NoSuchGroup(g.to_string()))?
            }
        },
    };
    Ok(Ids { uid, gid })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\n# a comment\nzoo:x:1000:1001::/home/zoo:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nzoo:x:1001:\nmodels:x:2000:zoo\n";

    #[test]
    fn names_are_looked_up_and_numbers_taken_as_they_are() {
        let ids = |uid, gid| Ok(Ids { uid, gid });
        assert_eq!(resolve("zoo", Some(PASSWD), None), ids(1000, 1001));
        assert_eq!(
            resolve("zoo:models", Some(PASSWD), Some(GROUP)),
            ids(1000, 2000)
        );
        assert_eq!(resolve("zoo:7", Some(PASSWD), None), ids(1000, 7));
        assert_eq!(resolve("1000", Some(PASSWD), None), ids(1000, 1001));
        assert_eq!(resolve("1234", None, None), ids(1234, 0));
        assert_eq!(resolve("1234:5", None, None), ids(1234, 5));
        assert_eq!(
            resolve("nobody", Some(PASSWD), None),
            Err(UserError::NoUser("nobody".into()))
        );
        assert_eq!(
            resolve("zoo", None, None),
            Err(UserError::NoPasswd("zoo".into()))
        );
        assert_eq!(
            resolve("zoo:staff", Some(PASSWD), Some(GROUP)),
            Err(UserError::NoSuchGroup("staff".into()))
        );
    }

    #[test]
    fn what_a_user_needs_looked_up() {
        assert_eq!(needs("zoo"), (true, false));
        assert_eq!(needs("1000"), (true, false));
        assert_eq!(needs("1000:1000"), (false, false));
        assert_eq!(needs("zoo:models"), (true, true));
        assert_eq!(needs("1000:models"), (false, true));
    }

    #[test]
    fn root_users_need_nothing() {
        for user in ["", "root", "0", "0:0", "root:staff"] {
            assert!(is_root(user), "{user}");
        }
        for user in ["antspyuser", "1000", "1000:1000", "modeluser:users"] {
            assert!(!is_root(user), "{user}");
        }
    }
}
