//! `facegate enroll`, `identify` and `enrollments list|delete`: the store from the command line,
//! on `--data-dir` with the daemon's key resolution.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;

use crate::config::MatchingConfig;
use crate::pipeline::Pipeline;
use crate::store::Store;
use crate::store::keys::{KeySources, MasterKeySource};
use crate::store::records::{AuditAction, AuditRow, Enrollment};

fn enrollment_json(e: &Enrollment) -> serde_json::Value {
    json!({
        "enrollment_id": e.id,
        "client": e.client,
        "user_id": e.user_id,
        "quality": e.quality,
        "liveness_verified": e.liveness_verified,
        "version": e.version,
        "created_ms": e.created_ms,
        "updated_ms": e.updated_ms,
    })
}

/// Embeds every image, then stores the quality-weighted mean (L2-normalised).
pub fn enroll(
    pipeline: &Pipeline,
    store: &Store,
    client: &str,
    user_id: &str,
    images: &[PathBuf],
    json: bool,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let progress = std::io::stderr().is_terminal();
    let mut sum = vec![0f32; crate::pipeline::embed::EMBEDDING_DIM];
    let (mut used, mut quality_sum) = (0usize, 0f32);
    for (i, path) in images.iter().enumerate() {
        if progress {
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r[{}/{}] {}\x1b[K",
                i + 1,
                images.len(),
                path.display()
            );
            let _ = err.flush();
        }
        let bytes = super::read_image(path)?;
        match pipeline.analyze_largest(&bytes) {
            Ok((_, a)) => {
                let w = a.quality.score.max(0.05);
                for (s, v) in sum.iter_mut().zip(a.embedding.as_slice()) {
                    *s += w * v;
                }
                quality_sum += a.quality.score;
                used += 1;
            }
            Err(e) => tracing::warn!(image = %path.display(), error = %e, "image skipped"),
        }
    }
    if progress {
        let _ = writeln!(std::io::stderr());
    }
    let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
    if used == 0 || norm <= 0.0 {
        audit(
            store,
            AuditAction::Enroll,
            client,
            Some(user_id),
            Err("no_face_detected"),
            None,
            started,
        )?;
        anyhow::bail!(
            "none of the {} image(s) had a usable face; nothing enrolled",
            images.len()
        );
    }
    sum.iter_mut().for_each(|x| *x /= norm);
    let e = store.enroll(client, user_id, &sum, quality_sum / used as f32, false)?;
    audit(
        store,
        AuditAction::Enroll,
        client,
        Some(user_id),
        Ok("offline_import"),
        None,
        started,
    )?;
    store.save_snapshot()?;
    if json {
        let mut v = enrollment_json(&e);
        v["images_used"] = json!(used);
        v["images_skipped"] = json!(images.len() - used);
        return super::print_json(&v);
    }
    println!(
        "enrolled {user_id} (client {client}) as {} from {used} of {} image(s), version {}",
        e.id,
        images.len(),
        e.version
    );
    Ok(())
}

pub fn identify(
    pipeline: &Pipeline,
    store: &Store,
    matching: &MatchingConfig,
    client: &str,
    path: &std::path::Path,
    json: bool,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let bytes = super::read_image(path)?;
    let analysis = pipeline.analyze_largest(&bytes);
    let (_, a) = match analysis {
        Ok(found) => found,
        Err(e) => {
            audit(
                store,
                AuditAction::Authenticate,
                client,
                None,
                Err("no_face_detected"),
                None,
                started,
            )?;
            return Err(e).with_context(|| path.display().to_string());
        }
    };
    let (best, hits) = store.identify(
        client,
        a.embedding.as_slice(),
        matching.top_k,
        matching.threshold,
    )?;
    match &best {
        Some(m) => audit(
            store,
            AuditAction::Authenticate,
            client,
            Some(&m.user_id),
            Ok("match_found"),
            Some(m.similarity),
            started,
        )?,
        None => audit(
            store,
            AuditAction::Authenticate,
            client,
            None,
            Err("no_match_found"),
            hits.first().map(|h| h.similarity),
            started,
        )?,
    }
    if json {
        let m = best.as_ref().map(|m| {
            json!({"user_id": m.user_id, "enrollment_id": m.enrollment_id, "confidence": m.similarity})
        });
        let candidates: Vec<_> = hits
            .iter()
            .map(|h| json!({"user_id": h.user_id, "enrollment_id": h.enrollment_id, "confidence": h.similarity}))
            .collect();
        return super::print_json(&json!({"match": m, "candidates": candidates}));
    }
    match &best {
        Some(m) => println!(
            "match: {} ({}), confidence {:.3}",
            m.user_id, m.enrollment_id, m.similarity
        ),
        None => println!("no match at threshold {:.2}", matching.threshold),
    }
    for h in &hits {
        println!("  candidate {:<24} {:.3}", h.user_id, h.similarity);
    }
    Ok(())
}

pub fn list(store: &Store, client: Option<&str>, json: bool) -> anyhow::Result<()> {
    let all = store.list(client)?;
    if json {
        let rows: Vec<_> = all.iter().map(enrollment_json).collect();
        return super::print_json(&json!({"count": rows.len(), "results": rows}));
    }
    println!(
        "{:<36}  {:<12}  {:<24}  {:>7}  {:>3}",
        "enrollment_id", "client", "user_id", "quality", "ver"
    );
    for e in &all {
        println!(
            "{:<36}  {:<12}  {:<24}  {:>7.3}  {:>3}",
            e.id, e.client, e.user_id, e.quality, e.version
        );
    }
    Ok(())
}

