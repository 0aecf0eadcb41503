//! One process per store (`docs/client.md` §3.5): an exclusive advisory lock on a sibling file
//! `<store>.lock`, taken before the store is created or opened and held until the last clone of
//! the [`Client`](crate::Client) is dropped.
//!
//! Two processes on one store each keep their own account in memory and their own relay
//! connection: the relay keeps only the newest connection, so the other stops receiving, and
//! one-time prekeys one process published are unknown to the other, so messages that use them
//! cannot be decrypted. The lock turns that into a clear error at open.
//!
//! The lock file holds the holder's process id and a label (for example `hushwire chat`) so the
//! error can say who holds it. The operating system releases the lock when the process ends,
//! however it ends, so a lock file left behind by a crash does not block anyone; its text is
//! only read when the lock is actually held.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use crate::error::{ClientError, Result};

/// The longest label kept in the lock file, in characters.
const MAX_LABEL_CHARS: usize = 80;

/// A held store lock; released when dropped (the file is closed).
#[derive(Debug)]
pub(crate) struct StoreLock {
    _file: File,
}

/// The lock file of the store at `store`: `<store>.lock`.
pub(crate) fn lock_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl StoreLock {
    /// Takes the lock of the store at `store`, writing this process's id and `label` into the
    /// lock file. [`ClientError::StoreInUse`] if another process (or another open client in this
    /// process) holds it.
    pub(crate) fn acquire(store: &Path, label: &str) -> Result<Self> {
        let path = lock_path(store);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&path)?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                let mut text = String::new();
                // The holder writes its line right after locking; an empty or odd file only
                // means the error names no process.
                let _ = file.take(256).read_to_string(&mut text);
                let (pid, holder) = parse(&text);
                return Err(ClientError::StoreInUse {
                    path: store.to_owned(),
                    pid,
                    holder,
                });
            }
            Err(fs4::TryLockError::Error(e)) => return Err(ClientError::Io(e)),
        }
        let label: String = label
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_LABEL_CHARS)
            .collect();
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        writeln!(file, "{} {label}", std::process::id())?;
        file.flush()?;
        Ok(Self { _file: file })
    }
}

/// The holder's process id and label from a lock file's text (`"<pid> <label>\n"`).
fn parse(text: &str) -> (Option<u32>, Option<String>) {
    let line = text.lines().next().unwrap_or_default();
    let (pid, label) = line.split_once(' ').unwrap_or((line, ""));
    let label: String = label
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_LABEL_CHARS)
        .collect();
    (
        pid.trim().parse().ok(),
        (!label.trim().is_empty()).then(|| label.trim().to_owned()),
    )
}

/// The label used when the app gives none: the program's file name.
pub(crate) fn default_label() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "an app".to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holder_and_freed_on_drop() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = dir.path().join("client.db");
        let first = StoreLock::acquire(&store, "hushwire chat").unwrap();
        let err = StoreLock::acquire(&store, "hushwire recv").unwrap_err();
        match err {
            ClientError::StoreInUse { pid, holder, .. } => {
                assert_eq!(pid, Some(std::process::id()));
                assert_eq!(holder.as_deref(), Some("hushwire chat"));
            }
            other => panic!("unexpected {other:?}"),
        }
        drop(first);
        let _again = StoreLock::acquire(&store, "hushwire recv").unwrap();
        let text = std::fs::read_to_string(lock_path(&store)).unwrap();
        assert_eq!(text, format!("{} hushwire recv\n", std::process::id()));
    }

    #[test]
    fn lock_file_text_is_parsed_leniently() {
        assert_eq!(
            parse("42 hushwire chat\n"),
            (Some(42), Some("hushwire chat".into()))
        );
        assert_eq!(parse("42\n"), (Some(42), None));
        assert_eq!(parse(""), (None, None));
        assert_eq!(parse("x \x1b[2J"), (None, Some("[2J".into())));
    }
}
