//! One running process per state directory: `serve --devnet`, `devnet` and
//! `demo` write a config, a secret and a database there, and two of them
//! would rewrite each other's. The lock is an OS file lock held by the
//! running process, so it goes away with the process, however it ends.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::Context;

const LOCK_FILE: &str = "tollgate.lock";

/// Another running process holds the directory.
#[derive(Debug)]
pub struct InUse(String);

impl std::fmt::Display for InUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InUse {}

/// Held for as long as the process uses the directory.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the directory, or says who has it. `what` names the command.
    pub fn acquire(dir: &Path, what: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(InUse(format!(
                    "{} is in use by another running tollgate ({}). Stop it, or give this one \
                     its own directory (`serve --devnet --devnet-dir DIR`, `devnet --config-out \
                     DIR/tollgate.toml`, `demo --dir DIR`).",
                    dir.display(),
                    if holder.is_empty() {
                        "pid unknown"
                    } else {
                        holder
                    }
                ))
                .into());
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        write!(file, "pid {}, {what}", std::process::id())?;
        file.flush()?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path(), "serve --devnet").unwrap();
        let refused = DirLock::acquire(dir.path(), "serve --devnet").unwrap_err();
        assert!(refused.is::<InUse>());
        let message = refused.to_string();
        assert!(
            message.contains("in use by another running tollgate"),
            "{message}"
        );
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        drop(first);
        DirLock::acquire(dir.path(), "devnet").unwrap();
        assert!(dir.path().join(LOCK_FILE).is_file());
    }
}
