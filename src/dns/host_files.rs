//! What the host's own files give the resolver, reread when they change: `/etc/hosts`,
//! and `/etc/resolv.conf` when picket uses the system's resolver. A worker runs for
//! weeks; an operator who pins a site to its new server in the hosts file, or a host
//! whose nameserver moves (a DHCP lease, a VPN), expects the next check to follow, as
//! glibc rereads `resolv.conf` when it changes and Go's resolver (blackbox_exporter,
//! Gatus) looks at both files every 5 s.
//!
//! Each file is looked at (one `stat`) at most every [`LOOK_EVERY`], by whichever lookup
//! comes first, and read again only when what the `stat` shows changed: its time, size
//! or inode (an edit in place, as a bind mount's file is rewritten, or a new file moved
//! over it).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// The hosts file.
pub(super) const HOSTS: &str = "/etc/hosts";
/// The system resolver's configuration.
pub(super) const RESOLV_CONF: &str = "/etc/resolv.conf";

/// How often the files are looked at.
pub(super) const LOOK_EVERY: Duration = Duration::from_secs(2);

/// What a `stat` of a file shows of a change; `None` in [`Reread`] when it is missing.
/// The change time too: an edit in place of the same size can keep the modification
/// time (`cp -p`, `touch -r`, two writes within one clock tick), never the change time
/// (review AA), which glibc compares as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    changed: (i64, i64),
    len: u64,
    inode: u64,
    device: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        changed: (meta.ctime(), meta.ctime_nsec()),
        len: meta.len(),
        inode: meta.ino(),
        device: meta.dev(),
    })
}

/// Reads the hosts file as glibc does, whatever bytes it holds: a line that is not
/// UTF-8 (a Latin-1 comment) is read with its odd bytes replaced, where hickory's own
/// reading refused the whole file and every pin was dropped (review AA).
///
/// # Errors
/// The file cannot be read.
pub(super) fn read_hosts() -> Result<hickory_resolver::Hosts, String> {
    let bytes = std::fs::read(HOSTS).map_err(|e| format!("{HOSTS}: {e}"))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut hosts = hickory_resolver::Hosts::default();
    hosts
        .read_hosts_conf(text.as_bytes())
        .map_err(|e| format!("{HOSTS}: {e}"))?;
    Ok(hosts)
}

/// How a value is read from its file.
type Read<T> = Box<dyn Fn() -> Result<T, String> + Send + Sync>;

/// A value read from a host file, read again when the file changes.
pub(super) struct Reread<T> {
    path: &'static str,
    read: Read<T>,
    now: RwLock<Arc<T>>,
    seen: Mutex<Option<Stamp>>,
}

impl<T> Reread<T> {
    /// `first` of `path` now, and `read` again after each change of it.
    ///
    /// # Errors
    /// `first`'s.
    pub(super) fn new<E>(
        path: &'static str,
        first: impl FnOnce() -> Result<T, E>,
        read: Read<T>,
    ) -> Result<Reread<T>, E> {
        let seen = stamp(Path::new(path));
        let value = first()?;
        Ok(Reread {
            path,
            read,
            now: RwLock::new(Arc::new(value)),
            seen: Mutex::new(seen),
        })
    }

