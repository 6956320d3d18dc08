//! Storage hygiene shared by the daemon's record store and the hub, the two sled databases:
//! the files a crash of sled 0.34.7 leaves behind that stop the next open.
//!
//! Invariant: only files that were never a finished snapshot are removed.

use std::path::Path;

/// Deletes the snapshot files sled was still writing when its process died, and returns how
/// many there were. Call it only after an open failed with `sled::Error::Corruption`: sled reads
/// snapshots once it holds the directory's lock, so no live process is writing them then.
///
/// sled 0.34.7 writes a snapshot to `snap.<lsn>.generating`, fsyncs it, and only then renames
/// it to `snap.<lsn>`; but on open it reads the last of ALL `snap.*` names, the unfinished one
/// included (it sorts after the finished one), and refuses a truncated file with
/// `Corruption { at: None }` (spacejam/sled#1527, #1533): a SIGKILL during a snapshot left the
/// database unopenable. An unfinished file was never the snapshot of record, and the log it
/// summarises is still on disk, so removing it loses nothing: sled recovers from the previous
/// snapshot and the log.
pub fn remove_unfinished(dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unfinished_snapshots_go() {
        let dir = std::env::temp_dir().join(format!("facegate-snap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in [
            "snap.00000000000000A0",
            "snap.00000000000000B0.generating",
            "db",
            "conf",
        ] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        assert_eq!(remove_unfinished(&dir).unwrap(), 1);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["conf", "db", "snap.00000000000000A0"]);
        assert_eq!(remove_unfinished(&dir).unwrap(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
