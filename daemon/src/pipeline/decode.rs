//! Bytes -> RGB frame, with limits checked before any large allocation.
//!
//! Invariant: an image larger than the limits is refused from its header alone; no input
//! makes the decoder panic or allocate without bound.

use std::io::Cursor;

use image::{ImageFormat, ImageReader, RgbImage};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeLimits {
    pub max_image_bytes: usize,
    pub max_image_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_image_bytes: 10 << 20,
            max_image_pixels: 40_000_000,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("the image is empty (0 bytes)")]
    Empty,
    #[error("the image is {bytes} bytes; the limit is {max} bytes")]
    TooManyBytes { bytes: usize, max: usize },
    #[error("unrecognised image format (expected JPEG, PNG or PGM/PPM)")]
    UnknownFormat,
    #[error("the image is {width}x{height} ({pixels} pixels); the limit is {max} pixels", pixels = u64::from(*width) * u64::from(*height))]
    TooLarge { width: u32, height: u32, max: u64 },
    #[error("the {format} image is corrupt or truncated: {message}")]
    Corrupt {
        format: &'static str,
        message: String,
    },
}

/// Decodes JPEG / PNG / PNM bytes into an 8-bit RGB image (grayscale is expanded, alpha dropped).
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() > limits.max_image_bytes {
        return Err(DecodeError::TooManyBytes {
            bytes: bytes.len(),
            max: limits.max_image_bytes,
        });
    }
    let format = image::guess_format(bytes).map_err(|_| DecodeError::UnknownFormat)?;
    let name = match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::Pnm => "PNM",
        _ => return Err(DecodeError::UnknownFormat),
    };
    let corrupt = |e: image::ImageError| DecodeError::Corrupt {
        format: name,
        message: e.to_string(),
    };
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(corrupt)?;
    if u64::from(width) * u64::from(height) > limits.max_image_pixels || width == 0 || height == 0 {
        return Err(DecodeError::TooLarge {
            width,
            height,
            max: limits.max_image_pixels,
        });
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut l = image::Limits::default();
    l.max_image_width = Some(width);
    l.max_image_height = Some(height);
    // Room for the decoded image plus the decoder's own buffers (RGBA16 worst case).
    l.max_alloc = Some(u64::from(width) * u64::from(height) * 8 + (64 << 20));
    reader.limits(l);
    Ok(reader.decode().map_err(corrupt)?.to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = image::GrayImage::new(width, height);
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn empty_garbage_and_truncated_inputs_are_clear_errors() {
        let limits = DecodeLimits::default();
        assert_eq!(decode(&[], &limits), Err(DecodeError::Empty));
        assert_eq!(
            decode(b"hello, not an image", &limits),
            Err(DecodeError::UnknownFormat)
        );
        let mut bytes = png(64, 64);
        bytes.truncate(bytes.len() / 2);
        assert!(matches!(
            decode(&bytes, &limits),
            Err(DecodeError::Corrupt { format: "PNG", .. })
        ));
        // A JPEG signature followed by noise.
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0];
        jpeg.extend((0..4000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        assert!(matches!(
            decode(&jpeg, &limits),
            Err(DecodeError::Corrupt { format: "JPEG", .. })
        ));
    }

    #[test]
    fn too_many_bytes_is_refused_before_decoding() {
        let limits = DecodeLimits {
            max_image_bytes: 100,
            ..Default::default()
        };
        let e = decode(&png(64, 64), &limits).unwrap_err();
        assert!(
            matches!(e, DecodeError::TooManyBytes { max: 100, .. }),
            "{e}"
        );
    }

    #[test]
    fn grayscale_is_expanded_to_rgb() {
        let img = decode(&png(10, 7), &DecodeLimits::default()).unwrap();
        assert_eq!(img.dimensions(), (10, 7));
    }
}
