#![allow(clippy::unwrap_used)]
//! The encrypted store against real templates: nothing in the clear on disk, tampering is
//! detected, and SIGKILL at random points loses no acknowledged enrollment.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use facegate_daemon::pipeline::embed::EMBEDDING_DIM;
use facegate_daemon::pipeline::models::ModelStore;
use facegate_daemon::store::crypto::SecretKey;
use facegate_daemon::store::index::Quantization;
use facegate_daemon::store::keys::{self, KEY_FILE, KeySources};
use facegate_daemon::store::records::{AuditAction, AuditRow, Change};
use facegate_daemon::store::{IndexOrigin, SNAPSHOT_FILE, Store, StoreConfig};

fn store_config(q: Quantization) -> StoreConfig {
    StoreConfig {
        quantization: q,
        search_expansion: 128,
        cache_mib: 32,
    }
}

fn open(dir: &Path, q: Quantization) -> (Store, facegate_daemon::store::OpenReport) {
    Store::open(dir, &KeySources::default(), &store_config(q), EMBEDDING_DIM).unwrap()
}

/// Real templates: the first ORL photo of people s01..s0n.
fn orl_templates(n: usize) -> Vec<Vec<f32>> {
    let models = ModelStore::open_first(&[common::models_dir()]).unwrap();
    let p = common::fp32_pipeline(&models);
    (1..=n)
        .map(|s| {
            let bytes = std::fs::read(common::data(&format!("faces/orl/s{s:02}/01.pgm"))).unwrap();
            p.analyze_largest(&bytes)
                .unwrap()
                .1
                .embedding
                .as_slice()
                .to_vec()
        })
        .collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p))
        } else {
            out.push(p)
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Fails if any file under `dir` holds any of the labelled byte strings.
fn assert_nowhere_on_disk(dir: &Path, needles: &[(String, Vec<u8>)]) {
    for f in files_under(dir) {
        let bytes = std::fs::read(&f).unwrap();
        for (label, needle) in needles {
            assert!(
                !contains(&bytes, needle),
                "{label} in clear in {}",
                f.display()
            );
        }
    }
}

/// IEEE 754 half precision, round to nearest (normal range only, enough for |x| <= 1).
fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    if exp <= 0 {
        return sign;
    }
    let mant = b & 0x7f_ffff;
    let mut h = (sign as u32) | ((exp as u32) << 10) | (mant >> 13);
    if mant & 0x1000 != 0 {
        h += 1;
    }
    h as u16
}

/// The encodings of a template's first 16 values a careless store could write.
fn encodings(t: &[f32]) -> Vec<(&'static str, Vec<u8>)> {
    let head = &t[..16];
    vec![
        ("f32", head.iter().flat_map(|v| v.to_le_bytes()).collect()),
        (
            "f16",
            head.iter()
                .flat_map(|v| f16_bits(*v).to_le_bytes())
                .collect(),
        ),
        (
            "i8",
            head.iter()
                .map(|v| (v * 127.0).round().clamp(-127.0, 127.0) as i8 as u8)
                .collect(),
        ),
    ]
}

