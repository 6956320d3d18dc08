//! Raw camera buffers -> RGB: YUYV (4:2:2, BT.601 limited range) and MJPEG, written into a
//! caller's buffer that is reused from frame to frame; and the splitting of an `.mjpeg` file
//! (concatenated JPEGs) into frames.

use image::RgbImage;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConvertError {
    #[error("a {width}x{height} YUYV frame needs {need} bytes, the buffer has {got}")]
    ShortYuyv {
        width: u32,
        height: u32,
        need: usize,
        got: usize,
    },
    #[error("corrupt or truncated JPEG frame: {0}")]
    Jpeg(String),
    #[error("the JPEG frame is {width}x{height}, over the {max_pixels} pixel limit")]
    TooLarge {
        width: u32,
        height: u32,
        max_pixels: u64,
    },
}

/// Makes `out` `width` x `height`, reusing its allocation when it is large enough.
fn reshape(out: &mut RgbImage, width: u32, height: u32) {
    if out.dimensions() != (width, height) {
        let mut buf = std::mem::take(out).into_raw();
        buf.resize(width as usize * height as usize * 3, 0);
        *out =
            RgbImage::from_raw(width, height, buf).unwrap_or_else(|| RgbImage::new(width, height));
    }
}

#[inline]
fn clamp(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// YUYV 4:2:2 (Y0 U Y1 V per two pixels; `stride` bytes per line, 0 = packed) into `out`.
pub fn yuyv_to_rgb(
    raw: &[u8],
    width: u32,
    height: u32,
    stride: u32,
    out: &mut RgbImage,
) -> Result<(), ConvertError> {
    let line = (width as usize) * 2;
    let stride = if stride == 0 { line } else { stride as usize };
    let need = stride * (height as usize - 1) + line;
    if height == 0 || raw.len() < need || stride < line {
        return Err(ConvertError::ShortYuyv {
            width,
            height,
            need,
            got: raw.len(),
        });
    }
    reshape(out, width, height);
    let dst: &mut [u8] = out;
    for (y, row) in dst.chunks_exact_mut(width as usize * 3).enumerate() {
        let src = &raw[y * stride..y * stride + line];
        for (px, quad) in row.chunks_exact_mut(6).zip(src.chunks_exact(4)) {
            // BT.601, limited range, fixed point (x256).
            let u = i32::from(quad[1]) - 128;
            let v = i32::from(quad[3]) - 128;
            let r = 409 * v;
            let g = -100 * u - 208 * v;
            let b = 516 * u;
            for (k, yv) in [quad[0], quad[2]].into_iter().enumerate() {
                let c = 298 * (i32::from(yv) - 16) + 128;
                px[k * 3] = clamp((c + r) >> 8);
                px[k * 3 + 1] = clamp((c + g) >> 8);
                px[k * 3 + 2] = clamp((c + b) >> 8);
            }
        }
        // An odd width leaves one pixel: repeat its neighbour.
        if width % 2 == 1 && width > 1 {
            let n = row.len();
            row.copy_within(n - 6..n - 3, n - 3);
        }
    }
    Ok(())
}

/// Decodes one JPEG frame into `out` (grey JPEGs are expanded); the size is checked from the
/// header before any pixel is decoded.
pub fn jpeg_to_rgb(raw: &[u8], max_pixels: u64, out: &mut RgbImage) -> Result<(), ConvertError> {
    use image::ImageDecoder as _;
    let jerr = |e: image::ImageError| ConvertError::Jpeg(e.to_string());
    if raw.len() < 4 || raw[0] != 0xFF || raw[1] != 0xD8 {
        return Err(ConvertError::Jpeg("no JPEG start-of-image marker".into()));
    }
    // A frame cut short (a USB hiccup) decodes to a grey tail in lenient decoders: refuse it.
    if !ends_with_eoi(raw) {
        return Err(ConvertError::Jpeg(
            "no end-of-image marker (truncated)".into(),
        ));
    }
    let dec = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(raw)).map_err(jerr)?;
    let (width, height) = dec.dimensions();
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(ConvertError::TooLarge {
            width,
            height,
            max_pixels,
        });
    }
    match dec.color_type() {
        image::ColorType::Rgb8 => {
            reshape(out, width, height);
            dec.read_image(out).map_err(jerr)
        }
        image::ColorType::L8 => {
            let mut grey = vec![0u8; width as usize * height as usize];
            dec.read_image(&mut grey).map_err(jerr)?;
            reshape(out, width, height);
            for (px, g) in out.chunks_exact_mut(3).zip(grey) {
                px.fill(g);
            }
            Ok(())
        }
        other => Err(ConvertError::Jpeg(format!(
            "unsupported colour type {other:?}"
        ))),
    }
}