pub fn delete(store: &Store, client: &str, enrollment_id: &str) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    match store.delete(client, enrollment_id)? {
        Some(e) => {
            audit(
                store,
                AuditAction::Delete,
                client,
                Some(&e.user_id),
                Ok("deleted by the command line"),
                None,
                started,
            )?;
            store.save_snapshot()?;
            println!("deleted {} ({}) from records and index", e.id, e.user_id);
            Ok(())
        }
        None => anyhow::bail!("no enrollment {enrollment_id} for client {client}"),
    }
}

pub fn add_client(
    store: &Store,
    name: &str,
    payload: crate::cli::PayloadEncryption,
    json: bool,
) -> anyhow::Result<()> {
    use crate::store::clients::PayloadAlgorithm;
    let algorithm = match payload {
        crate::cli::PayloadEncryption::Aes256Gcm => PayloadAlgorithm::Aes256Gcm,
        crate::cli::PayloadEncryption::Aes256Cbc => PayloadAlgorithm::Aes256Cbc,
    };
    let new = store.records().add_client(name, algorithm)?;
    if json {
        return super::print_json(&json!({
            "client_id": new.client.client_id,
            "name": new.client.name,
            "payload_encryption": algorithm.as_str(),
            "api_key": new.api_key,
            "api_secret": new.api_secret.as_str(),
        }));
    }
    println!("client {} ({})", new.client.name, new.client.client_id);
    println!("api_key    {}", new.api_key);
    println!("api_secret {}", new.api_secret.as_str());
    println!(
        "The secret is stored only as an Argon2id hash: keep it now, it cannot be shown again."
    );
    Ok(())
}

/// `facegate operators set EMAIL`: the password comes from the first line of stdin, so it
/// appears in no process list or shell history.
pub fn set_operator(store: &Store, email: &str, name: &str) -> anyhow::Result<()> {
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']);
    let op = store.records().set_operator(email, name, password)?;
    println!("operator {} ({})", op.email, op.operator_id);
    Ok(())
}

pub fn rotate_keys(
    store: &Store,
    new_master_key_file: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<()> {
    let new_master = new_master_key_file
        .map(crate::store::keys::read_master_key_file)
        .transpose()?;
    let given = new_master.is_some();
    let report = store.rotate_keys(&KeySources::from_env(), new_master)?;
    let resealed: serde_json::Map<String, serde_json::Value> = report
        .resealed
        .resealed
        .iter()
        .map(|(tree, n)| ((*tree).to_owned(), json!(n)))
        .collect();
    let master = match (&report.master, given) {
        (Some(_), true) => "replaced by the given key".to_owned(),
        (Some(path), false) => format!("replaced: new key in {}", path.display()),
        (None, _) => format!("kept ({})", store.key_source()),
    };
    if json {
        return super::print_json(&json!({
            "master_key": master,
            "data_key": "replaced",
            "resealed": resealed,
            "rotate_ms": report.rotate_ms,
        }));
    }
    println!("data key replaced; master key {master}");
    for (tree, n) in &report.resealed.resealed {
        println!("  re-sealed {n:>8} {tree}");
    }
    let external = matches!(
        store.key_source(),
        MasterKeySource::Credential(_) | MasterKeySource::Environment
    );
    if given && external {
        println!(
            "Install the new master key where the daemon reads it (systemd credential or {}) before the next start.",
            crate::store::keys::MASTER_KEY_ENV
        );
    }
    Ok(())
}

/// Writes the audit row of one attempt: `Ok(how)` or `Err(reason)`.
fn audit(
    store: &Store,
    action: AuditAction,
    client: &str,
    user_id: Option<&str>,
    result: Result<&str, &str>,
    confidence: Option<f32>,
    started: std::time::Instant,
) -> anyhow::Result<()> {
    let (success, reason) = match result {
        Ok(r) => (true, r),
        Err(r) => (false, r),
    };
    store.records().audit(&AuditRow {
        at_ms: crate::store::records::now_ms(),
        action,
        client: client.to_owned(),
        user_id: user_id.map(str::to_owned),
        session_id: None,
        success,
        reason: reason.to_owned(),
        confidence,
        processing_ms: started.elapsed().as_secs_f64() * 1000.0,
    })?;
    Ok(())
}

/// A sync token from the running daemon's Unix socket (`POST /api/sync/token`): (token, expiry).
pub fn sync_token_over_socket(sock: &std::path::Path) -> anyhow::Result<(String, u64)> {
    use std::io::Read as _;
    let mut s = std::os::unix::net::UnixStream::connect(sock)
        .with_context(|| format!("connecting to {}", sock.display()))?;
    write!(
        s,
        "POST /api/sync/token HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .context("a malformed answer from the daemon")?;
    if head.split_whitespace().nth(1) != Some("200") {
        anyhow::bail!(
            "the daemon refused: {}",
            head.lines().next().unwrap_or_default()
        );
    }
    let v: serde_json::Value = serde_json::from_str(body).context("the daemon's answer")?;
    Ok((
        v["token"]
            .as_str()
            .context("no token in the answer")?
            .to_owned(),
        v["expires_at"].as_u64().unwrap_or(0),
    ))
}
