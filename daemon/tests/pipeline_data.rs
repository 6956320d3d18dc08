#![allow(clippy::unwrap_used)]
//! Data-driven tests of the vision core over the real images in ../shared/data.

mod common;

use std::sync::OnceLock;

use facegate_daemon::pipeline::align::{ARCFACE_112, Similarity};
use facegate_daemon::pipeline::decode::{DecodeError, DecodeLimits};
use facegate_daemon::pipeline::detect::{DetectorConfig, DetectorKind};
use facegate_daemon::pipeline::models::{ModelStore, Precision};
use facegate_daemon::pipeline::quality::QualityConfig;
use facegate_daemon::pipeline::{Pipeline, PipelineConfig, PipelineError};
use image::ImageEncoder;

fn store() -> &'static ModelStore {
    static STORE: OnceLock<ModelStore> = OnceLock::new();
    STORE.get_or_init(|| {
        ModelStore::open_first(&[common::models_dir()]).expect("shipped models verify")
    })
}

fn config(kind: DetectorKind, precision: Precision) -> PipelineConfig {
    PipelineConfig {
        detector: DetectorConfig {
            kind,
            ..DetectorConfig::default()
        },
        quality: QualityConfig::default(),
        limits: DecodeLimits::default(),
        precision,
        schedule: Default::default(),
    }
}

fn pipeline(kind: DetectorKind, precision: Precision) -> &'static Pipeline {
    static CELLS: [OnceLock<Pipeline>; 4] = [const { OnceLock::new() }; 4];
    let i = match (kind, precision) {
        (DetectorKind::Centerface, Precision::Fp32) => 0,
        (DetectorKind::Centerface, Precision::Int8) => 1,
        (DetectorKind::Blazeface, Precision::Fp32) => 2,
        (DetectorKind::Blazeface, Precision::Int8) => 3,
    };
    CELLS[i]
        .get_or_init(|| Pipeline::load(store(), config(kind, precision)).expect("pipeline loads"))
}

fn image(rel: &str) -> Vec<u8> {
    std::fs::read(common::data(rel)).expect("shared image readable")
}

#[test]
fn astronaut_face_is_found_with_landmarks_inside_the_box() {
    for (kind, precision) in [
        (DetectorKind::Centerface, Precision::Fp32),
        (DetectorKind::Centerface, Precision::Int8),
        (DetectorKind::Blazeface, Precision::Fp32),
    ] {
        let p = pipeline(kind, precision);
        let img = p.decode(&image("photos/astronaut.png")).unwrap();
        let faces = p.detect(&img).unwrap();
        assert_eq!(faces.len(), 1, "{kind:?}/{precision:?}: {faces:?}");
        let f = &faces[0];
        assert!(f.score > 0.7, "{kind:?}: score {}", f.score);
        // The astronaut's face is in the upper middle of the 512x512 portrait.
        let (cx, cy) = ((f.bbox[0] + f.bbox[2]) / 2.0, (f.bbox[1] + f.bbox[3]) / 2.0);
        assert!(
            (180.0..290.0).contains(&cx) && (60.0..190.0).contains(&cy),
            "{kind:?}: {f:?}"
        );
        assert!(f.width() > 60.0 && f.width() < 160.0, "{kind:?}: {f:?}");
        for [x, y] in f.landmarks {
            assert!(
                x >= f.bbox[0] && x <= f.bbox[2] && y >= f.bbox[1] && y <= f.bbox[3],
                "{kind:?}: {f:?}"
            );
        }
        let [el, er, nose, ml, mr] = f.landmarks;
        assert!(el[0] < er[0] && ml[0] < mr[0], "left/right order: {f:?}");
        assert!(
            el[1] < nose[1] && nose[1] < ml[1],
            "eyes above nose above mouth: {f:?}"
        );
    }
}

/// Hand-counted faces in the shared group photos.
const GROUPS: [(&str, usize); 7] = [
    ("group_sample1.jpg", 3),
    ("group_sample2.jpg", 3),
    ("group_sample3.jpg", 3),
    ("group_sample4.jpg", 4),
    ("group_sample5.jpg", 5),
    ("group_sample6.jpg", 4),
    ("group_t1.jpg", 6),
];

#[test]
fn every_face_in_the_group_photos_is_found_and_nothing_in_the_landscape() {
    for (kind, precision) in [
        (DetectorKind::Centerface, Precision::Fp32),
        (DetectorKind::Centerface, Precision::Int8),
        (DetectorKind::Blazeface, Precision::Fp32),
    ] {
        let p = pipeline(kind, precision);
        let mut found = 0;
        for (file, expected) in GROUPS {
            let img = p.decode(&image(&format!("photos/{file}"))).unwrap();
            let faces = p.detect(&img).unwrap();
            assert_eq!(
                faces.len(),
                expected,
                "{kind:?}/{precision:?} {file}: {:?}",
                faces.iter().map(|f| f.score).collect::<Vec<_>>()
            );
            found += faces.len();
        }
        assert_eq!(found, 28);
        let img = p.decode(&image("photos/noface_mountain.jpg")).unwrap();
        assert!(
            p.detect(&img).unwrap().is_empty(),
            "{kind:?}: false face in a landscape"
        );
    }
}

