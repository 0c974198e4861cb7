//! Reference images the server forgot: uploaded again, once, for the whole fleet.
//!
//! `batch submit` uploads each local reference once and the rows name the upload's
//! imageUUID; it also keeps the reference itself in `runware_fleet_references`
//! (one row per upload, not per task). When the server answers a task with
//! `invalidReferenceImage` (its uploads expired), the worker that sees it uploads
//! the kept reference again, records the new imageUUID with a compare-and-set (the
//! first worker wins; the others use its upload), and the task goes on under a new
//! attempt: a failure the server reported, so a new taskUUID is safe. Every worker
//! sends tasks with the references' current imageUUIDs, learnt at start, on each
//! such failure, and before the attempt that follows one.

use super::FleetError;
use super::db::{Db, stmt};
use super::queue::references_sql as sql;
use runware_ws::client::{Client, ReferenceCache};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use uuid::Uuid;

/// What `batch submit` keeps of one upload.
pub struct Kept {
    /// The imageUUID the rows name.
    pub image_uuid: Uuid,
    /// The reference as the line gave it (a data URI or base64).
    pub data: String,
}

/// Keeps the references `batch submit` uploaded (idempotently).
pub async fn keep(c: &tokio_postgres::Client, batch: Uuid, kept: &[Kept]) -> Result<(), FleetError> {
    let uuids: Vec<Uuid> = kept.iter().map(|k| k.image_uuid).collect();
    let data: Vec<&str> = kept.iter().map(|k| k.data.as_str()).collect();
    c.execute(sql::KEEP, &[&batch, &uuids, &data]).await.map_err(stmt("keep the uploaded references"))?;
    Ok(())
}

/// A worker's view of the references that were uploaded again.
pub struct Renewed {
    /// A reference's imageUUID as submitted (what the rows name) → its live one.
    current: Mutex<HashMap<Uuid, Uuid>>,
    uploads: ReferenceCache,
}

impl Renewed {
    /// Learns every renewal made so far.
    pub async fn load(db: &Db, client: Client) -> Result<Renewed, FleetError> {
        let rows =
            db.client().await?.query(sql::LOAD_RENEWED, &[]).await.map_err(stmt("read the renewed references"))?;
        let current = rows.into_iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(Renewed { current: Mutex::new(current), uploads: ReferenceCache::new(client) })
    }

    /// `request` (as its row holds it) with each reference as it is now; returns
    /// what was sent for each imageUUID the row names (for [`Renewed::renew`]).
    pub fn apply(&self, request: &mut Value) -> HashMap<Uuid, Uuid> {
        rewrite(&lock(&self.current), request)
    }

    /// Learns the live uploads of `request`'s kept references (for an attempt that
    /// follows a forgotten reference another worker may have renewed).
    pub async fn learn(&self, db: &Db, batch: Uuid, request: &Value) -> Result<(), FleetError> {
        let originals: Vec<Uuid> = references(request).filter_map(as_uuid).collect();
        if originals.is_empty() {
            return Ok(());
        }
        let rows = db
            .client()
            .await?
            .query(sql::LEARN, &[&batch, &originals])
            .await
            .map_err(stmt("read the renewed references"))?;
        let mut current = lock(&self.current);
        for row in rows {
            current.insert(row.get(0), row.get(1));
        }
        Ok(())
    }

    /// After `invalidReferenceImage` for an attempt that sent `sent` (from
    /// [`Renewed::apply`]): makes sure each of its kept references has a live
    /// upload. True when one was renewed (now, or by another worker since the
    /// attempt was sent), so a new attempt can succeed; false when none of its
    /// references was kept.
    pub async fn renew(&self, db: &Db, batch: Uuid, sent: &HashMap<Uuid, Uuid>) -> Result<bool, FleetError> {
        let originals: Vec<Uuid> = sent.keys().copied().collect();
        if originals.is_empty() {
            return Ok(false);
        }
        let c = db.client().await?;
        let rows = c.query(sql::READ_KEPT, &[&batch, &originals]).await.map_err(stmt("read the kept references"))?;
        let mut renewed = false;
        for row in rows {
            let (original, current, data): (Uuid, Uuid, String) = (row.get(0), row.get(1), row.get(2));
            let sent = sent.get(&original).copied().unwrap_or(original);
            let now = if sent != current {
                // Another worker renewed it since.
                current
            } else {
                // Dead as sent: upload it again (once per worker: the cache waits for
                // an upload in progress), then offer it to the fleet.
                self.uploads.forget(current);
                // The submitted imageUUID names the reference: no need to hash it.
                let key = original;
                let (fresh, _) =
                    self.uploads.upload_keyed(key, &data).await.map_err(|e| FleetError::Reupload(e.to_string()))?;
                if fresh == current {
                    // This worker's cache still held the dead upload (a race with forget).
                    continue;
                }
                let won = c
                    .query_opt(sql::RECORD_RENEWAL, &[&batch, &original, &current, &fresh])
                    .await
                    .map_err(stmt("record a renewed reference"))?;
                if won.is_some() {
                    tracing::info!(%original, %fresh, "reference image uploaded again (the server had forgotten it)");
                    fresh
                } else {
                    c.query_one(sql::READ_CURRENT, &[&batch, &original])
                        .await
                        .map_err(stmt("read a renewed reference"))?
                        .get(0)
                }
            };
            lock(&self.current).insert(original, now);
            renewed = true;
        }
        Ok(renewed)
    }
}

/// Each reference of `request` named in `map` replaced by what it maps to; returns
/// what each imageUUID reference became.
fn rewrite(map: &HashMap<Uuid, Uuid>, request: &mut Value) -> HashMap<Uuid, Uuid> {
    let mut sent = HashMap::new();
    for r in references_mut(request) {
        if let Some(original) = as_uuid(r) {
            let now = map.get(&original).copied().unwrap_or(original);
            if now != original {
                *r = Value::String(now.to_string());
            }
            sent.insert(original, now);
        }
    }
    sent
}

fn as_uuid(v: &Value) -> Option<Uuid> {
    v.as_str().and_then(|s| Uuid::parse_str(s).ok())
}

/// The `inputs.referenceImages` entries of a request.
fn references(request: &Value) -> impl Iterator<Item = &Value> {
    request.pointer("/inputs/referenceImages").and_then(Value::as_array).into_iter().flatten()
}

fn references_mut(request: &mut Value) -> impl Iterator<Item = &mut Value> {
    request.pointer_mut("/inputs/referenceImages").and_then(Value::as_array_mut).into_iter().flatten()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn apply_replaces_only_renewed_uuids_and_says_what_it_sent() {
        let (old, new, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let map = HashMap::from([(old, new)]);
        let mut req = json!({"inputs": {"referenceImages": [old.to_string(), other.to_string(), "https://x/y.png"]}});
        let sent = rewrite(&map, &mut req);
        assert_eq!(req["inputs"]["referenceImages"], json!([new.to_string(), other.to_string(), "https://x/y.png"]));
        assert_eq!(sent, HashMap::from([(old, new), (other, other)]));
        let mut none = json!({"positivePrompt": "no inputs"});
        assert!(rewrite(&map, &mut none).is_empty());
        assert_eq!(none, json!({"positivePrompt": "no inputs"}));
    }
}
