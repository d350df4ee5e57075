//! Files picket reads again when they change. A worker runs for weeks: the host's
//! `/etc/hosts` and `/etc/resolv.conf` (`dns`), and the roots TLS trusts
//! (`tls.extra_ca_file` and the system's bundle, `http::tls`), are followed as glibc
//! follows `resolv.conf` and Go's resolver (blackbox_exporter, Gatus) both host files.
//!
//! A [`Reread`] value is looked at (one `stat` per file) at most every [`LOOK_EVERY`], by
//! whichever use comes first ([`Looks`]), and read again only when what a `stat` shows
//! changed: a file's time, change time, size or inode (an edit in place, as a bind
//! mount's file is rewritten, or a new file moved over it), or a directory's entries.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// How often the files are looked at.
pub(crate) const LOOK_EVERY: Duration = Duration::from_secs(2);

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

/// Each path's [`Stamp`].
fn stamps(paths: &[PathBuf]) -> Vec<Option<Stamp>> {
    paths.iter().map(|p| stamp(p)).collect()
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

/// How a value is read from its files.
pub(crate) type Read<T> = Box<dyn Fn() -> Result<T, String> + Send + Sync>;

/// A value read from files, read again when one of them changes.
pub(crate) struct Reread<T> {
    /// What the logs and `picket_host_files_read_total` call it.
    name: &'static str,
    paths: Vec<PathBuf>,
    read: Read<T>,
    now: RwLock<Arc<T>>,
    seen: Mutex<Vec<Option<Stamp>>>,
}

impl<T> Reread<T> {
    /// `first` of the file `path` now, and `read` again after each change of it.
    ///
    /// # Errors
    /// `first`'s.
    pub(crate) fn file<E>(
        path: &'static str,
        first: impl FnOnce() -> Result<T, E>,
        read: Read<T>,
    ) -> Result<Reread<T>, E> {
        Reread::new(path, vec![PathBuf::from(path)], first, read)
    }

    /// `first` of `paths` (files or directories), called `name`, now, and `read` again
    /// after each change of any of them.
    ///
    /// # Errors
    /// `first`'s.
    pub(crate) fn new<E>(
        name: &'static str,
        paths: Vec<PathBuf>,
        first: impl FnOnce() -> Result<T, E>,
        read: Read<T>,
    ) -> Result<Reread<T>, E> {
        let seen = stamps(&paths);
        let value = first()?;
        Ok(Reread {
            name,
            paths,
            read,
            now: RwLock::new(Arc::new(value)),
            seen: Mutex::new(seen),
        })
    }

    /// The value as last read.
    pub(crate) fn get(&self) -> Arc<T> {
        match self.now.read() {
            Ok(now) => Arc::clone(&now),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Reads the files again if one changed since they were last seen; whether the
    /// value changed. Files that cannot be read, or say nothing usable (a `resolv.conf`
    /// caught between its truncation and its writing names no nameserver), leave the
    /// value as it was, until a file changes again.
    pub(crate) fn look(&self) -> bool {
        let now = stamps(&self.paths);
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
                tracing::info!(file = self.name, "read again: it changed");
                crate::metric::host_file_read(self.name, true);
                true
            }
            Err(e) => {
                tracing::warn!(
                    file = self.name,
                    "changed, and could not be read again ({e}): what it said before stands"
                );
                crate::metric::host_file_read(self.name, false);
                false
            }
        }
    }
}

/// When the files are next looked at: claimed by one lookup at a time, with no lock on
/// the way of the others.
pub(crate) struct Looks {
    start: Instant,
    /// Milliseconds from `start`.
    next: AtomicU64,
}

impl Looks {
    pub(crate) fn new() -> Looks {
        Looks {
            start: Instant::now(),
            next: AtomicU64::new(millis(LOOK_EVERY)),
        }
    }

    /// Whether it is time to look, claimed for the caller alone.
    pub(crate) fn due(&self) -> bool {
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
        let file = Reread::file(path, || Ok::<_, ()>("one".to_string()), read).expect("first read");
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
        let file = Reread::file(
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