/// Whether the JPEG ends with EOI (trailing zero padding, which some cameras add, allowed).
fn ends_with_eoi(raw: &[u8]) -> bool {
    let end = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    end >= 2 && raw[end - 2] == 0xFF && raw[end - 1] == 0xD9
}

/// Splits concatenated JPEGs (an `.mjpeg` file) into frames by their markers: segment lengths
/// are followed up to the scan, then the entropy-coded data is scanned for EOI (a 0xFF there is
/// always followed by 0x00 or a restart marker), so an EXIF thumbnail's EOI does not end a
/// frame early. Bytes between frames are skipped; a truncated last frame is returned as is
/// (its decoding fails and is counted).
pub fn split_mjpeg(data: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut frames = Vec::new();
    let mut i = 0;
    while let Some(off) = find_soi(&data[i..]) {
        let start = i + off;
        let end = frame_end(data, start).unwrap_or(data.len());
        frames.push(start..end);
        i = end;
        if end >= data.len() {
            break;
        }
    }
    frames
}

fn find_soi(data: &[u8]) -> Option<usize> {
    data.windows(3).position(|w| w == [0xFF, 0xD8, 0xFF])
}

fn frame_end(data: &[u8], start: usize) -> Option<usize> {
    let mut p = start + 2;
    // Marker segments up to SOS.
    loop {
        while *data.get(p)? != 0xFF {
            p += 1;
        }
        while *data.get(p)? == 0xFF {
            p += 1;
        }
        let marker = *data.get(p)?;
        p += 1;
        match marker {
            0xD9 => return Some(p),
            0x01 | 0xD0..=0xD7 => continue,
            _ => {
                let len = usize::from(*data.get(p)?) << 8 | usize::from(*data.get(p + 1)?);
                p += len;
                if marker == 0xDA {
                    break;
                }
            }
        }
    }
    // Entropy-coded data (possibly several scans) up to EOI.
    loop {
        let b = *data.get(p)?;
        p += 1;
        if b != 0xFF {
            continue;
        }
        let m = *data.get(p)?;
        match m {
            0x00 | 0xD0..=0xD7 | 0xFF => {
                if m != 0xFF {
                    p += 1;
                }
            }
            0xD9 => return Some(p + 1),
            // Another segment (DHT / SOS of a progressive frame): skip it.
            _ => {
                let len = usize::from(*data.get(p + 1)?) << 8 | usize::from(*data.get(p + 2)?);
                p += 1 + len;
            }
        }
    }
}

