//! `facegate detect IMAGE` and `facegate embed IMAGE`.

use std::path::Path;

use anyhow::Context;
use serde_json::json;

use crate::pipeline::detect::Face;
use crate::pipeline::quality::Quality;
use crate::pipeline::{Pipeline, PipelineError};

pub fn quality_json(q: &Quality) -> serde_json::Value {
    json!({
        "score": q.score, "size": q.size, "sharpness": q.sharpness,
        "exposure": q.exposure, "pose": q.pose,
    })
}

fn face_json(face: &Face, quality: &Quality) -> serde_json::Value {
    json!({
        "bbox": face.bbox,
        "score": face.score,
        "landmarks": face.landmarks,
        "quality": quality_json(quality),
    })
}

pub fn run(pipeline: &Pipeline, path: &Path, json: bool) -> anyhow::Result<()> {
    let bytes = super::read_image(path)?;
    let img = pipeline
        .decode(&bytes)
        .with_context(|| format!("{}", path.display()))?;
    let faces = pipeline.detect(&img)?;
    let mut rows = Vec::with_capacity(faces.len());
    for face in &faces {
        rows.push((face, pipeline.quality(&img, face)?));
    }
    if json {
        let faces: Vec<_> = rows.iter().map(|(f, q)| face_json(f, q)).collect();
        return super::print_json(&json!({
            "width": img.width(), "height": img.height(), "faces": faces,
        }));
    }
    println!(
        "{}: {}x{}, {} face(s)",
        path.display(),
        img.width(),
        img.height(),
        faces.len()
    );
    println!(
        "{:>4}  {:>6}  {:>27}  {:>7}  {:>5} {:>5} {:>5} {:>5}",
        "#", "score", "box x1,y1,x2,y2", "quality", "size", "sharp", "expo", "pose"
    );
    for (i, (f, q)) in rows.iter().enumerate() {
        let b = f.bbox;
        println!(
            "{:>4}  {:>6.3}  {:>27}  {:>7.3}  {:>5.2} {:>5.2} {:>5.2} {:>5.2}",
            i,
            f.score,
            format!("{:.0},{:.0},{:.0},{:.0}", b[0], b[1], b[2], b[3]),
            q.score,
            q.size,
            q.sharpness,
            q.exposure,
            q.pose
        );
    }
    Ok(())
}

pub fn run_embed(pipeline: &Pipeline, path: &Path, json: bool) -> anyhow::Result<()> {
    let bytes = super::read_image(path)?;
    let (_, analysis) = pipeline.analyze_largest(&bytes).map_err(|e| match e {
        PipelineError::NoFace => anyhow::anyhow!("{}: no face found in the image", path.display()),
        e => anyhow::Error::new(e).context(path.display().to_string()),
    })?;
    if json {
        return super::print_json(&json!({
            "embedding": analysis.embedding.as_slice(),
            "bbox": analysis.face.bbox,
            "score": analysis.face.score,
            "quality": quality_json(&analysis.quality),
        }));
    }
    let b = analysis.face.bbox;
    println!(
        "{}: embedded the largest face at {:.0},{:.0},{:.0},{:.0} (quality {:.3}); {} dimensions, use --json to print them",
        path.display(),
        b[0],
        b[1],
        b[2],
        b[3],
        analysis.quality.score,
        analysis.embedding.as_slice().len()
    );
    Ok(())
}
