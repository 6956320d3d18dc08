//! The model manifest (`models/manifest.toml`), sha256 verification and tract loading.
//!
//! Invariant: no model bytes reach tract before their sha256 matched the manifest; each
//! model is parsed once and shared (`Arc`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

pub const MANIFEST_FILE: &str = "manifest.toml";

/// An optimized, runnable tract plan.
pub type Plan = Arc<TypedRunnableModel>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Int8,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "int8" => Ok(Precision::Int8),
            other => Err(format!("unknown precision `{other}` (fp32 or int8)")),
        }
    }
}

/// What a model is for; the pipeline asks for a role at a precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Centerface,
    Blazeface,
    Embedder,
    /// Eye contour + iris landmarks (blink, eyes hidden).
    Eyes,
    /// Mask / no-mask face classifier.
    Mask,
    /// Palm detector (hand over the face).
    Palm,
    /// 468-point face mesh (mouth movement, rigid-plane test).
    Mesh,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub name: String,
    pub file: String,
    pub sha256: String,
    pub role: Role,
    pub precision: Precision,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    model: Vec<ModelEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("no model manifest found (looked for {MANIFEST_FILE} in: {searched})")]
    NoManifest { searched: String },
    #[error("model manifest {path} is invalid: {message}")]
    BadManifest { path: PathBuf, message: String },
    #[error("model `{name}` is missing: cannot read {path}: {source}")]
    Missing {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "model `{name}` at {path} does not match the manifest: sha256 is {actual}, expected {expected} (file altered or corrupt)"
    )]
    HashMismatch {
        name: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("the manifest has no {role:?} model at precision {precision}", precision = precision.as_str())]
    NoModel { role: Role, precision: Precision },
    #[error("model `{name}` failed to load in tract: {message}")]
    Load { name: String, message: String },
}

/// A verified directory of models.
#[derive(Debug, Clone)]
pub struct ModelStore {
    dir: PathBuf,
    entries: Vec<ModelEntry>,
}

impl ModelStore {
    /// Opens the first directory among `candidates` that holds a manifest, and verifies the
    /// sha256 of every model it lists.
    pub fn open_first(candidates: &[PathBuf]) -> Result<ModelStore, ModelError> {
        let dir = candidates
            .iter()
            .find(|d| d.join(MANIFEST_FILE).is_file())
            .ok_or_else(|| ModelError::NoManifest {
                searched: candidates
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let store = Self::open(dir)?;
        store.verify_all()?;
        Ok(store)
    }

    /// Reads the manifest of `dir` (no hashing yet).
    pub fn open(dir: &Path) -> Result<ModelStore, ModelError> {
        let path = dir.join(MANIFEST_FILE);
        let bad = |message: String| ModelError::BadManifest {
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        let manifest: Manifest = toml::from_str(&text).map_err(|e| bad(e.message().to_owned()))?;
        for entry in &manifest.model {
            if entry.sha256.len() != 64 || !entry.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!(
                    "model `{}`: sha256 must be 64 hex digits",
                    entry.name
                )));
            }
        }
        Ok(ModelStore {
            dir: dir.to_owned(),
            entries: manifest.model,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn entries(&self) -> &[ModelEntry] {
        &self.entries
    }

    /// Hashes every listed file: a missing or altered model fails here, at startup.
    pub fn verify_all(&self) -> Result<(), ModelError> {
        for entry in &self.entries {
            self.read_verified(entry)?;
        }
        Ok(())
    }

    pub fn entry(&self, role: Role, precision: Precision) -> Result<&ModelEntry, ModelError> {
        self.entries
            .iter()
            .find(|e| e.role == role && e.precision == precision)
            .ok_or(ModelError::NoModel { role, precision })
    }

    /// The model's bytes, after checking them against the manifest's sha256.
    pub fn read_verified(&self, entry: &ModelEntry) -> Result<Vec<u8>, ModelError> {
        let path = self.dir.join(&entry.file);
        let bytes = std::fs::read(&path).map_err(|source| ModelError::Missing {
            name: entry.name.clone(),
            path: path.clone(),
            source,
        })?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(&entry.sha256) {
            return Err(ModelError::HashMismatch {
                name: entry.name.clone(),
                path,
                expected: entry.sha256.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Parses a verified model into tract's inference graph (not yet typed/optimized).
    pub fn parse(&self, entry: &ModelEntry) -> Result<InferenceModel, ModelError> {
        let bytes = self.read_verified(entry)?;
        tract_onnx::onnx()
            .model_for_read(&mut bytes.as_slice())
            .map_err(|e| load_error(entry, e))
    }
}

/// Fixes input 0 to `shape` (f32), optimizes and plans the model.
pub fn plan(model: InferenceModel, name: &str, shape: &[usize]) -> Result<Plan, ModelError> {
    let err = |e: TractError| ModelError::Load {
        name: name.to_owned(),
        message: format!("{e:#}"),
    };
    model
        .with_input_fact(0, f32::fact(shape).into())
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(err)
}

fn load_error(entry: &ModelEntry, e: TractError) -> ModelError {
    ModelError::Load {
        name: entry.name.clone(),
        message: format!("{e:#}"),
    }
}

/// Runs `f` with every model run on the calling thread, whatever `pipeline.threads` set for the
/// process. A stream (a door) runs small models frame after frame, and cameras run side by side:
/// handing each product to tract's pool cost a door 13-41 % more CPU a frame and dropped more
/// frames with two cameras, for frames about as long (ARCHITECTURE.md, "Speed").
pub fn on_this_thread<R>(f: impl FnOnce() -> R) -> R {
    use tract_linalg::multithread::{Executor, multithread_tract_scope};
    multithread_tract_scope(Executor::SingleThread, f)
}

/// Runs a plan on one f32 tensor and returns its outputs.
pub fn run(plan: &Plan, input: Tensor) -> TractResult<TVec<TValue>> {
    plan.run(tvec!(input.into()))
}

/// A plain f32 view of an output tensor.
pub fn as_f32(value: &TValue) -> TractResult<&[f32]> {
    value.try_as_plain_ram()?.as_slice::<f32>()
}

#[cfg(test)]
mod tests {
    use tract_linalg::multithread::{Executor, current_tract_executor, multithread_tract_scope};

    /// A door's thread runs its models on itself even where a pool is what the process (here:
    /// this thread) would otherwise hand them to.
    #[test]
    fn on_this_thread_runs_models_without_the_pool() {
        multithread_tract_scope(Executor::multithread(2), || {
            assert!(matches!(current_tract_executor(), Executor::MultiThread(_)));
            super::on_this_thread(|| {
                assert!(matches!(current_tract_executor(), Executor::SingleThread));
            });
            assert!(matches!(current_tract_executor(), Executor::MultiThread(_)));
        });
    }
}