    /// The value as last read.
    pub(super) fn get(&self) -> Arc<T> {
        match self.now.read() {
            Ok(now) => Arc::clone(&now),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Reads the file again if it changed since it was last seen; whether the value
    /// changed. A file that cannot be read, or says nothing usable (a `resolv.conf`
    /// caught between its truncation and its writing names no nameserver), leaves the
    /// value as it was, until the file changes again.
    pub(super) fn look(&self) -> bool {
        let now = stamp(Path::new(self.path));
        {
            let Ok(mut seen) = self.seen.lock() else {
                return false;
            };
            if *seen == now {
                return false;
            }
            *seen = now;
        }
        match (self.read)() {
            Ok(value) => {
                if let Ok(mut current) = self.now.write() {
                    *current = Arc::new(value);
                }
                tracing::info!(file = self.path, "read again: it changed");
                crate::metric::host_file_read(self.path, true);
                true
            }
            Err(e) => {
                tracing::warn!(
                    file = self.path,
                    "changed, and could not be read again ({e}): what it said before stands"
                );
                crate::metric::host_file_read(self.path, false);
                false
            }
        }
    }
}

/// When the files are next looked at: claimed by one lookup at a time, with no lock on
/// the way of the others.
pub(super) struct Looks {
    start: Instant,
    /// Milliseconds from `start`.
    next: AtomicU64,
}

impl Looks {
    pub(super) fn new() -> Looks {
        Looks {
            start: Instant::now(),
            next: AtomicU64::new(millis(LOOK_EVERY)),
        }
    }

    /// Whether it is time to look, claimed for the caller alone.
    pub(super) fn due(&self) -> bool {
        let now = millis(self.start.elapsed());
        let next = self.next.load(Ordering::Relaxed);
        now >= next
            && self
                .next
                .compare_exchange(
                    next,
                    now + millis(LOOK_EVERY),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_read_again_only_after_it_changed_and_a_bad_reading_leaves_the_last_good() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path: &'static str = Box::leak(
            dir.path()
                .join("conf")
                .to_string_lossy()
                .into_owned()
                .into_boxed_str(),
        );
        std::fs::write(path, "one").expect("write");
        let read: Read<String> = Box::new(move || {
            let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
            if text.is_empty() {
                return Err("says nothing".into());
            }
            Ok(text)
        });
        let file = Reread::new(path, || Ok::<_, ()>("one".to_string()), read).expect("first read");
        assert!(!file.look(), "unchanged: not read again");
        std::fs::write(path, "two!").expect("write");
        assert!(file.look(), "changed: read again");
        assert_eq!(*file.get(), "two!");
        std::fs::write(path, "").expect("write");
        assert!(!file.look(), "an empty reading is refused");
        assert_eq!(*file.get(), "two!", "the last good value stands");
        std::fs::write(path, "three").expect("write");
        assert!(file.look());
        assert_eq!(*file.get(), "three");
        std::fs::remove_file(path).expect("remove");
        assert!(!file.look(), "a file gone is not read");
        assert_eq!(*file.get(), "three");
    }

    /// Review AA: the stamp is time, size, inode and device, not the change time. An
    /// edit in place that keeps the size (a DHCP client or VPN swapping
    /// `nameserver 10.0.0.1` for `nameserver 10.0.0.2`; an intranet moved from
    /// `10.1.2.3` to `10.1.2.4` in /etc/hosts) and lands within the tick of the file's
    /// last time, or is written by a tool that keeps the time (`cp -p`, `rsync -t`
    /// in place, `tar`, `touch -r`), is never read: the worker asks the old nameserver,
    /// or the old address, until the file changes again or it restarts. glibc's
    /// `file_is_unchanged` compares the ctime too, which no writer can keep.
    #[test]
    fn an_edit_keeping_the_size_and_the_time_is_read_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path: &'static str = Box::leak(
            dir.path()
                .join("resolv.conf")
                .to_string_lossy()
                .into_owned()
                .into_boxed_str(),
        );
        std::fs::write(path, "nameserver 10.0.0.1\n").expect("write");
        let read: Read<String> =
            Box::new(move || std::fs::read_to_string(path).map_err(|e| e.to_string()));
        let file = Reread::new(
            path,
            || Ok::<_, ()>("nameserver 10.0.0.1\n".to_string()),
            read,
        )
        .expect("first read");
        let time = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .expect("mtime");
        std::fs::write(path, "nameserver 10.0.0.2\n").expect("write");
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(time))
            .expect("the time kept");
        assert!(file.look(), "the file changed (its ctime did): read again");
        assert_eq!(*file.get(), "nameserver 10.0.0.2\n");
    }

    #[test]
    fn one_caller_looks_per_period() {
        let looks = Looks::new();
        assert!(!looks.due(), "not at once after the start");
        looks.next.store(0, Ordering::Relaxed);
        assert!(looks.due(), "due once the time came");
        assert!(!looks.due(), "claimed: the next waits a period");
    }
}
