//! The kiosk page at `/`: static files embedded in the binary (no CDN, no build step), served
//! with a strict Content-Security-Policy. The page talks to the public API only.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("kiosk/index.html");
const SCRIPT: &str = include_str!("kiosk/kiosk.js");
const STYLE: &str = include_str!("kiosk/kiosk.css");

/// Same-origin everything; images may be the MJPEG stream; no inline script, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

pub async fn script() -> Response {
    file("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> Response {
    file("text/css; charset=utf-8", STYLE)
}