#[test]
fn no_template_bytes_reach_disk_in_any_encoding() {
    let templates = orl_templates(5);
    // The scan can fail: a plaintext dump is found.
    let control = common::tempdir("scan-control");
    std::fs::write(
        control.join("dump"),
        [b"x".as_slice(), &encodings(&templates[0])[0].1].concat(),
    )
    .unwrap();
    let needle = vec![("f32 dump".to_owned(), encodings(&templates[0])[0].1.clone())];
    let found = std::panic::catch_unwind(|| assert_nowhere_on_disk(&control, &needle));
    assert!(found.is_err(), "the disk scan must find a plaintext dump");
    std::fs::remove_dir_all(control).unwrap();

    for q in [Quantization::F32, Quantization::F16, Quantization::I8] {
        let dir = common::tempdir(&format!("scan-{q:?}"));
        let (store, _) = open(&dir, q);
        for (i, t) in templates.iter().enumerate() {
            store
                .enroll("door", &format!("person-{i}"), t, 0.9, true)
                .unwrap();
            store
                .records()
                .audit(&audit_row(&format!("person-{i}"), i as u64))
                .unwrap();
        }
        store.save_snapshot().unwrap();
        drop(store);
        assert!(files_under(&dir).iter().any(|f| f.ends_with(SNAPSHOT_FILE)));
        let mut needles: Vec<(String, Vec<u8>)> = templates
            .iter()
            .flat_map(|t| encodings(t))
            .map(|(name, bytes)| (format!("{q:?}: {name} template bytes"), bytes))
            .collect();
        needles.push((format!("{q:?}: a user id"), b"person-".to_vec()));
        assert_nowhere_on_disk(&dir, &needles);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

fn audit_row(user: &str, at_ms: u64) -> AuditRow {
    AuditRow {
        at_ms,
        action: AuditAction::Authenticate,
        client: "door".into(),
        user_id: Some(user.into()),
        session_id: Some("session-xyz".into()),
        success: at_ms.is_multiple_of(2),
        reason: if at_ms.is_multiple_of(2) {
            "match_found"
        } else {
            "no_match_found"
        }
        .into(),
        confidence: Some(0.7),
        processing_ms: 41.0,
    }
}

#[test]
fn audit_rows_are_sealed_in_the_feed_and_queryable_by_time() {
    let dir = common::tempdir("audit");
    let (store, _) = open(&dir, Quantization::I8);
    let t = template_for("alice");
    store.enroll("door", "alice", &t, 0.9, true).unwrap();
    for at in [1_000u64, 2_000, 2_000, 3_000, 5_000] {
        store.records().audit(&audit_row("alice", at)).unwrap();
    }
    let seq = store
        .records()
        .append_metrics(6_000, "{\"frames\":12}".into())
        .unwrap();
    drop(store);
    let (store, _) = open(&dir, Quantization::I8);
    let r = store.records();
    assert_eq!(r.audit_len(), 5);
    let rows = r.audit_between(2_000, 5_000, 100).unwrap();
    assert_eq!(
        rows.iter().map(|a| a.at_ms).collect::<Vec<_>>(),
        [2_000, 2_000, 3_000]
    );
    assert_eq!(rows[0], audit_row("alice", 2_000));
    assert_eq!(r.audit_between(0, u64::MAX, 2).unwrap().len(), 2, "limit");
    // The feed carries the enrollment, the five rows and the metrics snapshot, in order; the
    // epoch moved only for the enrollment.
    let feed = r.feed_after(0, 100).unwrap();
    assert_eq!(feed.len(), 7);
    assert!(matches!(&feed[1].1, Change::Audit(a) if a.at_ms == 1_000));
    assert!(matches!(&feed[6].1, Change::Metrics { at_ms: 6_000, .. }));
    assert_eq!(feed[6].0, seq);
    assert_eq!(r.epoch().unwrap(), 1);
    drop(store);
    assert_nowhere_on_disk(
        &dir,
        &[
            ("a session id".to_owned(), b"session-xyz".to_vec()),
            ("a failure reason".to_owned(), b"no_match_found".to_vec()),
        ],
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Everything a store holds, read back, to compare before and after a rotation.
fn contents(store: &Store) -> (Vec<String>, usize, usize) {
    let users = store
        .list(None)
        .unwrap()
        .into_iter()
        .map(|e| e.user_id)
        .collect();
    let feed = store.records().feed_after(0, usize::MAX).unwrap().len();
    let audit = store
        .records()
        .audit_between(0, u64::MAX, usize::MAX)
        .unwrap()
        .len();
    (users, feed, audit)
}

#[test]
fn key_rotation_reseals_everything_and_readers_never_stop() {
    let dir = common::tempdir("rotate");
    let (store, _) = open(&dir, Quantization::I8);
    let people: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    for p in &people {
        store
            .enroll("door", p, &template_for(p), 0.9, true)
            .unwrap();
        store.records().audit(&audit_row(p, 10)).unwrap();
    }
    let client = store
        .records()
        .add_client("front-door", Default::default())
        .unwrap();
    store.save_snapshot().unwrap();
    let before = contents(&store);
    let old_key = std::fs::read(dir.join(KEY_FILE)).unwrap();
    let data_bytes_before = std::fs::read(dir.join(SNAPSHOT_FILE)).unwrap();

    // Readers identify in a loop while the keys rotate: every read succeeds.
    let store = std::sync::Arc::new(store);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, stop, people) = (store.clone(), stop.clone(), people.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || reads < 50 {
                let p = &people[reads % people.len()];
                let (best, _) = store.identify("door", &template_for(p), 3, 0.5).unwrap();
                assert_eq!(&best.unwrap().user_id, p);
                assert!(store.verify("door", p, &template_for(p)).unwrap().is_some());
                reads += 1;
            }
            reads
        })
    };
    let report = store.rotate_keys(&KeySources::default(), None).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().unwrap();
    assert!(reads >= 50);
    let resealed: std::collections::HashMap<_, _> =
        report.resealed.resealed.iter().cloned().collect();
    assert_eq!(resealed["enrollments"], 40);
    assert_eq!(resealed["audit"], 40);
    assert_eq!(resealed["clients"], 1);
    assert_eq!(
        resealed["feed"], 81,
        "40 enrollments, 40 audit rows, 1 client created"
    );
    assert_eq!(report.master.as_deref(), Some(dir.join(KEY_FILE).as_path()));
    assert!(!store.records().rotating());
    drop(store);

    // The key file holds a new master key (still 0600); the old one opens nothing any more.
    let new_key = std::fs::read(dir.join(KEY_FILE)).unwrap();
    assert_ne!(old_key, new_key);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_ne!(
        std::fs::read(dir.join(SNAPSHOT_FILE)).unwrap(),
        data_bytes_before
    );
    let (store, report) = open(&dir, Quantization::I8);
    assert_eq!(
        report.index,
        IndexOrigin::Snapshot,
        "the snapshot was re-sealed too"
    );
    assert_eq!(contents(&store), before);
    assert!(
        store
            .records()
            .authenticate_client(&client.api_key, Some(&client.api_secret))
            .unwrap()
            .is_some()
    );
    assert!(store.check_consistency().unwrap().is_empty());
    drop(store);
    std::fs::write(dir.join(KEY_FILE), &old_key).unwrap();
    let err = Store::open(
        &dir,
        &KeySources::default(),
        &store_config(Quantization::I8),
        EMBEDDING_DIM,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("wrong key"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_rotation_stopped_midway_is_finished_at_the_next_start() {
    let dir = common::tempdir("rotate-crash");
    let (store, _) = open(&dir, Quantization::I8);
    for i in 0..10 {
        let p = format!("user-{i}");
        store
            .enroll("door", &p, &template_for(&p), 0.9, true)
            .unwrap();
    }
    store.save_snapshot().unwrap();
    let before = contents(&store);
    // What `rotate_keys` does up to a crash: the new master key is in the pending file and the
    // data keys are wrapped under it, but the key file is the old one and nothing is re-sealed.
    let next = SecretKey::generate().unwrap();
    let pending = keys::pending_key_file(&dir.join(KEY_FILE));
    keys::write_new_key_file(&pending, &next).unwrap();
    store.records().begin_rotation(&next).unwrap();
    store
        .enroll("door", "late", &template_for("late"), 0.9, true)
        .unwrap();
    drop(store);

    let (store, _) = open(&dir, Quantization::I8);
    assert!(!pending.exists(), "the pending key replaced the key file");
    assert!(!store.records().rotating(), "the re-sealing was finished");
    let mut expected = before.clone();
    expected.0.push("late".into());
    expected.1 += 1;
    assert_eq!(contents(&store), expected);
    drop(store);
    let on_disk = std::fs::read_to_string(dir.join(KEY_FILE)).unwrap();
    assert_eq!(on_disk.trim(), hex::encode(next.as_bytes()));

    // A crash before anything was wrapped under the pending key: that key is discarded.
    keys::write_new_key_file(&pending, &SecretKey::generate().unwrap()).unwrap();
    let (store, _) = open(&dir, Quantization::I8);
    assert!(!pending.exists());
    assert_eq!(contents(&store), expected);
    drop(store);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn rotation_with_an_environment_master_key_keeps_it() {
    let dir = common::tempdir("rotate-env");
    let env_key = hex::encode([7u8; 32]);
    let sources = KeySources {
        credentials_directory: None,
        master_key_env: Some(env_key.clone()),
    };
    let (store, _) = Store::open(
        &dir,
        &sources,
        &store_config(Quantization::I8),
        EMBEDDING_DIM,
    )
    .unwrap();
    store
        .enroll("door", "alice", &template_for("alice"), 0.9, true)
        .unwrap();
    let report = store.rotate_keys(&sources, None).unwrap();
    assert!(report.master.is_none());
    drop(store);
    assert!(!dir.join(KEY_FILE).exists(), "no key file appears");
    let (store, _) = Store::open(
        &dir,
        &sources,
        &store_config(Quantization::I8),
        EMBEDDING_DIM,
    )
    .unwrap();
    assert!(
        store
            .verify("door", "alice", &template_for("alice"))
            .unwrap()
            .is_some()
    );
    drop(store);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn enroll_identify_verify_delete_across_restarts() {
    let t = orl_templates(3);
    let dir = common::tempdir("roundtrip");
    let (store, report) = open(&dir, Quantization::F16);
    assert!(matches!(report.index, IndexOrigin::Rebuilt { .. }));
    let a = store.enroll("door", "alice", &t[0], 0.9, true).unwrap();
    store.enroll("door", "bob", &t[1], 0.8, true).unwrap();
    store.enroll("kiosk", "carol", &t[2], 0.8, true).unwrap();
    let (best, _) = store.identify("door", &t[0], 5, 0.5).unwrap();
    assert_eq!(best.unwrap().user_id, "alice");
    // Client isolation: carol is not visible to "door", alice not to "kiosk".
    let (best, hits) = store.identify("door", &t[2], 5, 0.5).unwrap();
    assert!(best.is_none() && hits.iter().all(|h| h.user_id != "carol"));
    assert!(store.verify("kiosk", "alice", &t[0]).unwrap().is_none());
    store.save_snapshot().unwrap();
    drop(store);

    let (store, report) = open(&dir, Quantization::F16);
    assert_eq!(report.index, IndexOrigin::Snapshot);
    assert_eq!(report.enrollments, 3);
    let m = store.verify("door", "alice", &t[0]).unwrap().unwrap();
    assert!((m.similarity - 1.0).abs() < 1e-4);
    // Re-enrolling replaces: same id, a newer version (a hybrid logical clock), one entry in
    // the index.
    let a2 = store.enroll("door", "alice", &t[0], 0.95, true).unwrap();
    assert_eq!(a2.id, a.id);
    assert!(a2.version > a.version, "{} > {}", a2.version, a.version);
    assert_eq!(store.index_len(), 3);
    // Delete: gone from records and index, and the feed says so.
    assert!(
        store.delete("kiosk", &a.id).unwrap().is_none(),
        "another client cannot delete it"
    );
    store.delete("door", &a.id).unwrap().unwrap();
    assert!(store.get(&a.id).unwrap().is_none());
    let (best, hits) = store.identify("door", &t[0], 5, 0.5).unwrap();
    assert!(best.is_none() && hits.iter().all(|h| h.user_id != "alice"));
    let feed = store.records().feed_after(0, 100).unwrap();
    assert_eq!(feed.len(), 5, "4 upserts and 1 deletion");
    assert!(
        feed.windows(2).all(|w| w[0].0 < w[1].0),
        "monotonic sequence"
    );
    assert!(
        matches!(&feed[4].1, facegate_daemon::store::records::Change::EnrollmentRevoked { user_id, version, .. } if user_id == "alice" && *version > a2.version)
    );
    assert!(store.check_consistency().unwrap().is_empty());
    // A consumer (sync) reads from its cursor and acknowledges; the cursor never moves back.
    let r = store.records();
    assert_eq!(r.cursor("sync").unwrap(), 0);
    assert_eq!(r.ack("sync", feed[2].0).unwrap(), feed[2].0);
    assert_eq!(
        r.ack("sync", feed[0].0).unwrap(),
        feed[2].0,
        "a late ack does not rewind"
    );
    assert_eq!(
        r.feed_after(r.cursor("sync").unwrap(), 100).unwrap().len(),
        2
    );
    assert_eq!(
        r.cursor("audit-export").unwrap(),
        0,
        "cursors are per consumer"
    );
    drop(store);
    // Not saved after the last changes: the snapshot is stale and is rebuilt.
    let (store, report) = open(&dir, Quantization::F16);
    assert!(
        matches!(&report.index, IndexOrigin::Rebuilt { reason } if reason.contains("epoch")),
        "{report:?}"
    );
    assert_eq!(store.index_len(), 2);
    assert_eq!(
        store.records().cursor("sync").unwrap(),
        feed[2].0,
        "the cursor survives a restart"
    );
    drop(store);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn tampered_snapshot_is_rebuilt_and_tampered_template_is_refused() {
    let t = orl_templates(2);
    let dir = common::tempdir("tamper");
    let (store, _) = open(&dir, Quantization::I8);
    let alice = store.enroll("door", "alice", &t[0], 0.9, true).unwrap();
    store.enroll("door", "bob", &t[1], 0.9, true).unwrap();
    store.save_snapshot().unwrap();
    drop(store);

    // A flipped byte in the index snapshot: detected, rebuilt from the records.
    let snap = dir.join(SNAPSHOT_FILE);
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x04;
    std::fs::write(&snap, &bytes).unwrap();
    let (store, report) = open(&dir, Quantization::I8);
    assert!(
        matches!(&report.index, IndexOrigin::Rebuilt { reason } if reason.contains("authentication")),
        "{report:?}"
    );
    assert!(store.check_consistency().unwrap().is_empty());
    store.save_snapshot().unwrap();
    drop(store);

    // A flipped byte in alice's sealed record, behind the store's back.
    {
        let db = sled::open(dir.join("records")).unwrap();
        let tree = db.open_tree("enrollments").unwrap();
        let mut v = tree.get(alice.id.as_bytes()).unwrap().unwrap().to_vec();
        v[40] ^= 0x01;
        tree.insert(alice.id.as_bytes(), v).unwrap();
        db.flush().unwrap();
    }
    let (store, report) = open(&dir, Quantization::I8);
    assert_eq!(
        report.index,
        IndexOrigin::Snapshot,
        "the snapshot itself is intact"
    );
    let err = store
        .identify("door", &t[0], 5, 0.5)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot be opened") && err.contains(&alice.id),
        "{err}"
    );
    assert!(
        store.verify("door", "alice", &t[0]).is_err(),
        "1:1 refuses it too"
    );
    assert_eq!(
        store
            .identify("door", &t[1], 5, 0.5)
            .unwrap()
            .0
            .unwrap()
            .user_id,
        "bob"
    );
    drop(store);
    std::fs::remove_file(&snap).unwrap();
    let (store, report) = open(&dir, Quantization::I8);
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert_eq!(store.index_len(), 1, "the altered record is not indexed");
    drop(store);

    // A wrong master key is a clear error and changes nothing.
    let key_file = dir.join("master.key");
    let original = std::fs::read(&key_file).unwrap();
    std::fs::write(&key_file, format!("{}\n", "ab".repeat(32))).unwrap();
    let err = Store::open(
        &dir,
        &KeySources::default(),
        &StoreConfig {
            quantization: Quantization::I8,
            search_expansion: 128,
            cache_mib: 32,
        },
        EMBEDDING_DIM,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("wrong key"), "{err}");
    std::fs::write(&key_file, original).unwrap();
    let (store, _) = open(&dir, Quantization::I8);
    assert_eq!(store.records().len(), 2);
    drop(store);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A deterministic unit template per user id, so the parent can recompute what the child stored.
fn template_for(user: &str) -> Vec<f32> {
    let mut x = user.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut v: Vec<f32> = (0..EMBEDDING_DIM)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= n);
    v
}

/// Child side of the crash test: enrolls until killed, printing each acknowledged user.
#[test]
#[ignore = "run by sigkill_during_enrollment_loses_no_acknowledged_enrollment"]
fn crash_child() {
    use std::io::Write;
    let (Ok(dir), Ok(start)) = (
        std::env::var("FACEGATE_CRASH_DIR"),
        std::env::var("FACEGATE_CRASH_START"),
    ) else {
        return;
    };
    let (store, _) = open(Path::new(&dir), Quantization::F16);
    let mut out = std::io::stdout().lock();
    for i in 0.. {
        let user = format!("u{start}-{i}");
        store
            .enroll("door", &user, &template_for(&user), 0.9, true)
            .unwrap();
        writeln!(out, "ACK {user}").unwrap();
        out.flush().unwrap();
    }
}

/// sled 0.34 picks an unfinished `snap.*.generating` file (a SIGKILL while it wrote a snapshot)
/// as its snapshot and refuses to open (`Corruption { at: None }`): the crash test below hit
/// it in CI (an empty file beside the last finished snapshot). The store removes such a file
/// and opens with every enrollment.
#[test]
fn an_unfinished_sled_snapshot_does_not_stop_the_store() {
    let dir = common::tempdir("unfinished-snapshot");
    let users: Vec<String> = (0..20).map(|i| format!("snap-{i}")).collect();
    {
        let (store, _) = open(&dir, Quantization::F16);
        for u in &users {
            store
                .enroll("door", u, &template_for(u), 0.9, true)
                .unwrap();
        }
    }
    let records = dir.join("records");
    assert!(records.join("db").exists(), "the sled directory moved");
    // What a kill leaves: an empty file, and one cut in the middle (both sort after any
    // finished snapshot, as a newer one does).
    let empty = records.join("snap.7FFFFFFFFFFFFFF0.generating");
    let cut = records.join("snap.7FFFFFFFFFFFFFFF.generating");
    std::fs::write(&empty, b"").unwrap();
    std::fs::write(&cut, [0x5au8; 4096]).unwrap();

    let (store, _) = open(&dir, Quantization::F16);
    for u in &users {
        let m = store.verify("door", u, &template_for(u)).unwrap();
        assert!(m.is_some_and(|m| m.similarity > 0.999), "{u} lost");
    }
    assert!(store.check_consistency().unwrap().is_empty());
    assert!(
        !empty.exists() && !cut.exists(),
        "the unfinished snapshots are gone"
    );
    drop(store);
    // A finished snapshot that is corrupt is still refused: that is not a crash's leftover.
    let mut finished: Vec<PathBuf> = std::fs::read_dir(&records)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("snap.")
        })
        .collect();
    finished.sort();
    {
        let last = finished.last().expect("sled wrote a snapshot at close");
        let mut bytes = std::fs::read(last).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        std::fs::write(last, bytes).unwrap();
        let opened = Store::open(
            &dir,
            &KeySources::default(),
            &store_config(Quantization::F16),
            EMBEDDING_DIM,
        );
        let Err(err) = opened else {
            panic!("a corrupt finished snapshot opens")
        };
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sigkill_during_enrollment_loses_no_acknowledged_enrollment() {
    let dir = common::tempdir("crash");
    let mut acknowledged: Vec<String> = Vec::new();
    let mut rng = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // 50 in the suite; more as a bench: FACEGATE_CRASH_CYCLES=500 cargo test --release ...
    let cycles: usize = std::env::var("FACEGATE_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    for cycle in 0..cycles {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FACEGATE_CRASH_DIR", &dir)
            .env("FACEGATE_CRASH_START", cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Let it acknowledge 0..4 enrollments, then kill it at a random moment.
        let wanted = next() % 5;
        let mut seen = 0;
        while seen < wanted {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("ACK ") => {
                    acknowledged.push(l[4..].to_owned());
                    seen += 1;
                }
                Some(Ok(_)) => {}
                _ => panic!("child died before acknowledging {wanted}"),
            }
        }
        std::thread::sleep(std::time::Duration::from_micros(next() % 20_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Whatever it printed before dying was acknowledged too.
        for l in lines.map_while(Result::ok) {
            if let Some(u) = l.strip_prefix("ACK ") {
                acknowledged.push(u.to_owned());
            }
        }

        let (store, _) = open(&dir, Quantization::F16);
        for user in &acknowledged {
            let t = template_for(user);
            let m = store
                .verify("door", user, &t)
                .unwrap()
                .unwrap_or_else(|| panic!("cycle {cycle}: {user} lost"));
            assert!(m.similarity > 0.999);
            let (best, _) = store.identify("door", &t, 1, 0.9).unwrap();
            assert_eq!(
                best.map(|b| b.user_id).as_deref(),
                Some(user.as_str()),
                "cycle {cycle}: {user} not searchable"
            );
        }
        let problems = store.check_consistency().unwrap();
        assert!(problems.is_empty(), "cycle {cycle}: {problems:?}");
    }
    eprintln!(
        "{cycles} SIGKILL cycles, {} acknowledged enrollments, none lost",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() >= cycles,
        "the children enrolled too little to mean anything"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn clients_authenticate_by_argon2id_and_secrets_never_reach_disk() {
    let dir = common::tempdir("clients");
    let (store, _) = open(&dir, Quantization::I8);
    let door = store
        .records()
        .add_client("front-door", Default::default())
        .unwrap();
    let kiosk = store
        .records()
        .add_client("kiosk", Default::default())
        .unwrap();
    assert_ne!(door.api_key, kiosk.api_key);
    let err = store
        .records()
        .add_client("front-door", Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
    assert!(
        store
            .records()
            .add_client("bad name!", Default::default())
            .is_err()
    );
    let r = store.records();
    let ok = r
        .authenticate_client(&door.api_key, Some(&door.api_secret))
        .unwrap()
        .unwrap();
    assert_eq!(ok.client_id, door.client.client_id);
    assert!(
        r.authenticate_client(&door.api_key, Some(&kiosk.api_secret))
            .unwrap()
            .is_none()
    );
    assert!(
        r.authenticate_client(&kiosk.api_key, Some(&door.api_secret))
            .unwrap()
            .is_none()
    );
    assert!(
        r.authenticate_client("fgk_unknown", Some(&door.api_secret))
            .unwrap()
            .is_none()
    );
    assert_eq!(
        r.authenticate_client(&kiosk.api_key, None)
            .unwrap()
            .unwrap()
            .name,
        "kiosk"
    );
    // Operators: Argon2id password, email sealed; too short a password or no domain refused.
    let r = store.records();
    let op = r
        .set_operator("Admin@Example.org", "Site admin", "correct horse battery")
        .unwrap();
    assert!(r.set_operator("admin@example.org", "", "short").is_err());
    assert!(
        r.set_operator("no-domain", "", "correct horse battery")
            .is_err()
    );
    let found = r
        .authenticate_operator(" admin@example.ORG", "correct horse battery")
        .unwrap()
        .unwrap();
    assert_eq!(found.operator_id, op.operator_id);
    assert!(
        r.authenticate_operator("admin@example.org", "wrong horse battery")
            .unwrap()
            .is_none()
    );
    assert!(
        r.authenticate_operator("nobody@example.org", "correct horse battery")
            .unwrap()
            .is_none()
    );
    // Setting it again keeps the id and replaces the password.
    let again = r
        .set_operator("admin@example.org", "Site admin", "another long password")
        .unwrap();
    assert_eq!(again.operator_id, op.operator_id);
    assert!(
        r.authenticate_operator("admin@example.org", "correct horse battery")
            .unwrap()
            .is_none()
    );
    let secrets = [
        door.api_secret.to_string(),
        door.api_key.clone(),
        kiosk.api_secret.to_string(),
        "another long password".to_owned(),
        "admin@example.org".to_owned(),
    ];
    let digest = |s: &str| {
        use sha2::Digest as _;
        sha2::Sha256::digest(s.as_bytes()).to_vec()
    };
    let payload_keys = [digest(&door.api_secret), digest(&door.api_key)];
    drop(store);
    // Restart: still authenticates; neither key nor secret is anywhere on disk.
    let (store, _) = open(&dir, Quantization::I8);
    assert!(
        store
            .records()
            .authenticate_client(&door.api_key, Some(&door.api_secret))
            .unwrap()
            .is_some()
    );
    drop(store);
    let mut needles: Vec<(String, Vec<u8>)> = secrets
        .iter()
        .map(|s| ("a client credential".to_owned(), s.as_bytes().to_vec()))
        .collect();
    needles.push(("a client name".to_owned(), b"front-door".to_vec()));
    for k in payload_keys {
        needles.push(("a payload key".to_owned(), k));
    }
    assert_nowhere_on_disk(&dir, &needles);
    std::fs::remove_dir_all(dir).unwrap();
}

fn unit(seed: u32) -> Vec<f32> {
    let v: Vec<f32> = (0..EMBEDDING_DIM)
        .map(|i| {
            (((i as u32).wrapping_mul(2654435761) ^ seed.wrapping_mul(40503)) % 1000) as f32 - 500.0
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn record_of(e: &facegate_daemon::store::records::Enrollment) -> facegate_proto::EnrollmentRecord {
    facegate_proto::EnrollmentRecord {
        enrollment_id: e.id.clone(),
        client: e.client.clone(),
        user_id: e.user_id.clone(),
        template: e.template.clone(),
        quality: e.quality,
        liveness_verified: e.liveness_verified,
        created_ms: e.created_ms,
        version: e.version,
    }
}

/// The site's conflict rule on real stores: changes from other terminals apply once, in any
/// order, and every store ends with the same enrollment; a deletion wins over every older
/// upsert (a replay or a late upsert cannot bring the person back), and a re-enrollment after
/// it wins again; a client created on one terminal logs in on another with the same key and
/// secret, and a different client cannot take its name.
#[test]
fn site_changes_converge_in_any_order_and_erasure_wins() {
    use facegate_daemon::store::sync::Applied;
    let root = std::env::temp_dir().join(format!("facegate-store-sync-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (a, _) = open(&root.join("a"), Quantization::I8);
    let (b, _) = open(&root.join("b"), Quantization::I8);
    let (c, _) = open(&root.join("c"), Quantization::I8);

    // Concurrent enrollments of the same person on A and B.
    let ea = a.enroll("acme", "alice", &unit(1), 0.9, true).unwrap();
    let eb = b.enroll("acme", "alice", &unit(2), 0.9, true).unwrap();
    assert_ne!(ea.id, eb.id);
    let (ra, rb) = (record_of(&ea), record_of(&eb));
    let winner = if facegate_proto::newer(
        (ra.version, &ra.enrollment_id),
        (rb.version, &rb.enrollment_id),
    ) {
        ea.id.clone()
    } else {
        eb.id.clone()
    };
    let _ = a.apply_enrollment(&rb).unwrap();
    let _ = b.apply_enrollment(&ra).unwrap();
    // C gets them in the other order; every record applies at most once.
    let _ = c.apply_enrollment(&rb).unwrap();
    let _ = c.apply_enrollment(&ra).unwrap();
    assert_eq!(c.apply_enrollment(&ra).unwrap(), Applied::Stale);
    for s in [&a, &b, &c] {
        let list = s.list(Some("acme")).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id, winner);
        assert_eq!(s.index_len(), 1, "the loser left the index too");
        assert!(s.verify("acme", "alice", &unit(1)).unwrap().is_some());
    }

    // An operator deletes her on A: the deletion reaches B; a replay of any older upsert, or
    // one arriving late at a store that saw the deletion first, changes nothing.
    let gone = a.delete("acme", &winner).unwrap().unwrap();
    let feed = a.records().feed_after(0, 1000).unwrap();
    let Some((_, Change::EnrollmentRevoked { version, .. })) = feed.last().cloned() else {
        panic!("the deletion is the last feed entry: {:?}", feed.last());
    };
    assert!(version > gone.version);
    let del = facegate_proto::DeletionRecord {
        enrollment_id: winner.clone(),
        client: "acme".into(),
        user_id: "alice".into(),
        version,
    };
    assert_eq!(b.apply_deletion(&del).unwrap(), Applied::Changed);
    assert_eq!(b.apply_deletion(&del).unwrap(), Applied::Stale);
    for r in [&ra, &rb] {
        assert_eq!(b.apply_enrollment(r).unwrap(), Applied::Stale);
        assert_eq!(a.apply_enrollment(r).unwrap(), Applied::Stale);
    }
    let (d, _) = open(&root.join("d"), Quantization::I8);
    assert_eq!(
        d.apply_deletion(&del).unwrap(),
        Applied::Changed,
        "a tombstone alone"
    );
    assert_eq!(d.apply_enrollment(&ra).unwrap(), Applied::Stale);
    for s in [&a, &b, &d] {
        assert!(s.list(Some("acme")).unwrap().is_empty());
        assert_eq!(s.index_len(), 0);
    }
    // She enrolls again on B after the deletion: a newer version, it wins everywhere.
    let again = b.enroll("acme", "alice", &unit(3), 0.9, true).unwrap();
    assert!(again.version > version);
    assert_eq!(
        a.apply_enrollment(&record_of(&again)).unwrap(),
        Applied::Changed
    );
    assert_eq!(a.list(Some("acme")).unwrap()[0].id, again.id);
    // Records that can never apply are refused for good (the agent drops them), not errors
    // that would have them delivered again and again.
    let mut thief = record_of(&again);
    thief.user_id = "mallory".into();
    thief.version += 1;
    assert!(matches!(
        a.apply_enrollment(&thief).unwrap(),
        Applied::Conflict(_)
    ));
    let mut short = record_of(&again);
    short.enrollment_id = "short".into();
    short.user_id = "bob".into();
    short.template.truncate(10);
    assert!(matches!(
        a.apply_enrollment(&short).unwrap(),
        Applied::Conflict(_)
    ));
    let mut nan = short.clone();
    nan.template = vec![f32::NAN; EMBEDDING_DIM];
    assert!(matches!(
        a.apply_enrollment(&nan).unwrap(),
        Applied::Conflict(_)
    ));
    assert_eq!(a.list(Some("acme")).unwrap().len(), 1);

    // A client made on A works on B with the same key and secret.
    let made = a
        .records()
        .add_client(
            "kiosk",
            facegate_daemon::store::clients::PayloadAlgorithm::Aes256Gcm,
        )
        .unwrap();
    let feed = a.records().feed_after(0, 1000).unwrap();
    let Some((_, Change::ClientCreated { client_id, api_key })) = feed
        .iter()
        .rev()
        .find(|(_, ch)| matches!(ch, Change::ClientCreated { .. }))
        .cloned()
    else {
        panic!("no ClientCreated in A's feed");
    };
    assert_eq!(api_key, made.api_key);
    let rec = a
        .records()
        .export_client(&client_id, &api_key)
        .unwrap()
        .unwrap();
    assert_eq!(b.records().apply_client(&rec).unwrap(), Applied::Changed);
    assert_eq!(b.records().apply_client(&rec).unwrap(), Applied::Stale);
    let on_b = b
        .records()
        .authenticate_client(&made.api_key, Some(made.api_secret.as_str()))
        .unwrap()
        .expect("A's client logs in on B");
    assert_eq!(
        (on_b.client_id.as_str(), on_b.name.as_str()),
        (client_id.as_str(), "kiosk")
    );
    assert!(
        b.records()
            .authenticate_client(&made.api_key, Some("fgs_wrong"))
            .unwrap()
            .is_none()
    );
    let mut impostor = rec.clone();
    impostor.client_id = "another-id".into();
    assert!(
        b.records().apply_client(&impostor).is_err(),
        "a name names one client"
    );
    let mut forged = rec;
    forged.client_id = "third-id".into();
    forged.name = "other".into();
    forged.key_digest = "00".repeat(32);
    assert!(
        b.records().apply_client(&forged).is_err(),
        "key digest must match the key"
    );
    drop((a, b, c, d));
    let _ = std::fs::remove_dir_all(&root);
}
