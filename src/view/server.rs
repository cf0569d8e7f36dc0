//! The HTTP server of the installer's page: the page itself, `/state.json`,
//! and each camera's newest frame as a JPEG or an MJPEG stream, all read
//! from the [`ViewHub`]. With a token, every route needs it (header or
//! `?token=`, so that an `<img>` can carry it).

use super::connections::{BoundedListener, IDLE, MAX_CONNECTIONS};
use super::hub::{Frame, ViewHub};
use crate::util::shutdown::Shutdown;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// The page: plain HTML and JS, no external resources. The part between
/// the camera markers is repeated for each camera, `CAMERA_ID` replaced.
const PAGE: &str = include_str!("page.html");
const CAMERA_START: &str = "<!--camera-->";
const CAMERA_END: &str = "<!--/camera-->";

const BOUNDARY: &str = "cctv-frame";

/// How long streams still being written to slow clients may hold up the
/// stop once shutdown is triggered.
const GRACE: Duration = Duration::from_secs(2);
/// A stream with no new picture for this long sends the newest one again
/// (well inside the connection's idle limit, [`IDLE`]).
pub const STREAM_KEEPALIVE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The listener failed for good (axum retries passing accept errors itself).
    #[error("the view page's server stopped: {0}")]
    Serve(#[source] std::io::Error),
}

#[derive(Clone)]
struct AppState {
    hub: Arc<ViewHub>,
    /// SHA-256 of the token: compared digest to digest, so neither the
    /// time taken nor an early exit tells a guess's length or prefix.
    token: Option<[u8; 32]>,
    page: Arc<str>,
}

/// Serves the page on `listener` until `shutdown` triggers, then stops
/// taking connections, ends every stream, and returns within [`GRACE`].
/// At most [`MAX_CONNECTIONS`] connections at once, each closed after
/// [`IDLE`] without a byte either way.
pub async fn serve(listener: tokio::net::TcpListener, hub: Arc<ViewHub>, token: Option<String>, shutdown: Shutdown) -> Result<(), ViewError> {
    serve_bounded(BoundedListener::new(listener, MAX_CONNECTIONS, IDLE), hub, token, shutdown).await
}

/// [`serve`] with other bounds (tests use small ones).
pub async fn serve_bounded(listener: BoundedListener, hub: Arc<ViewHub>, token: Option<String>, shutdown: Shutdown) -> Result<(), ViewError> {
    let state = AppState { page: render_page(hub.cameras()).into(), hub, token: token.map(|t| digest(&t)) };
    let app = router(state, shutdown.clone());
    let stopping = shutdown.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move { stopping.wait().await });
    tokio::select! {
        result = std::future::IntoFuture::into_future(server) => result.map_err(ViewError::Serve),
        _ = async { shutdown.wait().await; tokio::time::sleep(GRACE).await } => {
            tracing::warn!("view: a client still reading after shutdown was cut off");
            Ok(())
        }
    }
}

fn router(state: AppState, shutdown: Shutdown) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/state.json", get(state_json))
        .route("/cameras/{file}", get(move |state, path| camera(state, path, shutdown.clone())))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(middleware::map_response(common_headers))
        .with_state(state)
}

/// The page with one block per camera. Camera ids are config-checked
/// (letters, digits, '.', '-', '_'), escaped here all the same.
pub fn render_page(cameras: &[String]) -> String {
    let (Some(start), Some(end)) = (PAGE.find(CAMERA_START), PAGE.find(CAMERA_END)) else {
        return PAGE.to_string();
    };
    let block = &PAGE[start + CAMERA_START.len()..end];
    let blocks: String = cameras.iter().map(|id| block.replace("CAMERA_ID", &escape_html(id))).collect();
    format!("{}{}{}", &PAGE[..start], blocks, &PAGE[end + CAMERA_END.len()..])
}

fn escape_html(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant time: every byte is compared whatever the earlier ones were.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |differ, (x, y)| differ | (x ^ y)) == 0
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.token else { return next.run(request).await };
    let from_header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme's name is case-insensitive (RFC 9110).
        .and_then(|v| v.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")))
        .map(|(_, t)| t.trim().to_string());
    let from_query = axum::extract::Query::<TokenQuery>::try_from_uri(request.uri()).ok().and_then(|q| q.0.token);
    let given = [from_header, from_query];
    // Both are checked, so that a wrong header does not hide a right query (nor tell which was tried).
    let ok = given.iter().flatten().fold(false, |ok, token| ok | same_digest(expected, &digest(token)));
    if ok {
        return next.run(request).await;
    }
    let mut response = (StatusCode::UNAUTHORIZED, "this page needs its token: open it as /?token=<the token in view.token_file>\n").into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Nothing is cached (it is all live), the token in a URL is never sent on
/// as a Referer, and no other site may frame the page.
async fn common_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; img-src 'self'; connect-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
    );
    response
}

