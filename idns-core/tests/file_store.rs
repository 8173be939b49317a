//! The crash-safe file store: round trip, compare-and-swap, corrupt files, leftovers of a
//! crash.

use std::error::Error;
use std::path::Path;
use std::time::{Duration, SystemTime};

use idns_core::runtime::FileStore;
use idns_core::{BackendError, Election, Epoch, Journal, ServiceConfig, StateStore};

type TestResult = Result<(), Box<dyn Error>>;

fn config() -> Result<ServiceConfig, Box<dyn Error>> {
    Ok(ServiceConfig::from_toml(
        r#"
        name = "app.example.com"
        zone = "example.com"
        resources = ["db"]
        [[sites]]
        id = "primary"
        priority = 1
        addresses = ["192.0.2.1"]
        probes = [{ id = "web" }]
        [[sites]]
        id = "recovery"
        priority = 2
        addresses = ["198.51.100.1"]
        probes = [{ id = "web" }]
        "#,
    )?)
}

/// A journal with a runbook in progress (the bootstrap), so the round trip covers wall times,
/// durations and planned steps.
fn journal() -> Result<Journal, Box<dyn Error>> {
    let wall = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
    let now = tokio::time::Instant::now().into_std();
    let election = Election::new(config()?, None, now, wall)?;
    let journal = election.journal().clone();
    assert!(
        journal.runbook().is_some(),
        "the bootstrap runbook is in the journal"
    );
    Ok(journal)
}

/// The same journal as another controller would have written it, at another epoch (with no
/// runbook in progress when `runbook` is false). Only the election changes a journal, so the
/// test edits its serde form, as a file on disk would differ.
fn at_epoch(j: &Journal, epoch: u64, runbook: bool) -> Result<Journal, Box<dyn Error>> {
    let mut value = serde_json::to_value(j)?;
    value["epoch"] = epoch.into();
    if !runbook {
        value["runbook"] = serde_json::Value::Null;
    }
    let other: Journal = serde_json::from_value(value)?;
    assert_eq!(other.epoch(), Epoch::new(epoch));
    Ok(other)
}

/// Writes a file as a crash or a person would, behind the store's back.
// Tests set the scene on disk; the crate's clippy.toml keeps disk I/O to the runtime.
#[allow(clippy::disallowed_methods)]
fn write_behind_the_store(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[tokio::test]
async fn a_saved_journal_loads_back_identical_with_its_revision() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = FileStore::new(dir.path().join("state.json"));
    assert_eq!(store.load().await?, None, "nothing saved yet");

    let first = journal()?;
    assert_eq!(store.save(&first, None).await?, 1);
    let loaded = store.load().await?.ok_or("the journal was saved")?;
    assert_eq!(loaded.revision, 1);
    assert_eq!(loaded.journal, first);

    let second = at_epoch(&first, 7, false)?;
    assert_eq!(store.save(&second, Some(1)).await?, 2);
    let loaded = FileStore::new(store.path()).load().await?.ok_or("saved")?;
    assert_eq!(loaded.revision, 2);
    assert_eq!(loaded.journal, second);

    let names: Vec<String> = std::fs::read_dir(dir.path())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    assert_eq!(
        names,
        vec!["state.json"],
        "no temporary file is left behind"
    );
    Ok(())
}

#[tokio::test]
async fn a_save_with_a_stale_revision_is_a_conflict_and_changes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.json");
    let ours = FileStore::new(&path);
    let theirs = FileStore::new(&path);
    let j = journal()?;
    assert_eq!(ours.save(&j, None).await?, 1);

    // Another controller takes over the file.
    let taken = at_epoch(&j, 5, true)?;
    assert_eq!(theirs.save(&taken, Some(1)).await?, 2);

    for expected in [Some(1), None, Some(3)] {
        match ours.save(&j, expected).await {
            Err(BackendError::Conflict(msg)) => {
                assert!(msg.contains("revision 2"), "{msg}");
                assert!(msg.contains(&path.display().to_string()), "{msg}");
            }
            other => panic!("expected a conflict for {expected:?}, got {other:?}"),
        }
    }
    let stored = ours.load().await?.ok_or("still there")?;
    assert_eq!(stored.revision, 2);
    assert_eq!(stored.journal, taken);
    Ok(())
}