#[test]
fn orl_same_person_is_closer_than_different_people() {
    for precision in [Precision::Fp32, Precision::Int8] {
        let p = pipeline(DetectorKind::Centerface, precision);
        let embed = |s: usize, n: usize| {
            let bytes = image(&format!("faces/orl/s{s:02}/{n:02}.pgm"));
            p.analyze_largest(&bytes)
                .unwrap_or_else(|e| panic!("s{s:02}/{n:02}: {e}"))
                .1
                .embedding
        };
        for s in 1..=20 {
            let (a, b) = (embed(s, 1), embed(s, 2));
            let other = embed(s % 20 + 1, 1);
            let (same, diff) = (a.cosine(&b), a.cosine(&other));
            assert!(
                same > diff,
                "{precision:?} s{s:02}: same {same:.3} <= different {diff:.3}"
            );
            assert!(
                same > 0.5,
                "{precision:?} s{s:02}: same-person cosine only {same:.3}"
            );
        }
    }
}

#[test]
fn alignment_maps_real_landmarks_near_the_template() {
    let p = pipeline(DetectorKind::Centerface, Precision::Fp32);
    let img = p.decode(&image("photos/astronaut.png")).unwrap();
    let face = p.detect(&img).unwrap().remove(0);
    let t = Similarity::estimate(&face.landmarks, &ARCFACE_112).unwrap();
    // A real face is not an exact similarity of the template; the residual stays small.
    let rms = (face
        .landmarks
        .iter()
        .zip(ARCFACE_112)
        .map(|(p, q)| {
            let m = t.apply(*p);
            (m[0] - q[0]).powi(2) + (m[1] - q[1]).powi(2)
        })
        .sum::<f32>()
        / 5.0)
        .sqrt();
    assert!(rms < 4.0, "alignment residual {rms:.2} px");
    // The same face seen rotated, scaled and shifted (its landmarks moved by a known
    // similarity) aligns to the same place: every landmark lands within a pixel of where the
    // original alignment put it.
    let (ang, k) = (31f32.to_radians(), 0.6f32);
    let seen = Similarity {
        a: k * ang.cos(),
        b: k * ang.sin(),
        tx: 140.0,
        ty: -35.0,
    };
    let moved: Vec<[f32; 2]> = face.landmarks.iter().map(|&q| seen.apply(q)).collect();
    let t2 = Similarity::estimate(&moved, &ARCFACE_112).unwrap();
    for (orig, mv) in face.landmarks.iter().zip(&moved) {
        let (a, b) = (t.apply(*orig), t2.apply(*mv));
        assert!((a[0] - b[0]).hypot(a[1] - b[1]) < 1.0, "{a:?} vs {b:?}");
    }
}