async fn page(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], state.page.to_string()).into_response()
}

async fn state_json(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.hub.state_json())
}

async fn camera(State(state): State<AppState>, Path(file): Path<String>, shutdown: Shutdown) -> Response {
    let not_found = |reason: String| (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], reason).into_response();
    let Some((id, kind)) = file.rsplit_once('.') else {
        return not_found(format!("{file}: ask for /cameras/<id>.jpg or /cameras/<id>.mjpg\n"));
    };
    let Some(mut frames) = state.hub.subscribe(id) else {
        return not_found(format!("no camera {id:?} here: the cameras are {}\n", state.hub.cameras().join(", ")));
    };
    match kind {
        "jpg" => match state.hub.latest(id) {
            Some(frame) => {
                let mut headers = HeaderMap::new();
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
                headers.insert("x-frame-index", HeaderValue::from(frame.frame_index));
                (headers, Body::from(jpeg_bytes(&frame))).into_response()
            }
            None => not_found(format!("camera {id:?} has no frame yet: it is opening, or sends none\n")),
        },
        "mjpg" => {
            // The frame there now is sent first: the page shows something at once.
            frames.mark_changed();
            let parts = futures_util::stream::unfold((frames, shutdown), |(mut frames, shutdown)| async move {
                tokio::select! {
                    changed = frames.changed() => changed.ok()?,
                    // Nothing new (a quiet road, a finished file): the same picture
                    // again, so the connection is not idle and the page stays live.
                    _ = tokio::time::sleep(STREAM_KEEPALIVE) => {}
                    _ = shutdown.wait() => return None,
                }
                // borrow_and_update: a client that read slowly gets the newest frame, never a backlog.
                let frame = frames.borrow_and_update().clone();
                let part = match frame {
                    Some(frame) => part(&frame),
                    None => Bytes::new(),
                };
                Some((Ok::<_, std::convert::Infallible>(part), (frames, shutdown)))
            });
            let content_type = format!("multipart/x-mixed-replace; boundary={BOUNDARY}");
            ([(header::CONTENT_TYPE, content_type)], Body::from_stream(parts)).into_response()
        }
        _ => not_found(format!("{file}: ask for /cameras/{id}.jpg or /cameras/{id}.mjpg\n")),
    }
}

/// The frame's bytes without copying them.
fn jpeg_bytes(frame: &Frame) -> Bytes {
    Bytes::from_owner(Jpeg(frame.jpeg.clone()))
}

struct Jpeg(Arc<Vec<u8>>);

impl AsRef<[u8]> for Jpeg {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// One part of the multipart stream: boundary, headers, the JPEG.
fn part(frame: &Frame) -> Bytes {
    let head = format!("--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nX-Frame-Index: {}\r\n\r\n", frame.jpeg.len(), frame.frame_index);
    let mut bytes = Vec::with_capacity(head.len() + frame.jpeg.len() + 2);
    bytes.extend_from_slice(head.as_bytes());
    bytes.extend_from_slice(&frame.jpeg);
    bytes.extend_from_slice(b"\r\n");
    Bytes::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_a_block_per_camera_with_its_ids() {
        let page = render_page(&["north".into(), "south-2".into()]);
        for id in ["north", "south-2"] {
            for element in [format!("id=\"camera-{id}\""), format!("id=\"counts-{id}\"")] {
                assert_eq!(page.matches(&element).count(), 1, "{element}");
            }
        }
        assert!(!page.contains("CAMERA_ID") && !page.contains(CAMERA_START), "every placeholder is filled");
        assert!(page.contains("id=\"model\""));
        assert!(!page.contains("http://") && !page.contains("https://"), "nothing from outside");
    }

    #[test]
    fn ids_are_escaped_and_digests_compare() {
        assert_eq!(escape_html("a\"<b>&'"), "a&quot;&lt;b&gt;&amp;&#39;");
        assert!(same_digest(&digest("t"), &digest("t")));
        assert!(!same_digest(&digest("t"), &digest("u")));
    }

    #[test]
    fn a_part_carries_its_length_and_the_exact_bytes() {
        let frame = Frame { jpeg: Arc::new(vec![0xff, 0xd8, 1, 2]), width: 2, height: 2, frame_index: 9, seq: 1 };
        let part = part(&frame);
        let text = String::from_utf8_lossy(&part);
        assert!(text.starts_with("--cctv-frame\r\nContent-Type: image/jpeg\r\nContent-Length: 4\r\n"), "{text}");
        assert!(part.ends_with(&[0xff, 0xd8, 1, 2, b'\r', b'\n']));
        assert_eq!(jpeg_bytes(&frame).as_ref(), &[0xff, 0xd8, 1, 2]);
    }
}
