//! Per-client usearch indexes (cosine) over enrollment templates.
//!
//! Invariant: the index is derived data, rebuildable from the records at any time; its
//! snapshot on disk is sealed and names the records' enrollment epoch it reflects, and a
//! snapshot that is missing, stale or fails to open is never served: the index is rebuilt.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use super::crypto::{CryptoError, Keyring};
use super::records::Enrollment;

const SNAPSHOT_AAD: &[u8] = b"facegate/index-snapshot/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    F32,
    F16,
    I8,
}

impl Quantization {
    fn scalar(self) -> ScalarKind {
        match self {
            Quantization::F32 => ScalarKind::F32,
            Quantization::F16 => ScalarKind::F16,
            Quantization::I8 => ScalarKind::I8,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("vector index: {0}")]
    Usearch(String),
    #[error("template has {got} dimensions, the index has {want}")]
    Dimensions { got: usize, want: usize },
    #[error("index snapshot cannot be opened: {0}")]
    Sealed(#[from] CryptoError),
    #[error("index snapshot is malformed: {0}")]
    Malformed(String),
    #[error("index snapshot reflects enrollment epoch {snapshot}, the records are at {records}")]
    Stale { snapshot: u64, records: u64 },
}

fn usearch(e: impl std::fmt::Display) -> IndexError {
    IndexError::Usearch(e.to_string())
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub label: u64,
    pub enrollment_id: String,
    pub user_id: String,
    /// Cosine similarity, 1 - cosine distance.
    pub similarity: f32,
}

struct ClientIndex {
    index: Index,
    /// label -> (enrollment id, user id)
    entries: HashMap<u64, (String, String)>,
}

pub struct VectorIndex {
    dim: usize,
    quantization: Quantization,
    /// HNSW search breadth (usearch `expansion_search`): recall against latency.
    expansion_search: usize,
    clients: HashMap<String, ClientIndex>,
}

impl std::fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorIndex")
            .field("dim", &self.dim)
            .field("quantization", &self.quantization)
            .field("clients", &self.clients.len())
            .field("len", &self.len())
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    epoch: u64,
    dim: u64,
    quantization: Quantization,
    clients: Vec<ClientSnapshot>,
}

#[derive(Serialize, Deserialize)]
struct ClientSnapshot {
    client: String,
    entries: Vec<(u64, String, String)>,
    index: Vec<u8>,
}

impl VectorIndex {
    pub fn new(dim: usize, quantization: Quantization, expansion_search: usize) -> VectorIndex {
        VectorIndex {
            dim,
            quantization,
            expansion_search,
            clients: HashMap::new(),
        }
    }

