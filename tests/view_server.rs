//! The installer's page over real HTTP on loopback: the page, the newest
//! JPEG, the MJPEG stream, the state and the token, against a hub fed with
//! real JPEG frames.

use cctv_agent::util::shutdown::Shutdown;
use cctv_agent::view::hub::ViewHub;
use cctv_agent::view::connections::BoundedListener;
use cctv_agent::view::server::{serve, serve_bounded};
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A server on a free loopback port, stopped (and checked to stop) on drop.
struct Server {
    runtime: tokio::runtime::Runtime,
    base: String,
    shutdown: Shutdown,
    task: Option<tokio::task::JoinHandle<Result<(), cctv_agent::view::server::ViewError>>>,
}

impl Server {
    fn start(hub: Arc<ViewHub>, token: Option<&str>) -> Server {
        Server::start_bounded(hub, token, None)
    }

    /// With `bounds` (connections, idle time): the agent's own otherwise.
    fn start_bounded(hub: Arc<ViewHub>, token: Option<&str>, bounds: Option<(usize, Duration)>) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = Shutdown::new();
        let token = token.map(str::to_string);
        let task = match bounds {
            None => runtime.spawn(serve(listener, hub, token, shutdown.clone())),
            Some((max, idle)) => runtime.spawn(serve_bounded(BoundedListener::new(listener, max, idle), hub, token, shutdown.clone())),
        };
        Server { runtime, base, shutdown, task: Some(task) }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Triggers shutdown and waits for `serve` to return; how long it took.
    fn stop(&mut self) -> Duration {
        let start = Instant::now();
        self.shutdown.trigger();
        if let Some(task) = self.task.take() {
            let result = self.runtime.block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await });
            result.expect("serve returns after shutdown").unwrap().unwrap();
        }
        start.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.task.is_some() {
            self.stop();
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build()
}

/// A real JPEG of a small gradient; `shade` makes frames differ.
fn jpeg(width: u32, height: u32, shade: u8) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, shade]));
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(image).write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Jpeg).unwrap();
    assert_eq!(&bytes[..2], &[0xff, 0xd8]);
    bytes
}

/// (status, content type, body) of a GET, whatever the status.
fn get(agent: &ureq::Agent, url: &str, bearer: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut request = agent.get(url);
    if let Some(token) = bearer {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    let response = match request.call() {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = response.status();
    let content_type = response.header("content-type").unwrap_or_default().to_string();
    let mut body = Vec::new();
    response.into_reader().read_to_end(&mut body).unwrap();
    (status, content_type, body)
}

/// A part's headers (lower-cased names, values) and its body.
type Part = (Vec<(String, String)>, Vec<u8>);

/// The next part of a multipart stream.
fn next_part(reader: &mut impl BufRead) -> Option<Part> {
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line.trim_end() == "--cctv-frame" {
            break;
        }
        assert!(line.trim().is_empty(), "between parts: {line:?}");
    }
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':').unwrap();
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let length: usize = headers.iter().find(|(n, _)| n == "content-length").expect("a part says its length").1.parse().unwrap();
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    Some((headers, body))
}

