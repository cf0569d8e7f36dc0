//! A real headless Chromium (Debian's `chromium`), driven over the DevTools
//! protocol: open a page, evaluate JavaScript in it, take a screenshot.
//! Started in its own process group with a fresh profile, no network of its
//! own (no first-run, sync, component updates or background fetches), and
//! stopped by that group's id on drop.

use serde_json::{json, Value};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

pub const CHROMIUM: &str = "/usr/bin/chromium";

pub struct Chromium {
    child: Child,
    socket: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// A browser with one tab showing `url`, 1280 × 1000.
    pub fn open(url: &str) -> Chromium {
        assert!(Path::new(CHROMIUM).exists(), "{CHROMIUM} is missing: `make test` installs Debian's chromium (`make test-deps`)");
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox", // root in CI
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--window-size=1280,1000",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromium");
        // Chromium writes its DevTools port and browser path once it listens.
        let active_port = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let (port, path) = loop {
            if let Ok(text) = std::fs::read_to_string(&active_port) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break (port.parse::<u16>().unwrap(), path.to_string());
                }
            }
            assert!(Instant::now() < deadline, "chromium did not open its DevTools port within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        };
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let (socket, _) = tungstenite::client(format!("ws://127.0.0.1:{port}{path}"), stream).expect("DevTools websocket");
        let mut browser = Chromium { child, socket, session: String::new(), next_id: 0, _profile: profile };
        let target = browser.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let attached = browser.call(None, "Target.attachToTarget", json!({ "targetId": target["targetId"], "flatten": true }));
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        browser.page("Page.navigate", json!({ "url": url }));
        browser
    }

    /// One DevTools command (on the page's session, or the browser's): its result.
    fn call(&mut self, session: Option<String>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        self.socket.send(Message::text(command.to_string())).unwrap();
        loop {
            let message = self.socket.read().unwrap_or_else(|e| panic!("DevTools {method}: {e}"));
            let Ok(text) = message.to_text() else { continue };
            let Ok(reply) = serde_json::from_str::<Value>(text) else { continue };
            if reply["id"].as_u64() == Some(id) {
                assert!(reply["error"].is_null(), "DevTools {method}: {}", reply["error"]);
                return reply["result"].clone();
            }
        }
    }

    fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(Some(session), method, params)
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    pub fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression).unwrap_or_else(|exception| panic!("{expression}: {exception}"))
    }

    fn try_eval(&mut self, expression: &str) -> Result<Value, Value> {
        let result = self.page("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }));
        match result["exceptionDetails"].is_null() {
            true => Ok(result["result"]["value"].clone()),
            false => Err(result["exceptionDetails"]["exception"]["description"].clone()),
        }
    }

    /// Evaluates `expression` every 200 ms until `done` holds of its value,
    /// or panics after `timeout`. An exception (the page not there yet) is
    /// one more "not yet".
    pub fn wait_for(&mut self, timeout: Duration, what: &str, expression: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.try_eval(expression);
            if let Ok(value) = &value {
                if done(value) {
                    return value.clone();
                }
            }
            assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}; last {expression} = {value:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A mouse event at page coordinates (`mouseMoved`, `mousePressed`, `mouseReleased`; left button).
    pub fn mouse(&mut self, kind: &str, x: f64, y: f64) {
        let button = if kind == "mouseMoved" { "none" } else { "left" };
        self.page("Input.dispatchMouseEvent", json!({ "type": kind, "x": x, "y": y, "button": button, "clickCount": 1 }));
    }

    /// A PNG of what the tab shows.
    pub fn screenshot(&mut self) -> Vec<u8> {
        let shot = self.page("Page.captureScreenshot", json!({ "format": "png" }));
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        self.next_id += 1;
        let _ = self.socket.send(Message::text(json!({ "id": self.next_id, "method": "Browser.close" }).to_string()));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Its renderers and helpers are in its process group: stop them all.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}
