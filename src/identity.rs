//! Whose containers these are: a pid proves a run alive or dead only on the machine and in the
//! PID namespace it was taken in. The runner labels its containers with both (the kernel's
//! boot id, and the inode of its PID namespace), and judges only containers whose labels match
//! its own; a runner inside a CI container sharing the host's daemon, under `unshare -p`, or on
//! another host pointing at the same `DOCKER_HOST` leaves the others' containers alone.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `/proc/sys/kernel/random/boot_id`: new at every boot of the machine (or VM).
    pub boot_id: String,
    /// The PID namespace, as `/proc/self/ns/pid` reads (`pid:[4026531836]`).
    pub pid_ns: String,
}

impl Identity {
    /// This process's identity; a part that cannot be read is empty, and an empty identity
    /// matches nothing (so nothing is swept on its word).
    pub fn of_this_process() -> Self {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let pid_ns = std::fs::read_link("/proc/self/ns/pid")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self { boot_id, pid_ns }
    }

    /// True when a boot id and a PID namespace (as a label or an owner file recorded them) are
    /// this process's: only then does a pid recorded with them mean anything here.
    pub fn is(&self, boot_id: Option<&str>, pid_ns: Option<&str>) -> bool {
        !self.boot_id.is_empty()
            && !self.pid_ns.is_empty()
            && boot_id == Some(self.boot_id.as_str())
            && pid_ns == Some(self.pid_ns.as_str())
    }
}

/// The start time of a process (field 22 of /proc/PID/stat), or None when there is no such
/// process.
pub fn process_start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19).map(str::to_string)
}

/// True when process `pid` exists and started when `start` says (a reused pid does not count;
/// no recorded start means any start).
pub fn is_alive(pid: u32, start: Option<&str>) -> bool {
    match process_start_time(pid) {
        None => false,
        Some(now) => start.is_none_or(|want| want.is_empty() || want == now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_an_identity() {
        let me = Identity::of_this_process();
        assert_eq!(me.boot_id.len(), 36, "{me:?}");
        assert!(me.pid_ns.starts_with("pid:["), "{me:?}");
    }

    #[test]
    fn only_the_same_boot_and_namespace_match() {
        let me = Identity::of_this_process();
        assert!(me.is(Some(&me.boot_id), Some(&me.pid_ns)));
        assert!(
            !me.is(Some(&me.boot_id), Some("pid:[1]")),
            "other namespace"
        );
        assert!(
            !me.is(Some("other-boot"), Some(&me.pid_ns)),
            "other machine"
        );
        assert!(!me.is(None, None), "an older runner's container");
        let blind = Identity {
            boot_id: String::new(),
            pid_ns: String::new(),
        };
        assert!(!blind.is(Some(""), Some("")));
    }

    #[test]
    fn own_process_is_alive_and_a_dead_one_is_not() {
        let me = std::process::id();
        let start = process_start_time(me).expect("own start time");
        assert!(is_alive(me, Some(&start)));
        assert!(is_alive(me, None));
        assert!(!is_alive(me, Some("1")), "same pid, other start: reused");
        // Beyond the kernel's pid_max: no such process.
        assert!(!is_alive(4_194_305, None));
    }
}
