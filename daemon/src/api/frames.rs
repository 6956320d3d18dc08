//! The wire form of a session's frame results: one JSON body per frame, the same for REST and
//! WebSocket (every reply carries the whole progress payload: the reference README's fields and
//! the WebSocket guide's), and the WebSocket message type for each client dialect.
//!
//! Invariant: one frame gives exactly one body; the WebSocket reply is that body with a `type`
//! chosen by `Dialect::message_type`, so no information depends on which message was sent.

use serde_json::{Value, json};

use crate::sessions::{Ending, FrameResult, Progress};

/// The client's spelling of the protocol, from the frames it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `{type:"process_frame", frame_data}`: the service README (`000_*`) and the auth-service
    /// module (`003_*`): `enrollment_progress`, `enrollment_complete`, `authentication_result`.
    Readme,
    /// `{type:"frame", image}` or binary JPEG: the WebSocket guide (`002_*`): `frame_processed`,
    /// `frame_rejected`, `enrollment_complete`, `authentication_complete`.
    Guide,
}

impl Dialect {
    /// The one message type for this frame: the completion, else a rejection, else an
    /// instruction when it changed since the last one sent (`last_instruction`), else progress.
    pub fn message_type(
        self,
        session_kind: &str,
        r: &FrameResult,
        last_instruction: &mut Option<&'static str>,
    ) -> &'static str {
        let enrollment = session_kind == "enrollment";
        if r.done() {
            return match (enrollment, self) {
                (true, _) => "enrollment_complete",
                (false, Dialect::Readme) => "authentication_result",
                (false, Dialect::Guide) => "authentication_complete",
            };
        }
        let p = &r.progress;
        if p.face.is_none() || p.rejection.is_some() {
            return "frame_rejected";
        }
        let instruction = p.instruction.map(|i| i.instruction);
        if instruction.is_some() && instruction != *last_instruction {
            *last_instruction = instruction;
            return "liveness_instruction";
        }
        *last_instruction = instruction;
        match (enrollment, self) {
            (true, Dialect::Readme) => "enrollment_progress",
            _ => "frame_processed",
        }
    }
}

fn progress_fields(p: &Progress) -> Value {
    let f = p.face.as_ref();
    let blinks = f.map_or(0, |f| f.blinks);
    let motion = f.map_or(0, |f| f.motion_events);
    let obstacles = f.map_or(Vec::new(), |f| f.obstacles.clone());
    let liveness_score = f.map_or(0.5, |f| f.liveness_score);
    let quality = f.map_or(0.0, |f| f.quality);
    json!({
        "completed_samples": p.completed_samples,
        "frames_processed": p.frames_processed,
        "target_samples": p.target_samples,
        "min_frames_required": p.target_samples,
        "quality_score": quality,
        "quality_threshold": p.quality_threshold,
        "face_detected": f.is_some(),
        "liveness_data": {
            "blinks_detected": blinks,
            "motion_events": motion,
            "motion_score": (motion as f32).min(1.0),
            "liveness_passed": p.liveness_passed,
            "liveness_score": liveness_score,
            "ear": f.and_then(|f| f.eyelid_ratio),
        },
        "liveness_score": liveness_score,
        "liveness_verified": p.liveness_passed,
        "blinks_detected": blinks,
        "blinks_required": p.blinks_required,
        "blinks_ok": blinks >= p.blinks_required,
        "motion_events": motion,
        "motion_required": p.motion_required,
        "motion_ok": motion >= p.motion_required,
        "no_obstacles": obstacles.is_empty(),
        "obstacles": obstacles,
        "obstacle_confidence": f.map_or(0.0, |f| f.obstacle_confidence),
        "face_bbox": f.map(|f| f.bbox),
        "visual_data": {
            "face_bbox": f.map(|f| f.bbox),
            "liveness_indicators": {
                "ear": f.and_then(|f| f.eyelid_ratio),
                "blinks": blinks,
                "motion_events": motion,
                "frame_counter": p.frames_processed,
            },
        },
        "instruction": p.instruction.map(|i| i.instruction),
        "timeout_seconds": p.instruction.map(|_| 10),
        "message": p.message,
    })
}

/// The body of one frame's reply (REST response, WebSocket message without its `type`).
pub fn body(session_kind: &str, r: &FrameResult) -> Value {
    let mut out = progress_fields(&r.progress);
    let enrollment = session_kind == "enrollment";
    let set = |out: &mut Value, k: &str, v: Value| out[k] = v;
    set(&mut out, "processing_time_ms", json!(r.processing_ms));
    if let Some(reason) = r.progress.rejection {
        set(&mut out, "reason", json!(reason));
    } else if r.progress.face.is_none() {
        set(&mut out, "reason", json!("no_face"));
    }
    match &r.ending {
        None => {
            set(&mut out, "session_status", json!("in_progress"));
            if enrollment {
                set(&mut out, "success", json!(true));
            } else {
                set(&mut out, "success", json!(false));
                set(&mut out, "authenticated", json!(false));
                if out["reason"].is_null() {
                    set(&mut out, "reason", json!("in_progress"));
                }
            }
        }
        Some(Ending::Enrolled {
            enrollment_id,
            user_id,
        }) => {
            set(&mut out, "success", json!(true));
            set(&mut out, "session_status", json!("completed"));
            set(&mut out, "enrollment_id", json!(enrollment_id));
            set(&mut out, "user_id", json!(user_id));
            set(&mut out, "liveness_verified", json!(true));
            set(&mut out, "motion_verified", json!(true));
        }
        Some(Ending::Authenticated {
            user_id,
            enrollment_id,
            confidence,
        }) => {
            let f = r.progress.face.as_ref();
            set(&mut out, "success", json!(true));
            set(&mut out, "authenticated", json!(true));
            set(&mut out, "session_status", json!("completed"));
            set(&mut out, "confidence", json!(confidence));
            set(&mut out, "user_id", json!(user_id));
            set(&mut out, "matched_enrollment_id", json!(enrollment_id));
            set(
                &mut out,
                "liveness_passed",
                json!(r.progress.liveness_passed),
            );
            set(
                &mut out,
                "metadata",
                json!({
                    "face_quality": f.map_or(0.0, |f| f.quality),
                    "liveness_score": f.map_or(0.5, |f| f.liveness_score),
                }),
            );
        }
        Some(Ending::Failed { reason }) => {
            set(&mut out, "success", json!(false));
            set(&mut out, "session_status", json!("failed"));
            set(&mut out, "reason", json!(reason));
            set(&mut out, "confidence", json!(0.0));
            if !enrollment {
                set(&mut out, "authenticated", json!(false));
                set(
                    &mut out,
                    "liveness_passed",
                    json!(r.progress.liveness_passed),
                );
            }
        }
    }
    out
}
