//! V4L2 capture devices through the `v4l` crate: format negotiation (MJPEG, else YUYV, at the
//! size nearest the one asked for), mmap streaming, and decoding into reused buffers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use v4l::buffer::Type;
use v4l::io::mmap::Stream as MmapStream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::convert::{ConvertError, jpeg_to_rgb, yuyv_to_rgb};
use super::{BufferPool, CameraError, Frame, FrameSource};

/// The pixel formats facegate decodes, in order of preference: MJPEG costs a USB 2 camera a
/// tenth of YUYV's bandwidth (30 fps at 640x480 and above), YUYV costs no decoding.
pub const PREFERRED: [&[u8; 4]; 2] = [b"MJPG", b"YUYV"];

/// One pixel format a device offers, with its frame sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub fourcc: [u8; 4],
    pub description: String,
    /// Discrete sizes with their frame rates (fps).
    pub sizes: Vec<(u32, u32, Vec<f64>)>,
}

/// The format to ask for: the most preferred fourcc offered, at the offered size nearest to
/// `want` (by pixel count, ties to the larger). `None` when nothing offered is decodable.
pub fn choose(offers: &[Offer], want: (u32, u32)) -> Option<([u8; 4], u32, u32)> {
    for pref in PREFERRED {
        let Some(o) = offers.iter().find(|o| &o.fourcc == pref) else {
            continue;
        };
        let target = i64::from(want.0) * i64::from(want.1);
        let best = o
            .sizes
            .iter()
            .min_by_key(|(w, h, _)| {
                let px = i64::from(*w) * i64::from(*h);
                ((px - target).abs(), -px)
            })
            .map_or(want, |(w, h, _)| (*w, *h));
        return Some((o.fourcc, best.0, best.1));
    }
    None
}

/// Decodes raw buffers of one negotiated format.
#[derive(Debug, Clone)]
pub struct RawDecoder {
    pub fourcc: [u8; 4],
    pub width: u32,
    pub height: u32,
    /// Bytes per line (YUYV); 0 = packed.
    pub stride: u32,
    pub max_pixels: u64,
}

impl RawDecoder {
    pub fn decode(&self, raw: &[u8], out: &mut image::RgbImage) -> Result<(), ConvertError> {
        match &self.fourcc {
            b"MJPG" | b"JPEG" => jpeg_to_rgb(raw, self.max_pixels, out),
            _ => yuyv_to_rgb(raw, self.width, self.height, self.stride, out),
        }
    }
}

pub struct V4l2Source {
    describe: String,
    // The stream unmaps its buffers and stops streaming when dropped, before the device closes.
    stream: MmapStream<'static>,
    _device: Device,
    decoder: RawDecoder,
    pool: BufferPool,
}

impl std::fmt::Debug for V4l2Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V4l2Source")
            .field("describe", &self.describe)
            .finish_non_exhaustive()
    }
}

/// How long a frame may take before the device counts as lost.
const FRAME_TIMEOUT: Duration = Duration::from_secs(3);

fn offers(dev: &Device) -> std::io::Result<Vec<Offer>> {
    let mut out = Vec::new();
    for f in dev.enum_formats()? {
        let mut sizes = Vec::new();
        for fs in dev.enum_framesizes(f.fourcc).unwrap_or_default() {
            for d in fs.size.to_discrete() {
                let rates = dev
                    .enum_frameintervals(f.fourcc, d.width, d.height)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|i| match i.interval {
                        v4l::frameinterval::FrameIntervalEnum::Discrete(fr) if fr.numerator > 0 => {
                            Some(f64::from(fr.denominator) / f64::from(fr.numerator))
                        }
                        _ => None,
                    })
                    .collect();
                sizes.push((d.width, d.height, rates));
            }
        }
        out.push(Offer {
            fourcc: f.fourcc.repr,
            description: f.description,
            sizes,
        });
    }
    Ok(out)
}