/// Encodes RGB as a baseline JPEG (snapshots and the MJPEG preview).
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(img.len() / 8);
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
    // Encoding RGB8 into memory cannot fail for a well-formed image.
    if enc
        .encode(
            img,
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .is_err()
    {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb_to_yuyv(img: &RgbImage) -> Vec<u8> {
        let mut out = Vec::new();
        for row in img.rows() {
            let px: Vec<_> = row.collect();
            for pair in px.chunks(2) {
                let yuv = |p: &image::Rgb<u8>| {
                    let [r, g, b] = p.0.map(f32::from);
                    let y = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b;
                    let u = 128.0 - 0.148 * r - 0.291 * g + 0.439 * b;
                    let v = 128.0 + 0.439 * r - 0.368 * g - 0.071 * b;
                    (y, u, v)
                };
                let (y0, u0, v0) = yuv(pair[0]);
                let (y1, u1, v1) = yuv(pair[1]);
                out.extend([
                    y0.round() as u8,
                    ((u0 + u1) / 2.0).round() as u8,
                    y1.round() as u8,
                    ((v0 + v1) / 2.0).round() as u8,
                ]);
            }
        }
        out
    }

    fn test_image() -> RgbImage {
        RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x + y) * 2) as u8])
        })
    }

    #[test]
    fn yuyv_round_trips_within_chroma_subsampling_and_reuses_the_buffer() {
        let img = test_image();
        let raw = rgb_to_yuyv(&img);
        let mut out = RgbImage::new(64, 48);
        let ptr = out.as_ptr();
        yuyv_to_rgb(&raw, 64, 48, 0, &mut out).unwrap();
        assert_eq!(out.as_ptr(), ptr, "same size: the buffer is reused");
        let max_err = img
            .iter()
            .zip(out.iter())
            .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
            .max()
            .unwrap();
        assert!(max_err <= 8, "max channel error {max_err}");
        // A padded stride (as drivers report for aligned lines) reads the same pixels.
        let mut padded = Vec::new();
        for line in raw.chunks(128) {
            padded.extend_from_slice(line);
            padded.extend_from_slice(&[0u8; 32]);
        }
        let mut out2 = RgbImage::new(1, 1);
        yuyv_to_rgb(&padded, 64, 48, 160, &mut out2).unwrap();
        assert_eq!(out, out2);
        // Too short a buffer is an error, not a panic.
        let e = yuyv_to_rgb(&raw[..raw.len() - 1], 64, 48, 0, &mut out).unwrap_err();
        assert!(matches!(e, ConvertError::ShortYuyv { .. }), "{e}");
    }

    #[test]
    fn mjpeg_frames_split_decode_and_corrupt_ones_are_refused() {
        let img = test_image();
        let a = encode_jpeg(&img, 90);
        let b = encode_jpeg(&image::imageops::flip_horizontal(&img), 90);
        let mut file = a.clone();
        file.extend_from_slice(b"\r\n--boundary\r\n");
        file.extend_from_slice(&b);
        file.extend_from_slice(&a[..a.len() / 2]);
        let frames = split_mjpeg(&file);
        assert_eq!(frames.len(), 3);
        assert_eq!(&file[frames[0].clone()], &a[..]);
        assert_eq!(&file[frames[1].clone()], &b[..]);
        let mut out = RgbImage::new(8, 8);
        jpeg_to_rgb(&file[frames[0].clone()], 1 << 20, &mut out).unwrap();
        assert_eq!(out.dimensions(), (64, 48));
        let ptr = out.as_ptr();
        jpeg_to_rgb(&file[frames[1].clone()], 1 << 20, &mut out).unwrap();
        assert_eq!(out.as_ptr(), ptr);
        let truncated = &file[frames[2].clone()];
        assert!(matches!(
            jpeg_to_rgb(truncated, 1 << 20, &mut out),
            Err(ConvertError::Jpeg(_))
        ));
        // Garbage, an empty buffer and an oversized frame: errors, never panics.
        assert!(jpeg_to_rgb(&[], 1 << 20, &mut out).is_err());
        let mut garbage = a.clone();
        for b in garbage.iter_mut().skip(200).take(400) {
            *b = 0x5A;
        }
        let _ = jpeg_to_rgb(&garbage, 1 << 20, &mut out);
        assert!(matches!(
            jpeg_to_rgb(&a, 1000, &mut out),
            Err(ConvertError::TooLarge { .. })
        ));
    }
}