    fn options(&self) -> IndexOptions {
        IndexOptions {
            dimensions: self.dim,
            metric: MetricKind::Cos,
            // Explicit: usearch defaults to BF16.
            quantization: self.quantization.scalar(),
            connectivity: 0,
            expansion_add: 0,
            expansion_search: self.expansion_search,
            multi: false,
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn quantization(&self) -> Quantization {
        self.quantization
    }

    pub fn len(&self) -> usize {
        self.clients.values().map(|c| c.entries.len()).sum()
    }

    /// The tenants that have at least one template, sorted.
    pub fn tenants(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .clients
            .iter()
            .filter(|(_, c)| !c.entries.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        t.sort();
        t
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn insert(&mut self, e: &Enrollment) -> Result<(), IndexError> {
        if e.template.len() != self.dim {
            return Err(IndexError::Dimensions {
                got: e.template.len(),
                want: self.dim,
            });
        }
        if !self.clients.contains_key(&e.client) {
            let index = Index::new(&self.options()).map_err(usearch)?;
            self.clients.insert(
                e.client.clone(),
                ClientIndex {
                    index,
                    entries: HashMap::new(),
                },
            );
        }
        let c = self.clients.get_mut(&e.client).expect("inserted above");
        if c.index.size() + 1 > c.index.capacity() {
            c.index
                .reserve((c.index.capacity() * 2).max(64))
                .map_err(usearch)?;
        }
        c.index.add(e.label, &e.template).map_err(usearch)?;
        c.entries.insert(e.label, (e.id.clone(), e.user_id.clone()));
        Ok(())
    }

    pub fn remove(&mut self, client: &str, label: u64) -> Result<(), IndexError> {
        if let Some(c) = self.clients.get_mut(client)
            && c.entries.remove(&label).is_some()
        {
            c.index.remove(label).map_err(usearch)?;
        }
        Ok(())
    }

    /// The `k` nearest enrollments of `client`, most similar first.
    pub fn search(&self, client: &str, query: &[f32], k: usize) -> Result<Vec<Hit>, IndexError> {
        if query.len() != self.dim {
            return Err(IndexError::Dimensions {
                got: query.len(),
                want: self.dim,
            });
        }
        let Some(c) = self.clients.get(client) else {
            return Ok(Vec::new());
        };
        if c.entries.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let m = c.index.search(query, k).map_err(usearch)?;
        Ok(m.keys
            .iter()
            .zip(&m.distances)
            .filter_map(|(label, d)| {
                c.entries.get(label).map(|(id, user)| Hit {
                    label: *label,
                    enrollment_id: id.clone(),
                    user_id: user.clone(),
                    similarity: 1.0 - d,
                })
            })
            .collect())
    }

    /// Builds the index from the records, one thread per call. Concurrent `add` into one
    /// usearch 2.26 index (reserved for 2 threads) left enrollments unreachable — the crash
    /// test and `a_rebuilt_index_finds_every_enrollment_first` caught it — so each client's
    /// index is reserved once and filled sequentially.
    pub fn rebuild<'a>(
        dim: usize,
        quantization: Quantization,
        expansion_search: usize,
        enrollments: impl Iterator<Item = &'a Enrollment>,
    ) -> Result<VectorIndex, IndexError> {
        let mut index = VectorIndex::new(dim, quantization, expansion_search);
        let mut by_client: HashMap<&str, Vec<&Enrollment>> = HashMap::new();
        for e in enrollments {
            if e.template.len() != dim {
                return Err(IndexError::Dimensions {
                    got: e.template.len(),
                    want: dim,
                });
            }
            by_client.entry(e.client.as_str()).or_default().push(e);
        }
        for (client, all) in by_client {
            let c = Index::new(&index.options()).map_err(usearch)?;
            c.reserve(all.len().max(64)).map_err(usearch)?;
            for e in &all {
                c.add(e.label, &e.template).map_err(usearch)?;
            }
            let entries = all
                .iter()
                .map(|e| (e.label, (e.id.clone(), e.user_id.clone())))
                .collect();
            index
                .clients
                .insert(client.to_owned(), ClientIndex { index: c, entries });
        }
        Ok(index)
    }

    /// The sealed snapshot of every client's index, tagged with the records' epoch.
    pub fn to_sealed_snapshot(&self, epoch: u64, key: &Keyring) -> Result<Vec<u8>, IndexError> {
        let mut clients = Vec::with_capacity(self.clients.len());
        for (name, c) in &self.clients {
            let mut buf = vec![0u8; c.index.serialized_length()];
            c.index.save_to_buffer(&mut buf).map_err(usearch)?;
            let entries = c
                .entries
                .iter()
                .map(|(l, (id, u))| (*l, id.clone(), u.clone()))
                .collect();
            clients.push(ClientSnapshot {
                client: name.clone(),
                entries,
                index: buf,
            });
        }
        let snap = Snapshot {
            epoch,
            dim: self.dim as u64,
            quantization: self.quantization,
            clients,
        };
        let plain = zeroize::Zeroizing::new(
            postcard::to_stdvec(&snap).map_err(|e| IndexError::Malformed(e.to_string()))?,
        );
        Ok(key.seal(SNAPSHOT_AAD, &plain)?)
    }

    /// Restores a snapshot if it opens and reflects `epoch`.
    pub fn from_sealed_snapshot(
        sealed: &[u8],
        key: &Keyring,
        epoch: u64,
        expansion_search: usize,
    ) -> Result<VectorIndex, IndexError> {
        let plain = key.open(SNAPSHOT_AAD, sealed)?;
        let snap: Snapshot =
            postcard::from_bytes(&plain).map_err(|e| IndexError::Malformed(e.to_string()))?;
        if snap.epoch != epoch {
            return Err(IndexError::Stale {
                snapshot: snap.epoch,
                records: epoch,
            });
        }
        let mut out = VectorIndex::new(snap.dim as usize, snap.quantization, expansion_search);
        for c in snap.clients {
            let index = Index::new(&out.options()).map_err(usearch)?;
            index.load_from_buffer(&c.index).map_err(usearch)?;
            // Search breadth is a runtime setting, not part of the serialized graph.
            index.change_expansion_search(expansion_search);
            let entries = c
                .entries
                .into_iter()
                .map(|(l, id, u)| (l, (id, u)))
                .collect();
            out.clients.insert(c.client, ClientIndex { index, entries });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrollment(i: u64) -> Enrollment {
        let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut t: Vec<f32> = (0..192)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        let n = t.iter().map(|a| a * a).sum::<f32>().sqrt();
        t.iter_mut().for_each(|a| *a /= n);
        Enrollment {
            id: format!("e{i}"),
            label: i,
            client: "door".into(),
            user_id: format!("u{i}"),
            template: t,
            quality: 1.0,
            liveness_verified: true,
            created_ms: 0,
            updated_ms: 0,
            version: 1,
        }
    }

    #[test]
    fn a_rebuilt_index_finds_every_enrollment_first() {
        for n in [1u64, 7, 60, 500] {
            for q in [Quantization::F32, Quantization::F16, Quantization::I8] {
                let all: Vec<Enrollment> = (1..=n).map(enrollment).collect();
                let index = VectorIndex::rebuild(192, q, 128, all.iter()).unwrap();
                assert_eq!(index.len(), n as usize);
                let missed: Vec<u64> = all
                    .iter()
                    .filter(|e| {
                        index
                            .search("door", &e.template, 1)
                            .unwrap()
                            .first()
                            .map(|h| h.label)
                            != Some(e.label)
                    })
                    .map(|e| e.label)
                    .collect();
                assert!(missed.is_empty(), "n {n} {q:?}: missed {missed:?}");
            }
        }
    }
}