impl V4l2Source {
    pub fn open(
        path: &Path,
        width: u32,
        height: u32,
        fps: u32,
        max_pixels: u64,
    ) -> Result<V4l2Source, CameraError> {
        let name = path.display().to_string();
        let err = |what: &str, e: std::io::Error| CameraError::Open {
            source_name: name.clone(),
            message: format!("{what}: {e}"),
        };
        let dev = Device::with_path(path).map_err(|e| err("open", e))?;
        let caps = dev.query_caps().map_err(|e| err("query capabilities", e))?;
        if !caps
            .capabilities
            .contains(v4l::capability::Flags::VIDEO_CAPTURE)
        {
            return Err(CameraError::Open {
                source_name: name,
                message: format!("{} is not a video capture device", caps.card),
            });
        }
        let offered = offers(&dev).map_err(|e| err("list formats", e))?;
        let (fourcc, w, h) =
            choose(&offered, (width, height)).ok_or_else(|| CameraError::Open {
                source_name: name.clone(),
                message: format!(
                    "offers none of MJPG, YUYV (it offers {})",
                    offered
                        .iter()
                        .map(|o| String::from_utf8_lossy(&o.fourcc).into_owned())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        let mut fmt = dev.format().map_err(|e| err("read format", e))?;
        fmt.width = w;
        fmt.height = h;
        fmt.fourcc = FourCC::new(&fourcc);
        let fmt = dev.set_format(&fmt).map_err(|e| err("set format", e))?;
        if fmt.fourcc.repr != fourcc {
            return Err(CameraError::Open {
                source_name: name,
                message: format!("the driver refused {}", String::from_utf8_lossy(&fourcc)),
            });
        }
        let rate = dev
            .set_params(&v4l::video::capture::Parameters::with_fps(fps))
            .ok()
            .map(|p| {
                let i = p.interval;
                if i.numerator > 0 {
                    f64::from(i.denominator) / f64::from(i.numerator)
                } else {
                    f64::from(fps)
                }
            })
            .unwrap_or(f64::from(fps));
        let mut stream = MmapStream::with_buffers(&dev, Type::VideoCapture, 4)
            .map_err(|e| err("map buffers", e))?;
        stream.set_timeout(FRAME_TIMEOUT);
        let decoder = RawDecoder {
            fourcc,
            width: fmt.width,
            height: fmt.height,
            stride: fmt.stride,
            max_pixels,
        };
        Ok(V4l2Source {
            describe: format!(
                "v4l:{name} {} {}x{}@{rate:.0} ({})",
                String::from_utf8_lossy(&fourcc),
                fmt.width,
                fmt.height,
                caps.card
            ),
            stream,
            _device: dev,
            decoder,
            pool: BufferPool::default(),
        })
    }
}

impl FrameSource for V4l2Source {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, CameraError> {
        let (raw, meta) = self
            .stream
            .next()
            .map_err(|e| CameraError::Io(e.to_string()))?;
        let captured = Instant::now();
        if meta.flags.contains(v4l::buffer::Flags::ERROR) {
            return Err(CameraError::Corrupt(ConvertError::Jpeg(
                "the driver flagged the buffer as damaged".into(),
            )));
        }
        let raw = &raw[..(meta.bytesused as usize).min(raw.len())];
        let mut buf = self.pool.take();
        let decoded = self.decoder.decode(raw, std::sync::Arc::make_mut(&mut buf));
        self.pool.keep(&buf);
        decoded.map_err(CameraError::Corrupt)?;
        // The driver's JPEG bytes are not kept: copying them on every frame would cost an
        // allocation per frame for the rare snapshot or preview, which encode from RGB instead.
        Ok(Some(Frame {
            seq: u64::from(meta.sequence),
            captured,
            image: buf,
            jpeg: None,
        }))
    }
}

/// A V4L2 capture device and what it offers (`facegate cameras`).
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub path: PathBuf,
    pub name: String,
    pub driver: String,
    pub offers: Vec<Offer>,
    /// The format facegate would choose at 640x480.
    pub chosen: Option<([u8; 4], u32, u32)>,
}

/// Every V4L2 video capture device (metadata and output nodes are left out).
pub fn list_devices() -> Vec<DeviceInfo> {
    let mut out = Vec::new();
    let mut nodes = v4l::context::enum_devices();
    nodes.sort_by_key(|n| n.index());
    for node in nodes {
        let Ok(dev) = Device::with_path(node.path()) else {
            continue;
        };
        let Ok(caps) = dev.query_caps() else { continue };
        if !caps
            .capabilities
            .contains(v4l::capability::Flags::VIDEO_CAPTURE)
        {
            continue;
        }
        let offers = offers(&dev).unwrap_or_default();
        let chosen = choose(&offers, (640, 480));
        out.push(DeviceInfo {
            path: node.path().to_owned(),
            name: caps.card,
            driver: caps.driver,
            offers,
            chosen,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(f: &[u8; 4], sizes: &[(u32, u32)]) -> Offer {
        Offer {
            fourcc: *f,
            description: String::new(),
            sizes: sizes.iter().map(|&(w, h)| (w, h, vec![30.0])).collect(),
        }
    }

    #[test]
    fn negotiation_prefers_mjpeg_then_yuyv_at_the_nearest_size() {
        let offers = vec![
            offer(b"YUYV", &[(640, 480), (1280, 720)]),
            offer(b"MJPG", &[(320, 240), (800, 600), (1920, 1080)]),
            offer(b"H264", &[(640, 480)]),
        ];
        assert_eq!(choose(&offers, (640, 480)), Some((*b"MJPG", 800, 600)));
        assert_eq!(
            choose(&offers[..1], (1280, 700)),
            Some((*b"YUYV", 1280, 720))
        );
        assert_eq!(choose(&offers[2..], (640, 480)), None);
    }

    /// Recorded buffers as a driver hands them over: a YUYV frame with padded lines and MJPEG
    /// frames, one truncated (a USB hiccup), through the decoder the device path uses.
    #[test]
    fn recorded_yuyv_and_mjpeg_buffers_decode_and_a_truncated_one_is_refused() {
        let img = image::RgbImage::from_fn(48, 32, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 7) as u8, 90])
        });
        let jpeg = super::super::convert::encode_jpeg(&img, 92);
        let mj = RawDecoder {
            fourcc: *b"MJPG",
            width: 48,
            height: 32,
            stride: 0,
            max_pixels: 1 << 20,
        };
        let mut out = image::RgbImage::new(0, 0);
        mj.decode(&jpeg, &mut out).unwrap();
        assert_eq!(out.dimensions(), (48, 32));
        let mut padded = jpeg.clone();
        padded.extend_from_slice(&[0; 64]);
        mj.decode(&padded, &mut out)
            .expect("zero padding after EOI is allowed");
        assert!(mj.decode(&jpeg[..jpeg.len() - 40], &mut out).is_err());
        // YUYV: mid-grey with neutral chroma is grey.
        let yuyv = RawDecoder {
            fourcc: *b"YUYV",
            width: 48,
            height: 32,
            stride: 128,
            max_pixels: 1 << 20,
        };
        let raw: Vec<u8> = (0..32)
            .flat_map(|_| {
                let mut line: Vec<u8> = [126u8, 128, 126, 128].repeat(24);
                line.resize(128, 0xEE);
                line
            })
            .collect();
        yuyv.decode(&raw, &mut out).unwrap();
        assert_eq!(out.dimensions(), (48, 32));
        assert!(
            out.pixels().all(|p| p.0 == [128, 128, 128]),
            "{:?}",
            out.get_pixel(0, 0)
        );
    }

    #[test]
    fn listing_devices_never_lists_more_than_the_video_nodes_present() {
        let nodes = std::fs::read_dir("/dev")
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("video"))
                    .count()
            })
            .unwrap_or(0);
        let found = list_devices();
        // Metadata and output nodes are left out, so never more than the nodes there are;
        // with none (this machine, CI), none.
        assert!(found.len() <= nodes, "{found:?}");
        if nodes == 0 {
            assert!(found.is_empty());
        }
        for d in &found {
            assert!(d.path.starts_with("/dev/video"), "{d:?}");
        }
    }
}
