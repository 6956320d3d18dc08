//! Camera specifications as written on the command line and in the configuration:
//! `[NAME=]v4l:/dev/videoN[:WxH][@FPS]`, `[NAME=]replay:DIR[@FPS][,once]`,
//! `[NAME=]replay:FILE.mjpeg[@FPS][,once]`.

use std::path::PathBuf;

/// Where a camera's frames come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// A V4L2 capture device; size and rate are what is asked for (the driver may round them).
    V4l2 {
        path: PathBuf,
        width: u32,
        height: u32,
        fps: u32,
    },
    /// Recorded frames: a folder of images (sorted by name) or one `.mjpeg` file
    /// (concatenated JPEGs), paced at `fps`, looping unless `once`.
    Replay {
        path: PathBuf,
        fps: f64,
        once: bool,
        /// Seconds to wait before the first frame (tests and demos: listeners connect first).
        delay_s: f64,
    },
}

/// A camera: its id and its source.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraSpec {
    pub id: String,
    pub source: SourceSpec,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("camera `{spec}`: {message}")]
pub struct SpecError {
    pub spec: String,
    pub message: String,
}

const DEFAULT_SIZE: (u32, u32) = (640, 480);
const DEFAULT_V4L2_FPS: u32 = 15;
const DEFAULT_REPLAY_FPS: f64 = 10.0;

impl SourceSpec {
    /// The spec as written (without the name).
    pub fn describe(&self) -> String {
        match self {
            SourceSpec::V4l2 {
                path,
                width,
                height,
                fps,
            } => format!("v4l:{}:{width}x{height}@{fps}", path.display()),
            SourceSpec::Replay {
                path,
                fps,
                once,
                delay_s,
            } => format!(
                "replay:{}@{fps}{}{}",
                path.display(),
                if *once { ",once" } else { "" },
                if *delay_s > 0.0 {
                    format!(",delay={delay_s}")
                } else {
                    String::new()
                }
            ),
        }
    }
}

impl CameraSpec {
    /// Parses one spec; `index` names an unnamed camera `cam{index}`.
    pub fn parse(text: &str, index: usize) -> Result<CameraSpec, SpecError> {
        let err = |message: String| SpecError {
            spec: text.to_owned(),
            message,
        };
        let (id, rest) = match text.split_once('=') {
            Some((name, rest)) if !name.contains(':') => (name.to_owned(), rest),
            _ => (format!("cam{index}"), text),
        };
        if id.is_empty()
            || id.len() > 32
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(err(format!(
                "the camera name `{id}` must be 1-32 letters, digits, `-` or `_`"
            )));
        }
        let source = if let Some(rest) = rest.strip_prefix("v4l:") {
            parse_v4l2(rest).map_err(err)?
        } else if let Some(rest) = rest.strip_prefix("replay:") {
            parse_replay(rest).map_err(err)?
        } else {
            return Err(err(
                "expected v4l:/dev/videoN[:WxH][@FPS] or replay:PATH[@FPS][,once]".into(),
            ));
        };
        Ok(CameraSpec { id, source })
    }
}

fn parse_v4l2(rest: &str) -> Result<SourceSpec, String> {
    let (rest, fps) = match rest.rsplit_once('@') {
        Some((r, f)) => (
            r,
            f.parse::<u32>()
                .ok()
                .filter(|f| (1..=240).contains(f))
                .ok_or(format!("bad frame rate `{f}` (1-240)"))?,
        ),
        None => (rest, DEFAULT_V4L2_FPS),
    };
    // `/dev/video0:640x480`: a size follows the last colon if it looks like one.
    let (path, (width, height)) = match rest.rsplit_once(':') {
        Some((p, size)) if size.contains('x') => (p, parse_size(size)?),
        _ => (rest, DEFAULT_SIZE),
    };
    if !path.starts_with('/') {
        return Err(format!(
            "the device must be an absolute path such as /dev/video0, not `{path}`"
        ));
    }
    Ok(SourceSpec::V4l2 {
        path: PathBuf::from(path),
        width,
        height,
        fps,
    })
}

fn parse_size(size: &str) -> Result<(u32, u32), String> {
    let bad = || format!("bad size `{size}` (WIDTHxHEIGHT, 16-4096 each)");
    let (w, h) = size.split_once('x').ok_or_else(bad)?;
    let ok = |v: &str| {
        v.parse::<u32>()
            .ok()
            .filter(|v| (16..=4096).contains(v))
            .ok_or_else(bad)
    };
    Ok((ok(w)?, ok(h)?))
}

fn parse_replay(rest: &str) -> Result<SourceSpec, String> {
    // Options after the last `@FPS` (or the path): `,once`, `,loop`, `,delay=S`.
    let mut parts = rest.split(',');
    let rest = parts.next().unwrap_or_default();
    let (mut once, mut delay_s) = (false, 0.0);
    for opt in parts {
        match opt {
            "once" => once = true,
            "loop" => once = false,
            _ => match opt
                .strip_prefix("delay=")
                .and_then(|d| d.parse::<f64>().ok())
            {
                Some(d) if (0.0..=60.0).contains(&d) => delay_s = d,
                _ => {
                    return Err(format!(
                        "unknown replay option `{opt}` (once, loop, delay=0-60)"
                    ));
                }
            },
        }
    }
    let (path, fps) = match rest.rsplit_once('@') {
        Some((p, f)) => (
            p,
            f.parse::<f64>()
                .ok()
                .filter(|f| (0.1..=240.0).contains(f))
                .ok_or(format!("bad frame rate `{f}` (0.1-240)"))?,
        ),
        None => (rest, DEFAULT_REPLAY_FPS),
    };
    if path.is_empty() {
        return Err("replay needs a folder of frames or an .mjpeg file".into());
    }
    Ok(SourceSpec::Replay {
        path: PathBuf::from(path),
        fps,
        once,
        delay_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_defaults_names_and_clear_errors() {
        let c = CameraSpec::parse("v4l:/dev/video2:1280x720@30", 0).unwrap();
        assert_eq!(c.id, "cam0");
        assert_eq!(
            c.source,
            SourceSpec::V4l2 {
                path: "/dev/video2".into(),
                width: 1280,
                height: 720,
                fps: 30
            }
        );
        let c = CameraSpec::parse("front=v4l:/dev/video0", 3).unwrap();
        assert_eq!(c.id, "front");
        assert_eq!(c.source.describe(), "v4l:/dev/video0:640x480@15");
        let c = CameraSpec::parse("replay:/data/clip@30,once,delay=1.5", 1).unwrap();
        assert_eq!(
            c.source,
            SourceSpec::Replay {
                path: "/data/clip".into(),
                fps: 30.0,
                once: true,
                delay_s: 1.5,
            }
        );
        let c = CameraSpec::parse("replay:/data/a.mjpeg", 1).unwrap();
        assert_eq!(c.id, "cam1");
        assert_eq!(c.source.describe(), "replay:/data/a.mjpeg@10");
        for bad in [
            "usb:/dev/video0",
            "v4l:video0",
            "v4l:/dev/video0:640x@30",
            "v4l:/dev/video0@0",
            "replay:",
            "replay:/x@fast",
            "replay:/x,twice",
            "replay:/x,delay=99",
            "bad name=replay:/x",
        ] {
            let e = CameraSpec::parse(bad, 0).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
