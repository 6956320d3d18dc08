//! `facegate cameras`: the V4L2 capture devices, their formats, sizes and rates, and the format
//! facegate would choose.

use std::io::Write as _;

use serde_json::json;

use crate::camera::v4l2::{DeviceInfo, list_devices};

fn fourcc(f: &[u8; 4]) -> String {
    String::from_utf8_lossy(f).into_owned()
}

pub fn run(json_out: bool) -> anyhow::Result<()> {
    let devices = list_devices();
    let mut out = std::io::stdout().lock();
    if json_out {
        let list: Vec<_> = devices.iter().map(device_json).collect();
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json!({"devices": list}))?
        )?;
        return Ok(());
    }
    if devices.is_empty() {
        writeln!(out, "no V4L2 capture device found (none under /dev/video*)")?;
        return Ok(());
    }
    for d in &devices {
        writeln!(out, "{}  {} ({})", d.path.display(), d.name, d.driver)?;
        for o in &d.offers {
            writeln!(out, "  {} {}", fourcc(&o.fourcc), o.description)?;
            for (w, h, rates) in &o.sizes {
                let r: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
                writeln!(
                    out,
                    "    {w}x{h} @ {} fps",
                    if r.is_empty() {
                        "?".into()
                    } else {
                        r.join("/")
                    }
                )?;
            }
        }
        match d.chosen {
            Some((f, w, h)) => writeln!(out, "  facegate uses: {} {w}x{h}", fourcc(&f))?,
            None => writeln!(out, "  facegate cannot use it: no MJPG or YUYV format")?,
        }
    }
    Ok(())
}

fn device_json(d: &DeviceInfo) -> serde_json::Value {
    json!({
        "path": d.path,
        "name": d.name,
        "driver": d.driver,
        "formats": d.offers.iter().map(|o| json!({
            "fourcc": fourcc(&o.fourcc),
            "description": o.description,
            "sizes": o.sizes.iter().map(|(w, h, r)| json!({"width": w, "height": h, "fps": r})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "chosen": d.chosen.map(|(f, w, h)| json!({"fourcc": fourcc(&f), "width": w, "height": h})),
    })
}
