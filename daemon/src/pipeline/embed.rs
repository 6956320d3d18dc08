//! MobileFaceNet: aligned 112x112 RGB crop -> 192-d L2-normalised embedding.
//!
//! Invariant: an `Embedding` is always unit length and never printed (its `Debug` shows
//! only its dimension): templates are biometric data.

use image::RgbImage;
use tract_onnx::prelude::*;

use super::PipelineError;
use super::align::ALIGNED_SIDE;
use super::models::{self, ModelError, ModelStore, Plan, Precision, Role};

pub const EMBEDDING_DIM: usize = 192;

#[derive(Clone, PartialEq)]
pub struct Embedding(Vec<f32>);

impl std::fmt::Debug for Embedding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Embedding(dim={})", self.0.len())
    }
}

impl Embedding {
    /// L2-normalises `v`; `None` for an all-zero or non-finite vector.
    pub fn from_raw(mut v: Vec<f32>) -> Option<Embedding> {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if !norm.is_finite() || norm < 1e-12 {
            return None;
        }
        v.iter_mut().for_each(|x| *x /= norm);
        Some(Embedding(v))
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    /// Cosine similarity (both sides are unit length).
    pub fn cosine(&self, other: &Embedding) -> f32 {
        self.0.iter().zip(&other.0).map(|(a, b)| a * b).sum()
    }
}

#[derive(Debug)]
pub struct Embedder {
    name: String,
    plan: Plan,
}

impl Embedder {
    pub fn load(store: &ModelStore, precision: Precision) -> Result<Embedder, ModelError> {
        let entry = store.entry(Role::Embedder, precision)?;
        let side = ALIGNED_SIDE as usize;
        let plan = models::plan(store.parse(entry)?, &entry.name, &[1, side, side, 3])?;
        Ok(Embedder {
            name: entry.name.clone(),
            plan,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn embed(&self, aligned: &RgbImage) -> Result<Embedding, PipelineError> {
        let err = |message: String| PipelineError::Inference {
            stage: "embed",
            message,
        };
        if aligned.dimensions() != (ALIGNED_SIDE, ALIGNED_SIDE) {
            return Err(err(format!(
                "crop is {:?}, expected 112x112",
                aligned.dimensions()
            )));
        }
        let side = ALIGNED_SIDE as usize;
        let input: Vec<f32> = aligned
            .as_raw()
            .iter()
            .map(|&p| (f32::from(p) - 127.5) / 128.0)
            .collect();
        let input =
            Tensor::from_shape(&[1, side, side, 3], &input).map_err(|e| err(format!("{e:#}")))?;
        let out = models::run(&self.plan, input).map_err(|e| err(format!("{e:#}")))?;
        let raw = models::as_f32(&out[0]).map_err(|e| err(format!("{e:#}")))?;
        if raw.len() != EMBEDDING_DIM {
            return Err(err(format!(
                "embedding has {} values, expected {EMBEDDING_DIM}",
                raw.len()
            )));
        }
        Embedding::from_raw(raw.to_vec())
            .ok_or_else(|| err("embedding is zero or not finite".into()))
    }
}

/// A tracked face's embedding, kept for reuse: a decision needs one embedding, not one per
/// frame. It is computed on first use and again only when the face is clearly better (quality
/// up by `REEMBED_GAIN`) than when it was computed, or when the track changed.
#[derive(Debug, Default)]
pub struct TrackEmbedding {
    kept: Option<(u64, f32, Embedding)>,
    computed: u64,
}

/// Quality gain (0-1 scale) over the kept embedding's that is worth a new embedding.
pub const REEMBED_GAIN: f32 = 0.05;

impl TrackEmbedding {
    /// The embedding of `track`'s face, from `crop` (its aligned 112x112 crop of quality
    /// `quality`) when none is kept for it or this one is clearly better.
    pub fn get(
        &mut self,
        embedder: &Embedder,
        track: u64,
        quality: f32,
        crop: &RgbImage,
    ) -> Result<&Embedding, PipelineError> {
        let stale = match &self.kept {
            Some((t, q, _)) => *t != track || quality >= q + REEMBED_GAIN,
            None => true,
        };
        if stale {
            let e = embedder.embed(crop)?;
            self.computed += 1;
            self.kept = Some((track, quality, e));
        }
        match &self.kept {
            Some((_, _, e)) => Ok(e),
            None => unreachable!("an embedding was just kept"),
        }
    }

    /// Drops the kept embedding: the next `get` embeds its crop (after a match failed, the
    /// next try deserves another frame).
    pub fn forget(&mut self) {
        self.kept = None;
    }

    /// Embeddings computed so far.
    pub fn computed(&self) -> u64 {
        self.computed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_are_unit_length_and_debug_hides_values() {
        let e = Embedding::from_raw(vec![3.0, 4.0]).unwrap();
        assert!((e.cosine(&e) - 1.0).abs() < 1e-6);
        assert_eq!(format!("{e:?}"), "Embedding(dim=2)");
        assert!(Embedding::from_raw(vec![0.0; 4]).is_none());
        assert!(Embedding::from_raw(vec![f32::NAN, 1.0]).is_none());
    }
}
