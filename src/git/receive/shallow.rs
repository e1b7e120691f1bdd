//! The repository's `shallow` file: the commits whose parents it lacks
//! (read for the advertisement and the connectivity check, extended when a
//! shallow push is accepted).

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use git2::Oid;

use crate::git::GitError;

pub(super) fn read_shallow(repo: &Path) -> Result<Vec<Oid>, GitError> {
    match std::fs::read_to_string(repo.join("shallow")) {
        Ok(s) => Ok(s
            .lines()
            .filter_map(|l| Oid::from_str(l.trim()).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// Adds `oids` to the repo's `shallow` file (atomically, under its lock).
pub(super) fn record_shallow(repo: &Path, oids: &[Oid]) -> Result<(), GitError> {
    let lock = repo.join("shallow.lock");
    let mut tries = 0;
    let mut f = loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(f) => break f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let result = (|| {
        let mut all = read_shallow(repo)?;
        all.extend_from_slice(oids);
        all.sort();
        all.dedup();
        let text: String = all.iter().map(|o| format!("{o}\n")).collect();
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&lock, repo.join("shallow"))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&lock);
    }
    result
}