#[test]
fn the_page_the_newest_jpeg_and_the_state_are_served() {
    let hub = ViewHub::new("pole-17", vec!["north".into(), "south".into()]);
    let server = Server::start(hub.clone(), None);
    let agent = agent();

    let (status, content_type, body) = get(&agent, &server.url("/"), None);
    let page = String::from_utf8(body).unwrap();
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    for id in ["camera-north", "camera-south", "counts-north", "counts-south"] {
        assert!(page.contains(&format!("id=\"{id}\"")), "{id} in the page");
    }
    assert!(page.contains("id=\"model\""));

    let (status, content_type, body) = get(&agent, &server.url("/cameras/north.jpg"), None);
    assert_eq!((status, content_type.as_str()), (404, "text/plain; charset=utf-8"));
    assert!(String::from_utf8(body).unwrap().contains("no frame yet"));
    let (status, _, body) = get(&agent, &server.url("/cameras/east.jpg"), None);
    assert_eq!(status, 404);
    assert!(String::from_utf8(body).unwrap().contains("no camera \"east\""));

    let frame = jpeg(64, 48, 10);
    hub.offer_frame("north", frame.clone(), 64, 48, 7);
    let (status, content_type, body) = get(&agent, &server.url("/cameras/north.jpg"), None);
    assert_eq!((status, content_type.as_str()), (200, "image/jpeg"));
    assert_eq!(body, frame, "the exact bytes offered");
    image::load_from_memory(&body).expect("a JPEG a browser can show");

    let identity = cctv_agent::wire::ModelIdentity { name: "vehicle-classifier".into(), version: "3".into(), sha256: String::new() };
    hub.follow_model(std::sync::Arc::new(std::sync::RwLock::new(identity)));
    hub.count_vehicle("north", Some("east-1"), "car");
    hub.count_vehicle("north", Some("east-1"), "car");
    hub.count_vehicle("north", None, "truck");
    let (status, content_type, body) = get(&agent, &server.url("/state.json"), None);
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    let state: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(state["device"], "pole-17");
    assert_eq!(state["model"], serde_json::json!({"name": "vehicle-classifier", "version": "3"}));
    let north = &state["cameras"][0];
    assert_eq!((north["id"].as_str(), north["frame_index"].as_u64(), north["width"].as_u64(), north["height"].as_u64()), (Some("north"), Some(7), Some(64), Some(48)));
    assert_eq!(north["total"], 3);
    assert_eq!(
        north["counts"],
        serde_json::json!([{"lane": null, "class": "truck", "count": 1}, {"lane": "east-1", "class": "car", "count": 2}])
    );
    assert_eq!(state["cameras"][1]["total"], 0);
}

#[test]
fn the_stream_sends_each_new_frame_and_ends_at_shutdown() {
    let hub = ViewHub::new("pole-17", vec!["north".into()]);
    let mut server = Server::start(hub.clone(), None);
    let (first, second) = (jpeg(64, 48, 10), jpeg(64, 48, 200));
    assert_ne!(first, second);
    hub.offer_frame("north", first.clone(), 64, 48, 1);

    let response = agent().get(&server.url("/cameras/north.mjpg")).call().unwrap();
    assert_eq!(response.header("content-type"), Some("multipart/x-mixed-replace; boundary=cctv-frame"));
    let mut reader = BufReader::new(response.into_reader());
    let (headers, body) = next_part(&mut reader).expect("the frame there is sent at once");
    assert!(headers.contains(&("content-type".into(), "image/jpeg".into())), "{headers:?}");
    assert_eq!(body, first);

    hub.offer_frame("north", second.clone(), 64, 48, 2);
    let (_, body) = next_part(&mut reader).expect("a new frame wakes the stream");
    assert_eq!(body, second);

    // Shutdown ends the stream (the client sees its end) and the server returns promptly.
    let took = server.stop();
    assert!(took < Duration::from_secs(5), "stopped in {took:?}");
    assert!(next_part(&mut reader).is_none(), "the stream ended");
}