/// The store knows its own file without reading it again, but a file rewritten in place behind
/// its back (same inode, as `cp` over it does) is read and its revision compared.
#[tokio::test]
async fn a_journal_rewritten_in_place_behind_the_store_is_a_conflict() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.json");
    let ours = FileStore::new(&path);
    let j = journal()?;
    assert_eq!(ours.save(&j, None).await?, 1);
    assert_eq!(ours.save(&j, Some(1)).await?, 2);
    // Restored by hand from an older copy: the same inode, another revision and length.
    let older = serde_json::json!({ "revision": 7, "journal": at_epoch(&j, 3, false)? });
    write_behind_the_store(&path, serde_json::to_vec(&older)?.as_slice())?;
    match ours.save(&j, Some(2)).await {
        Err(BackendError::Conflict(msg)) => assert!(msg.contains("revision 7"), "{msg}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(ours.load().await?.ok_or("there")?.revision, 7);
    assert_eq!(ours.save(&j, Some(7)).await?, 8);
    Ok(())
}

#[tokio::test]
async fn a_corrupt_file_is_a_clear_error_naming_it_and_is_never_overwritten() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.json");
    let store = FileStore::new(&path);
    for junk in [
        &b"{\"revision\": 3, \"journal\": {\"vers"[..],
        b"",
        b"[1, 2, 3]",
    ] {
        write_behind_the_store(&path, junk)?;
        match store.load().await {
            Err(BackendError::Integrity(msg)) => {
                assert!(msg.contains(&path.display().to_string()), "{msg}");
                assert!(msg.contains("corrupt"), "{msg}");
            }
            other => panic!("expected an integrity error, got {other:?}"),
        }
        let saved = store.save(&journal()?, None).await;
        assert!(
            matches!(saved, Err(BackendError::Integrity(_))),
            "a corrupt file is not overwritten: {saved:?}"
        );
        assert_eq!(std::fs::read(&path)?, junk);
    }
    Ok(())
}

#[tokio::test]
async fn a_partial_temporary_file_left_by_a_crash_does_not_affect_load_or_save() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.json");
    let store = FileStore::new(&path);
    let j = journal()?;
    assert_eq!(store.save(&j, None).await?, 1);

    // A crash in the middle of writing the next revision: the temporary file is half written
    // and was never renamed. The crashed process may have had our process id (process 1 in a
    // container), so leftovers also sit under the names this process uses next.
    let full = std::fs::read(&path)?;
    let pid = std::process::id();
    for tmp in (0..64)
        .map(|n| format!(".state.json.{pid}.{n}.tmp"))
        .chain([
            ".state.json.1.0.tmp".to_owned(),
            "state.json.tmp".to_owned(),
        ])
    {
        write_behind_the_store(&dir.path().join(tmp), &full[..full.len() / 2])?;
    }

    let loaded = store.load().await?.ok_or("the target is intact")?;
    assert_eq!((loaded.revision, &loaded.journal), (1, &j));

    let next = at_epoch(&j, 2, true)?;
    assert_eq!(store.save(&next, Some(1)).await?, 2);
    let loaded = store.load().await?.ok_or("saved")?;
    assert_eq!((loaded.revision, &loaded.journal), (2, &next));
    Ok(())
}

#[tokio::test]
async fn a_save_into_a_missing_directory_fails_naming_the_path_and_leaves_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("missing").join("state.json");
    let store = FileStore::new(&path);
    match store.save(&journal()?, None).await {
        Err(BackendError::NotFound(msg)) => assert!(msg.contains("missing"), "{msg}"),
        other => panic!("expected a not-found error, got {other:?}"),
    }
    assert_eq!(store.load().await?, None);
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
    Ok(())
}