#[test]
fn bad_images_are_clear_errors() {
    let p = pipeline(DetectorKind::Centerface, Precision::Fp32);
    assert!(matches!(
        p.decode(&[]),
        Err(PipelineError::Decode(DecodeError::Empty))
    ));
    let mut truncated = image("photos/group_t1.jpg");
    truncated.truncate(truncated.len() / 3);
    // A truncated JPEG either fails to decode or decodes grey at the bottom; never panics.
    match p.decode(&truncated) {
        Err(PipelineError::Decode(DecodeError::Corrupt { format: "JPEG", .. })) => {}
        Ok(img) => assert_eq!(img.dimensions(), (1280, 886)),
        Err(e) => panic!("unexpected error {e}"),
    }
    // A 50-megapixel PNG is refused from its header.
    let big = image::GrayImage::new(8000, 6250);
    let mut bytes = std::io::Cursor::new(Vec::new());
    image::codecs::png::PngEncoder::new_with_quality(
        &mut bytes,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::NoFilter,
    )
    .write_image(big.as_raw(), 8000, 6250, image::ExtendedColorType::L8)
    .unwrap();
    let err = p.decode(bytes.get_ref()).unwrap_err();
    assert!(
        matches!(
            err,
            PipelineError::Decode(DecodeError::TooLarge {
                width: 8000,
                height: 6250,
                ..
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("50000000 pixels"), "{err}");
    // No face: a clear NoFace, not a zero embedding.
    assert!(matches!(
        p.analyze_largest(&image("photos/noface_mountain.jpg")),
        Err(PipelineError::NoFace)
    ));
}

/// The first frame of every shared clip and two photos.
fn first_frames() -> Vec<(String, image::RgbImage)> {
    let mut frames: Vec<(String, image::RgbImage)> = Vec::new();
    let video = common::data("video");
    let mut clips: Vec<_> = std::fs::read_dir(&video)
        .expect("video folder")
        .map(|e| e.expect("entry").path())
        .collect();
    clips.sort();
    for clip in clips {
        let mut files: Vec<_> = std::fs::read_dir(&clip)
            .expect("clip folder")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "png"))
            .collect();
        files.sort();
        let first = files.first().expect("a frame");
        frames.push((
            first.display().to_string(),
            image::open(first).expect("frame decodes").to_rgb8(),
        ));
    }
    for photo in ["photos/group_sample1.jpg", "photos/astronaut.png"] {
        let img = image::open(common::data(photo)).expect("photo").to_rgb8();
        frames.push((photo.to_owned(), img));
    }
    assert!(frames.len() >= 19, "{} frames", frames.len());
    frames
}

/// Context motion's half-resolution luminance (`context::Gray`, computed in vectorised row
/// passes) has the bytes of the per-pixel formula its rules were measured on, on real frames
/// and on crops of odd width and height (the last column and row dropped), reusing a buffer.
#[test]
fn the_context_luminance_is_the_2x2_box_of_the_luma_formula_byte_for_byte() {
    use facegate_daemon::pipeline::context::Gray;

    let mut reuse = None;
    let mut compared = 0usize;
    for (name, img) in &first_frames() {
        let (w, h) = img.dimensions();
        for (cw, ch) in [(w, h), (w - 1, h - 1), (w - 3, h), (3, 3), (1, 1)] {
            let img = image::imageops::crop_imm(img, 0, 0, cw, ch).to_image();
            let g = Gray::from_rgb(&img, reuse.take());
            let (gw, gh) = ((cw / 2) as usize, (ch / 2) as usize);
            assert_eq!(g.dimensions(), (gw, gh), "{name} cropped to {cw}x{ch}");
            let luma = |x: u32, y: u32| {
                let p = img.get_pixel(x, y).0;
                0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
            };
            let mut want = Vec::with_capacity(gw * gh);
            for y in 0..gh as u32 {
                for x in 0..gw as u32 {
                    let (x2, y2) = (2 * x, 2 * y);
                    let v =
                        (luma(x2, y2) + luma(x2 + 1, y2) + luma(x2, y2 + 1) + luma(x2 + 1, y2 + 1))
                            / 4.0;
                    want.push(v.clamp(0.0, 255.0).round() as u8);
                }
            }
            assert!(
                g.bytes() == want.as_slice(),
                "{name} cropped to {cw}x{ch}: bytes differ"
            );
            reuse = Some(g);
            compared += 1;
        }
    }
    assert!(compared >= 19 * 5, "{compared}");
}

/// The detector's own downscale (`pipeline::resize`) gives the bytes of `image`'s Triangle
/// resize, which the liveness rules were measured on: on a frame of every shared clip and on the
/// photos, at the detector's sizes (longer side 320, 256, 192), at odd sizes, when enlarging and
/// when one side keeps its size; and a window of it equals the same window cut from the whole.
#[test]
fn the_detectors_resize_is_images_triangle_resize_byte_for_byte() {
    use facegate_daemon::pipeline::resize::{triangle_resize, triangle_resize_window};
    use image::imageops::{FilterType, resize};

    let frames = first_frames();
    let mut compared = 0usize;
    for (name, img) in &frames {
        let (w, h) = img.dimensions();
        let side = |s: u32| {
            let k = s as f32 / w.max(h) as f32;
            (
                ((w as f32 * k).round() as u32).max(1),
                ((h as f32 * k).round() as u32).max(1),
            )
        };
        let sizes = [
            side(320),
            side(256),
            side(192),
            (w / 2 + 1, h / 3 + 1),
            (w, h / 2),
            (w * 3 / 2, h * 3 / 2),
            (7, 5),
        ];
        for (nw, nh) in sizes {
            let want = resize(img, nw, nh, FilterType::Triangle);
            let got = triangle_resize(img, nw, nh);
            assert!(got == want, "{name} at {nw}x{nh}: bytes differ");
            for (x0, y0, n) in [
                (0, 0, 64),
                (32, 32, 128),
                (nw / 2, nh / 3, 96),
                (nw - 1, 0, 64),
            ] {
                let got = triangle_resize_window(img, nw, nh, x0, y0, n, n);
                let mut cut = image::RgbImage::new(n, n);
                for y in 0..n.min(nh.saturating_sub(y0)) {
                    for x in 0..n.min(nw.saturating_sub(x0)) {
                        cut.put_pixel(x, y, *want.get_pixel(x0 + x, y0 + y));
                    }
                }
                assert!(
                    got == cut,
                    "{name} at {nw}x{nh}, window {n} at ({x0}, {y0})"
                );
            }
            compared += 1;
        }
    }
    assert_eq!(compared, frames.len() * 7);
}
