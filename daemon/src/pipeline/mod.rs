//! The face pipeline: decode -> detect (5 landmarks) -> align -> quality -> embed.
//!
//! Invariant: synchronous `Frame -> Analysis` code. No tokio, axum, sled or serde_json here;
//! it runs on blocking threads and never spawns tasks. Models are loaded once and shared.

pub mod align;
pub mod context;
pub mod decode;
pub mod detect;
pub mod edge;
pub mod embed;
pub mod eyes;
pub mod flow;
pub mod liveness;
pub mod mesh;
pub mod models;
pub mod obstacles;
pub mod quality;
pub mod resize;
pub mod screen;
pub mod stream;
pub mod track;

use image::RgbImage;

use decode::{DecodeError, DecodeLimits};
use detect::{Detector, DetectorConfig, Face};
use embed::{Embedder, Embedding};
use models::{ModelError, ModelStore, Precision};
use quality::{Quality, QualityConfig};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{stage} failed: {message}")]
    Inference {
        stage: &'static str,
        message: String,
    },
    #[error("no face found in the image")]
    NoFace,
    #[error("the face's landmarks are degenerate and cannot be aligned")]
    DegenerateLandmarks,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub detector: DetectorConfig,
    pub quality: QualityConfig,
    pub limits: DecodeLimits,
    pub precision: Precision,
    pub schedule: ScheduleConfig,
}

/// `[pipeline]`: how a stream of frames spends its budget, and threads per model run.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Threads one model run may use (tract's matrix products on a shared pool); 0: the cores
    /// available to the process.
    pub threads: usize,
    /// While faces are tracked, the whole frame is searched for faces this often (ms: a new
    /// face is found within it); on the frames between, each tracked face is re-detected on a
    /// crop around it. 0: the whole frame on every frame.
    pub redetect_ms: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            threads: 1,
            redetect_ms: 500.0,
        }
    }
}

/// One face, fully analysed.
#[derive(Debug, Clone)]
pub struct FaceAnalysis {
    pub face: Face,
    pub quality: Quality,
    pub embedding: Embedding,
}

#[derive(Debug)]
pub struct Pipeline {
    cfg: PipelineConfig,
    detector: Detector,
    embedder: Embedder,
}

impl Pipeline {
    pub fn load(store: &ModelStore, cfg: PipelineConfig) -> Result<Pipeline, ModelError> {
        let detector = Detector::load(store, &cfg.detector, cfg.precision)?;
        let embedder = Embedder::load(store, cfg.precision)?;
        Ok(Pipeline {
            cfg,
            detector,
            embedder,
        })
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<RgbImage, PipelineError> {
        Ok(decode::decode(bytes, &self.cfg.limits)?)
    }

    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Face>, PipelineError> {
        self.detector.detect(img)
    }

    /// Aligns, scores and embeds one detected face.
    pub fn analyze(&self, img: &RgbImage, face: &Face) -> Result<FaceAnalysis, PipelineError> {
        let (_, crop) =
            align::align(img, &face.landmarks).ok_or(PipelineError::DegenerateLandmarks)?;
        let quality = quality::assess(face, &crop, &self.cfg.quality);
        let embedding = self.embedder.embed(&crop)?;
        Ok(FaceAnalysis {
            face: face.clone(),
            quality,
            embedding,
        })
    }

    /// Quality of every face without embedding it (cheap; for `detect`).
    pub fn quality(&self, img: &RgbImage, face: &Face) -> Result<Quality, PipelineError> {
        self.aligned(img, face).map(|(_, q)| q)
    }

    /// The face's aligned 112x112 crop (what `embedder().embed` takes) and its quality.
    pub fn aligned(
        &self,
        img: &RgbImage,
        face: &Face,
    ) -> Result<(RgbImage, Quality), PipelineError> {
        let (_, crop) =
            align::align(img, &face.landmarks).ok_or(PipelineError::DegenerateLandmarks)?;
        let quality = quality::assess(face, &crop, &self.cfg.quality);
        Ok((crop, quality))
    }

    /// Decode, detect, and analyse the largest face.
    pub fn analyze_largest(&self, bytes: &[u8]) -> Result<(RgbImage, FaceAnalysis), PipelineError> {
        let img = self.decode(bytes)?;
        let faces = self.detect(&img)?;
        let face = largest(&faces).ok_or(PipelineError::NoFace)?;
        let analysis = self.analyze(&img, face)?;
        Ok((img, analysis))
    }
}

/// The face with the largest box (the person closest to the camera).
pub fn largest(faces: &[Face]) -> Option<&Face> {
    faces.iter().max_by(|a, b| a.area().total_cmp(&b.area()))
}