#[test]
fn a_slow_stream_client_skips_to_the_newest_frame() {
    let hub = ViewHub::new("pole-17", vec!["north".into()]);
    let server = Server::start(hub.clone(), None);
    hub.offer_frame("north", jpeg(32, 32, 0), 32, 32, 0);
    let response = agent().get(&server.url("/cameras/north.mjpg")).call().unwrap();
    let mut reader = BufReader::new(response.into_reader());
    next_part(&mut reader).unwrap();
    // 100 frames of 1 MiB while the client reads nothing: the socket buffers
    // fill after a few, and the stream then waits with the newest frame only,
    // not a backlog (which would be 100 MiB here).
    const OFFERED: u64 = 100;
    for i in 1..=OFFERED {
        hub.offer_frame("north", vec![i as u8; 1 << 20], 32, 32, i);
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut parts = 0;
    loop {
        let (headers, body) = next_part(&mut reader).expect("the stream goes on");
        parts += 1;
        if headers.contains(&("x-frame-index".into(), OFFERED.to_string())) {
            assert_eq!(body, vec![OFFERED as u8; 1 << 20]);
            break;
        }
    }
    assert!(parts < 40, "{parts} of {OFFERED} frames sent to a client that did not read: a backlog");
}

#[test]
fn with_a_token_every_route_needs_it_in_the_header_or_the_query() {
    let hub = ViewHub::new("pole-17", vec!["north".into()]);
    hub.offer_frame("north", jpeg(16, 16, 1), 16, 16, 1);
    let server = Server::start(hub, Some("s3cret-token"));
    let agent = agent();
    for path in ["/", "/state.json", "/cameras/north.jpg", "/cameras/north.mjpg", "/nothing-here"] {
        let response = match agent.get(&server.url(path)).call() {
            Err(ureq::Error::Status(401, response)) => response,
            other => panic!("{path} without the token: {:?}", other.map(|r| r.status())),
        };
        assert_eq!(response.header("www-authenticate"), Some("Bearer"), "{path}");
        assert_eq!(get(&agent, &server.url(path), Some("wrong-token")).0, 401, "{path} with a wrong token");
        assert_eq!(get(&agent, &server.url(&format!("{path}?token=s3cret-tokenX")), None).0, 401, "{path} with a longer token");
    }
    for path in ["/", "/state.json", "/cameras/north.jpg"] {
        assert_eq!(get(&agent, &server.url(path), Some("s3cret-token")).0, 200, "{path} with the header");
        assert_eq!(get(&agent, &server.url(&format!("{path}?token=s3cret-token")), None).0, 200, "{path} with the query");
    }
    let lower = agent.get(&server.url("/state.json")).set("Authorization", "bearer s3cret-token").call().unwrap();
    assert_eq!(lower.status(), 200, "the scheme's name in any case");
    // The page's stream URL carries the token and a cache-buster in its query.
    let response = agent.get(&server.url("/cameras/north.mjpg?t=1&token=s3cret-token")).call().unwrap();
    assert_eq!(response.status(), 200);
    let mut reader = BufReader::new(response.into_reader());
    assert!(next_part(&mut reader).is_some());
}

/// Found by attacking: 1,100 connections that sent nothing used up the
/// agent's file handles (its counts journal and samples could not be
/// written), and half-sent requests stayed open, token or not.
#[test]
fn connections_are_capped_and_a_silent_one_is_closed() {
    let hub = ViewHub::new("pole-1", vec!["road".into()]);
    let server = Server::start_bounded(hub, Some("s3cret"), Some((4, Duration::from_secs(1))));
    let address = server.base.trim_start_matches("http://").to_string();
    // Four clients send half a request and wait: every slot is taken.
    let mut silent: Vec<std::net::TcpStream> = (0..4)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&address).unwrap();
            std::io::Write::write_all(&mut s, b"GET /state.json HTTP/1.1\r\nHost: x\r\n").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // A fifth waits in the backlog: it is answered once the silent ones are closed, not refused.
    let started = Instant::now();
    let (status, _, _) = get(&agent(), &server.url("/state.json"), Some("s3cret"));
    let waited = started.elapsed();
    assert_eq!(status, 200);
    assert!(waited >= Duration::from_millis(500), "the fifth connection waited for a slot: {waited:?}");
    // The silent ones were closed by the server after ~1 s without a byte.
    for s in &mut silent {
        let mut buffer = [0u8; 256];
        let n = s.read(&mut buffer).unwrap_or(0);
        assert!(n == 0 || String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 408") || String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 400"), "closed: {:?}", String::from_utf8_lossy(&buffer[..n]));
    }
    println!("the fifth request was answered after {waited:?}");
}

/// Found in review: a stream with no new picture (a quiet road, a finished
/// file) wrote nothing and was closed as idle. It sends its newest picture
/// again instead, and stays open past the idle limit.
#[test]
fn a_stream_without_new_pictures_repeats_the_newest_and_stays_open() {
    let hub = ViewHub::new("pole-17", vec!["north".into()]);
    let idle = Duration::from_secs(12);
    let server = Server::start_bounded(hub.clone(), None, Some((4, idle)));
    let picture = jpeg(64, 48, 10);
    hub.offer_frame("north", picture.clone(), 64, 48, 7);
    let response = agent().get(&server.url("/cameras/north.mjpg")).timeout(Duration::from_secs(60)).call().unwrap();
    let mut reader = BufReader::new(response.into_reader());
    assert_eq!(next_part(&mut reader).expect("the picture there, at once").1, picture);
    let started = Instant::now();
    for _ in 0..2 {
        let (headers, body) = next_part(&mut reader).expect("the same picture again, the stream still open");
        assert_eq!(body, picture);
        assert!(headers.contains(&("x-frame-index".into(), "7".into())), "{headers:?}");
    }
    let took = started.elapsed();
    assert!(took > idle, "open past the idle limit: {took:?}");
    assert!(took < Duration::from_secs(30), "repeated every ~10 s: {took:?}");
}
