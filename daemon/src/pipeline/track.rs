//! Face tracking across frames: greedy association by box overlap (IoU), then by centre
//! distance for fast movers, so per-person state (blinks, motion, samples) survives frames.
//!
//! Invariant: a track id is never reused; a track unseen for more than `max_missed` frames
//! is dropped, and a face that matches no live track starts a new one.

use super::detect::{Face, iou};

#[derive(Debug, Clone)]
struct Slot {
    id: u64,
    bbox: [f32; 4],
    missed: u32,
}

#[derive(Debug)]
pub struct Tracker {
    next_id: u64,
    slots: Vec<Slot>,
    max_missed: u32,
}

/// One face of the current frame and the track it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    pub face: usize,
    pub track: u64,
    pub new: bool,
}

impl Tracker {
    pub fn new(max_missed: u32) -> Tracker {
        Tracker {
            next_id: 1,
            slots: Vec::new(),
            max_missed,
        }
    }

    /// Associates this frame's faces with tracks; returns one assignment per face and the
    /// ids of the tracks dropped in this frame.
    pub fn update(&mut self, faces: &[Face]) -> (Vec<Assignment>, Vec<u64>) {
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (fi, f) in faces.iter().enumerate() {
            for (si, s) in self.slots.iter().enumerate() {
                let overlap = iou(&f.bbox, &s.bbox);
                let score = if overlap >= 0.3 {
                    1.0 + overlap
                } else {
                    // Centre distance in units of the track's box width.
                    let c = |b: &[f32; 4]| [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0];
                    let (a, b) = (c(&f.bbox), c(&s.bbox));
                    let w = (s.bbox[2] - s.bbox[0]).max(1.0);
                    let d = (a[0] - b[0]).hypot(a[1] - b[1]) / w;
                    let size = f.width() / w;
                    if d < 0.6 && (0.66..1.5).contains(&size) {
                        1.0 - d
                    } else {
                        continue;
                    }
                };
                pairs.push((score, fi, si));
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut face_track = vec![None; faces.len()];
        let mut slot_used = vec![false; self.slots.len()];
        for (_, fi, si) in pairs {
            if face_track[fi].is_none() && !slot_used[si] {
                face_track[fi] = Some(si);
                slot_used[si] = true;
            }
        }
        let mut out = Vec::with_capacity(faces.len());
        for (si, used) in slot_used.iter().enumerate() {
            if !used {
                self.slots[si].missed += 1;
            }
        }
        for (fi, f) in faces.iter().enumerate() {
            match face_track[fi] {
                Some(si) => {
                    let s = &mut self.slots[si];
                    s.bbox = f.bbox;
                    s.missed = 0;
                    out.push(Assignment {
                        face: fi,
                        track: s.id,
                        new: false,
                    });
                }
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.slots.push(Slot {
                        id,
                        bbox: f.bbox,
                        missed: 0,
                    });
                    out.push(Assignment {
                        face: fi,
                        track: id,
                        new: true,
                    });
                }
            }
        }
        let max_missed = self.max_missed;
        let dropped = self
            .slots
            .iter()
            .filter(|s| s.missed > max_missed)
            .map(|s| s.id)
            .collect();
        self.slots.retain(|s| s.missed <= max_missed);
        (out, dropped)
    }

    /// Every live track's id, last box and frames missed since.
    pub fn tracks(&self) -> impl Iterator<Item = (u64, [f32; 4], u32)> + '_ {
        self.slots.iter().map(|s| (s.id, s.bbox, s.missed))
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(x: f32, y: f32, w: f32) -> Face {
        Face {
            bbox: [x, y, x + w, y + w],
            score: 0.9,
            landmarks: [[0.0; 2]; 5],
        }
    }

    #[test]
    fn two_people_keep_their_tracks_and_a_lost_track_is_not_reused() {
        let mut t = Tracker::new(2);
        let (a, _) = t.update(&[face(0.0, 0.0, 100.0), face(300.0, 0.0, 100.0)]);
        assert_eq!(a.iter().filter(|x| x.new).count(), 2);
        // They move; listed in the other order.
        let (b, _) = t.update(&[face(310.0, 5.0, 100.0), face(12.0, 3.0, 100.0)]);
        assert_eq!(b[0].track, a[1].track);
        assert_eq!(b[1].track, a[0].track);
        // A fast mover (no overlap) within 0.6 widths keeps its track.
        let (c, _) = t.update(&[face(60.0, 3.0, 100.0)]);
        assert_eq!(c[0].track, a[0].track);
        // The second person is gone for 3 frames: dropped, and their return is a new track.
        t.update(&[face(60.0, 3.0, 100.0)]);
        let (_, dropped) = t.update(&[face(60.0, 3.0, 100.0)]);
        assert_eq!(dropped, vec![a[1].track]);
        let (d, _) = t.update(&[face(60.0, 3.0, 100.0), face(310.0, 5.0, 100.0)]);
        assert!(d[1].new && d[1].track > a[1].track);
    }
}
