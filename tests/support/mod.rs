//! Test harness: real Mosquitto, a real RTSP server and the real agent
//! binary, each started on a free loopback port and stopped (by PID) on drop.

#![allow(dead_code)]

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod browser;
mod highway;
#[allow(unused_imports)] // each test uses a part
pub use highway::{empty_road, highway_scene, highway_truth};

pub const BIN: &str = env!("CARGO_BIN_EXE_cctv-agent");

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening on {port}: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {port} within 15 s");
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

pub struct Mosquitto {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    _extra: Option<tempfile::TempDir>,
}

/// Mosquitto drops to its own user: let it read these files.
fn make_readable_by_mosquitto(dir: &Path, files: &[&Path]) {
    use std::os::unix::fs::PermissionsExt;
    for f in files {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Self::start_with(|port| format!("listener {port} 127.0.0.1\nallow_anonymous true\n"))
    }

    /// A broker that keeps sessions and queued messages across restarts
    /// (it writes them on SIGTERM).
    pub fn start_persistent() -> Mosquitto {
        let state = tempfile::tempdir().unwrap();
        make_readable_by_mosquitto(state.path(), &[]);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let location = state.path().display().to_string();
        let mut broker = Self::start_with(|port| {
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {location}/\n")
        });
        broker._extra = Some(state);
        broker
    }

    /// SIGTERM and wait: the broker is gone until `restart`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port with the same config (and state).
    pub fn restart(&mut self) {
        self.stop();
        let mut child = Self::spawn(self.dir.path());
        wait_for_port(self.port, "mosquitto", &mut child);
        self.child = Some(child);
    }

    fn spawn(dir: &Path) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("mosquitto.log")).unwrap();
        Command::new("mosquitto").arg("-c").arg(dir.join("mosquitto.conf")).stdout(Stdio::null()).stderr(log).spawn().expect("mosquitto (make deps)")
    }

    /// A broker whose `port` listener speaks TLS with `certs`' server
    /// certificate (and, with `client_certificates`, demands one from
    /// clients), plus a plain listener for test subscribers, whose port is
    /// returned beside the broker.
    pub fn start_tls(certs: &TestCertificates, client_certificates: bool) -> (Mosquitto, u16) {
        let plain = free_port();
        let broker = Self::start_with(|port| {
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {client_certificates}\n\
                 listener {plain} 127.0.0.1\nallow_anonymous true\n",
                certs.ca.display(),
                certs.server_cert.display(),
                certs.server_key.display()
            )
        });
        (broker, plain)
    }

    /// A broker whose `port` listener wants `user`/`password`, plus an
    /// anonymous listener for test subscribers (its port is returned).
    pub fn start_with_password(user: &str, password: &str) -> (Mosquitto, u16) {
        let plain = free_port();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("passwd");
        let made = Command::new("mosquitto_passwd").args(["-b", "-c"]).arg(&file).args([user, password]).output().unwrap();
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        make_readable_by_mosquitto(dir.path(), &[&file]);
        let mut broker = Self::start_with(|port| {
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nlistener {plain} 127.0.0.1\nallow_anonymous true\n",
                file.display()
            )
        });
        broker._extra = Some(dir);
        (broker, plain)
    }

    fn start_with(listeners: impl Fn(u16) -> String) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        let listeners = listeners(port);
        let persistence = if listeners.contains("persistence true") { "" } else { "persistence false\n" };
        std::fs::write(&conf, format!("per_listener_settings true\n{persistence}max_queued_messages 100000\n{listeners}")).unwrap();
        let mut child = Self::spawn(dir.path());
        wait_for_port(port, "mosquitto", &mut child);
        Mosquitto { port, child: Some(child), dir, _extra: None }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            stop(child);
        }
    }
}

/// Debian's docker-registry (CNCF distribution) on a free loopback port,
/// storing in a temporary folder.
pub struct OciRegistry {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl OciRegistry {
    pub fn start() -> OciRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("registry.yml");
        std::fs::write(
            &config,
            format!("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}/data\nhttp:\n  addr: 127.0.0.1:{port}\n", dir.path().display()),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let mut child = Command::new("docker-registry").arg("serve").arg(&config).stdout(Stdio::null()).stderr(log).spawn().expect("docker-registry (make deps)");
        wait_for_port(port, "docker-registry", &mut child);
        OciRegistry { port, child, dir }
    }

    /// The repository URL the agent and the trainer use.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/roadside/vehicle-classifier", self.port)
    }

    /// Where the registry keeps a blob's bytes (to alter them as an attacker would).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join(format!("data/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }
}

impl Drop for OciRegistry {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// A TCP proxy that passes replies at `bytes_per_second`: a slow uplink,
/// so a download is still running when the test kills the agent.
pub struct SlowProxy {
    pub port: u16,
}

impl SlowProxy {
    pub fn start(upstream: u16, bytes_per_second: usize) -> SlowProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let (mut client_read, mut server_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || std::io::copy(&mut client_read, &mut server_write));
                let (mut server_read, mut client_write) = (server, client);
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut buffer = vec![0u8; 16 * 1024];
                    while let Ok(n) = server_read.read(&mut buffer) {
                        if n == 0 || client_write.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_secs_f64(n as f64 / bytes_per_second as f64));
                    }
                    let _ = client_write.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        SlowProxy { port }
    }
}

/// Publishes one QoS 1 message and waits for the broker's acknowledgement.
pub fn publish(port: u16, topic: &str, payload: &[u8]) {
    publish_with(port, topic, payload, false)
}

fn publish_with(port: u16, topic: &str, payload: &[u8], retain: bool) {
    let mut options = MqttOptions::new(format!("test-pub-{}", free_port()), "127.0.0.1", port);
    options.set_max_packet_size(8 << 20, 8 << 20);
    let (client, mut connection) = Client::new(options, 10);
    client.publish(topic, QoS::AtLeastOnce, retain, payload.to_vec()).unwrap();
    for event in connection.iter() {
        match event {
            Ok(Event::Incoming(Packet::PubAck(_))) => break,
            Ok(_) => {}
            Err(error) => panic!("publishing to {topic}: {error}"),
        }
    }
    let _ = client.disconnect();
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client
/// certificate it signed, and an unrelated CA; made with openssl.
pub struct TestCertificates {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCertificates {
    pub fn new() -> TestCertificates {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(dir.path()).output().expect("openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        for ca in ["ca", "other-ca"] {
            openssl(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &format!("/CN=cctv test {ca}"), "-keyout", &format!("{ca}.key"), "-out", &format!("{ca}.pem")]);
        }
        std::fs::write(p("server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        std::fs::write(p("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (name, cn) in [("server", "localhost"), ("client", "pole-17")] {
            openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", &format!("/CN={cn}"), "-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr")]);
            openssl(&["x509", "-req", "-in", &format!("{name}.csr"), "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", &format!("{name}.ext"), "-out", &format!("{name}.pem")]);
        }
        let files: Vec<PathBuf> = ["ca.pem", "server.pem", "server.key"].iter().map(|f| p(f)).collect();
        make_readable_by_mosquitto(dir.path(), &files.iter().map(PathBuf::as_path).collect::<Vec<_>>());
        TestCertificates {
            ca: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
            other_ca: p("other-ca.pem"),
            _dir: dir,
        }
    }
}

pub struct RtspServer {
    pub port: u16,
    child: Child,
}

impl RtspServer {
    pub fn serve(file: &Path) -> RtspServer {
        Self::serve_on(free_port(), file)
    }

    /// Serves on a given port (to bring a killed camera back where it was).
    pub fn serve_on(port: u16, file: &Path) -> RtspServer {
        let mut child = Command::new("/usr/bin/python3")
            .arg(repo("tests/support/rtsp_server.py"))
            .arg(port.to_string())
            .arg(file)
            .stdout(Stdio::null())
            .spawn()
            .expect("Debian's python3 with gi (make deps)");
        wait_for_port(port, "RTSP server", &mut child);
        RtspServer { port, child }
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }

    /// SIGSTOP / SIGCONT: a camera that freezes without closing its connections.
    pub fn freeze(&self, frozen: bool) {
        let signal = if frozen { "-STOP" } else { "-CONT" };
        Command::new("kill").arg(signal).arg(self.child.id().to_string()).status().unwrap();
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// One MQTT message as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub topic: String,
    pub payload: Value,
    pub retain: bool,
    pub at: Instant,
}

/// Subscribes before returning, then collects every message in the background.
pub struct Subscriber {
    messages: Arc<Mutex<Vec<Received>>>,
}

impl Subscriber {
    pub fn start(port: u16, filter: &str) -> Subscriber {
        Self::connect(port, filter, &format!("test-sub-{}", free_port()), true)
    }

    /// A persistent QoS 1 session (clean_session = false) that reconnects
    /// by itself: the broker keeps what arrives while it is away.
    pub fn start_persistent(port: u16, filter: &str, client_id: &str) -> Subscriber {
        Self::connect(port, filter, client_id, false)
    }

    fn connect(port: u16, filter: &str, client_id: &str, clean_session: bool) -> Subscriber {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_clean_session(clean_session);
        options.set_max_packet_size(1 << 20, 1 << 20);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut connection) = Client::new(options, 100);
        client.subscribe(filter, QoS::AtLeastOnce).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sink = messages.clone();
        std::thread::spawn(move || {
            let _client = client; // keeps the connection open
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let payload = serde_json::from_slice(&p.payload)
                            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&p.payload).into()));
                        sink.lock().unwrap().push(Received { topic: p.topic.clone(), payload, retain: p.retain, at: Instant::now() });
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).expect("subscription acknowledged");
        Subscriber { messages }
    }

    pub fn all(&self) -> Vec<Received> {
        self.messages.lock().unwrap().clone()
    }

    pub fn on(&self, suffix: &str) -> Vec<Received> {
        self.all().into_iter().filter(|m| m.topic.ends_with(suffix)).collect()
    }

    /// Payloads of `…/events` of one kind.
    pub fn events(&self, kind: &str) -> Vec<Value> {
        self.on("/events").into_iter().map(|m| m.payload).filter(|e| e["kind"] == kind).collect()
    }

    /// Payloads of `…/cmd/<command>/reply`.
    pub fn replies(&self, command: &str) -> Vec<Value> {
        self.on(&format!("/cmd/{command}/reply")).into_iter().map(|m| m.payload).collect()
    }

    /// Every `seq` received (predictions and events share it) runs from the
    /// first to the last without a gap.
    pub fn assert_seq_gapless(&self) {
        let seqs: std::collections::BTreeSet<u64> = self.all().iter().filter_map(|m| m.payload["seq"].as_u64()).collect();
        let (first, last) = (*seqs.first().expect("numbered messages"), *seqs.last().unwrap());
        assert_eq!(seqs.len() as u64, last - first + 1, "seq has gaps between {first} and {last}");
    }

    /// Waits until `done` holds for what was received; panics after `timeout`.
    pub fn wait_until(&self, timeout: Duration, what: &str, done: impl Fn(&[Received]) -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if done(&self.all()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let topics: Vec<String> = self.all().iter().map(|m| m.topic.clone()).collect();
        panic!("timed out after {timeout:?} waiting for {what}; received {} messages: {:?}", topics.len(), topics.iter().rev().take(5).collect::<Vec<_>>());
    }
}

/// The agent binary running `run --config` on a config written for the test.
pub struct Agent {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    log: PathBuf,
}

impl Agent {
    pub fn start(config: &str) -> Agent {
        Self::start_in(tempfile::tempdir().unwrap(), config)
    }

    /// Starts with extra environment variables (e.g. systemd's NOTIFY_SOCKET).
    pub fn start_with_env(config: &str, env: &[(&str, String)]) -> Agent {
        Self::spawn(tempfile::tempdir().unwrap(), config, env)
    }

    /// Starts in `dir` (kept across restarts, so the state folder is too).
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Agent {
        Self::spawn(dir, config, &[])
    }

    fn spawn(dir: tempfile::TempDir, config: &str, env: &[(&str, String)]) -> Agent {
        let config_path = dir.path().join("agent.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join(format!("agent-{}.log", free_port()));
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config_path)
            .env("CCTV_LOG", "info")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child: Some(child), dir, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident memory of the running agent, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let pid = self.child.as_ref().expect("agent running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap();
        kib * 1024
    }

    /// Waits until the log contains `text` `count` times; panics with the log after `timeout`.
    pub fn wait_for_log(&self, text: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().matches(text).count() >= count {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("agent log did not show {text:?} {count} times within {timeout:?}:\n{}", self.log());
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// SIGTERM, then the exit status (panics if it takes over 15 s).
    pub fn terminate(&mut self) -> ExitStatus {
        let child = self.child.take().expect("agent running");
        Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
        self.wait_for_exit(child, Duration::from_secs(15), "SIGTERM")
    }

    /// The exit status, or a panic with the log if it takes longer than `limit`.
    fn wait_for_exit(&self, mut child: Child, limit: Duration, after: &str) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                stop(&mut child);
                panic!("agent did not exit within {limit:?} of {after}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Two SIGTERMs back to back; the exit status.
    pub fn signal_twice(&mut self) -> ExitStatus {
        let child = self.child.take().expect("agent running");
        for _ in 0..2 {
            Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        self.wait_for_exit(child, Duration::from_secs(5), "a second signal")
    }

    /// SIGKILL: no chance to clean up, as in a power cut or OOM kill.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("agent running");
        stop(&mut child);
    }

    /// Stops the agent and hands back its folder (to restart on the same state).
    pub fn into_dir(mut self) -> tempfile::TempDir {
        if self.child.is_some() {
            self.terminate();
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        dir
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            stop(child);
        }
    }
}

/// A config for the test agent: `cameras` is the TOML of its `[[cameras]]` tables.
pub fn agent_config(broker: &Mosquitto, cameras: &str) -> String {
    format!(
        r#"device_id = "test-pole"
state_dir = "state"
[mqtt]
url = "{url}"
[model]
path = "{model}"
[telemetry]
interval_seconds = 1
{cameras}
"#,
        url = broker.url(),
        model = repo("models/efficientnet_lite0.onnx").display(),
    )
}

/// A copy of the bundled model's files with `file` edited by `edit`; the
/// returned folder holds `efficientnet_lite0.onnx` and its spec.
pub fn bundled_model_with(file: &str, edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["efficientnet_lite0.onnx", "efficientnet_lite0.toml", "imagenet_labels.txt", "road_taxonomy.toml"] {
        std::fs::copy(repo("models").join(name), dir.path().join(name)).unwrap();
    }
    let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
    std::fs::write(dir.path().join(file), edit(text)).unwrap();
    dir
}

/// The bundled two-lane clip's scene: the upper lane drives left to right,
/// the lower right to left; a line down the middle; the road is 7 m across
/// 330 pixels (a 3.5 m lane each) and the frame 640 px long.
pub const ROAD_SCENE: &str = r#"
[cameras.tracking]
[[cameras.lanes]]
id = "east"
polygon = [[0, 0], [640, 0], [640, 203], [0, 203]]
[[cameras.lanes]]
id = "west"
polygon = [[0, 203], [640, 203], [640, 400], [0, 400]]
[[cameras.lines]]
id = "middle"
from = [320, 0]
to = [320, 400]
[cameras.calibration]
image = [[0, 38], [640, 38], [640, 368], [0, 368]]
ground = [[0, 0], [13.58, 0], [13.58, 7.0], [0, 7.0]]
"#;

pub fn road_clip() -> PathBuf {
    repo("media/road.mp4")
}

/// `media/road.truth.json`: what is where in every frame of the bundled clip.
pub fn road_truth() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo("media/road.truth.json")).unwrap()).unwrap()
}

pub fn road_clip_frames() -> u64 {
    road_truth()["frames"].as_u64().unwrap()
}

/// Intersection over union of two `[x, y, w, h]` boxes.
pub fn iou(a: &[i64; 4], b: &[i64; 4]) -> f64 {
    let x0 = a[0].max(b[0]);
    let y0 = a[1].max(b[1]);
    let x1 = (a[0] + a[2]).min(b[0] + b[2]);
    let y1 = (a[1] + a[3]).min(b[1] + b[3]);
    let inter = ((x1 - x0).max(0) * (y1 - y0).max(0)) as f64;
    let union = (a[2] * a[3] + b[2] * b[3]) as f64 - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

pub fn bbox(v: &Value) -> [i64; 4] {
    let a = v.as_array().expect("bbox is an array");
    [0, 1, 2, 3].map(|i| a[i].as_i64().expect("bbox holds integers"))
}

/// Checks `value` against one of the JSON Schemas in `docs/schema/`, so the
/// documented contract and the payloads cannot drift apart. Supports the
/// keywords those files use: type, required, properties, items, enum,
/// minimum, maximum, minItems, maxItems.
pub fn assert_matches_schema(value: &Value, schema_file: &str) {
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(repo("docs/schema").join(schema_file)).unwrap()).unwrap();
    if let Err(problem) = check(value, &schema, "$") {
        panic!("{schema_file}: {problem}\npayload: {value}");
    }
}

fn check(value: &Value, schema: &Value, at: &str) -> Result<(), String> {
    if let Some(types) = schema.get("type") {
        let allowed: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let fits = allowed.contains(&actual) || (actual == "integer" && allowed.contains(&"number"));
        if !fits {
            return Err(format!("{at} is {actual}, the schema says {allowed:?}"));
        }
    }
    if value.is_null() {
        return Ok(());
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            return Err(format!("{at} = {value} is not one of {options:?}"));
        }
    }
    if let Some(n) = value.as_f64() {
        if schema.get("minimum").and_then(Value::as_f64).is_some_and(|min| n < min) {
            return Err(format!("{at} = {n} is below the minimum"));
        }
        if schema.get("maximum").and_then(Value::as_f64).is_some_and(|max| n > max) {
            return Err(format!("{at} = {n} is above the maximum"));
        }
    }
    if let Some(object) = value.as_object() {
        for key in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            let key = key.as_str().unwrap();
            if !object.contains_key(key) {
                return Err(format!("{at} lacks required `{key}`"));
            }
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (key, sub) in properties {
                if let Some(v) = object.get(key) {
                    check(v, sub, &format!("{at}.{key}"))?;
                }
            }
            if let Some(extra) = object.keys().find(|k| !properties.contains_key(*k)) {
                return Err(format!("{at} has `{extra}`, which the schema does not document"));
            }
        }
        // A map (e.g. class → count): every value against one schema.
        if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
            for (key, v) in object {
                check(v, values, &format!("{at}.{key}"))?;
            }
        }
    }
    if let Some(items) = value.as_array() {
        if schema.get("minItems").and_then(Value::as_u64).is_some_and(|m| (items.len() as u64) < m)
            || schema.get("maxItems").and_then(Value::as_u64).is_some_and(|m| (items.len() as u64) > m)
        {
            return Err(format!("{at} has {} items, outside the schema's bounds", items.len()));
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                check(item, item_schema, &format!("{at}[{i}]"))?;
            }
        }
    }
    Ok(())
}

/// Plays systemd's side of the notify protocol: a datagram socket that
/// records every message with the time it arrived.
pub struct NotifySocket {
    pub path: PathBuf,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    pub fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buffer) {
                for line in String::from_utf8_lossy(&buffer[..n]).lines() {
                    sink.lock().unwrap().push((Instant::now(), line.to_string()));
                }
            }
        });
        NotifySocket { path, messages, _dir: dir }
    }

    pub fn messages(&self) -> Vec<(Instant, String)> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits for a message starting with `prefix` that arrived after `after`; returns when it arrived.
    pub fn wait_for(&self, prefix: &str, after: Instant, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some((at, _)) = self.messages().into_iter().find(|(at, m)| *at > after && m.starts_with(prefix)) {
                return at;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let seen: Vec<String> = self.messages().into_iter().map(|(_, m)| m).collect();
        panic!("no `{prefix}` within {timeout:?}; seen: {seen:?}");
    }

    pub fn count(&self, prefix: &str, from: Instant, to: Instant) -> usize {
        self.messages().iter().filter(|(at, m)| *at >= from && *at <= to && m.starts_with(prefix)).count()
    }
}

/// What [`FaultyProxy`] does to a request on cue.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Answers this status itself (the registry never sees the request).
    Status(u16),
    /// Passes the registry's answer on, but breaks the connection off after
    /// this many bytes of it (headers included): a reset mid-download.
    BreakAfter(usize),
    /// Passes the registry's answer on with one byte of its body flipped:
    /// same status, same length, bytes damaged in transit.
    Garble,
}

/// An HTTP proxy in front of the real registry for what it cannot do on
/// cue: a 503 or a broken-off answer for the next requests that match.
/// It asks both sides to close after each answer, so it sees (and counts)
/// every request.
pub struct FaultyProxy {
    pub port: u16,
    state: std::sync::Arc<std::sync::Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    /// (part of the request line, fault, how many more times)
    faults: Vec<(String, Fault, usize)>,
    requests: Vec<String>,
}

impl FaultyProxy {
    pub fn start(upstream: u16) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(std::sync::Mutex::new(ProxyState::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || {
                    let _ = FaultyProxy::relay(client, upstream, &state);
                });
            }
        });
        FaultyProxy { port, state }
    }

    fn relay(client: TcpStream, upstream: u16, state: &std::sync::Mutex<ProxyState>) -> std::io::Result<()> {
        use std::io::{BufRead, BufReader, Read, Write};
        let mut reader = BufReader::new(client.try_clone()?);
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
            if !line.to_ascii_lowercase().starts_with("connection:") {
                head.push(line);
            }
        }
        let first = head.first().cloned().unwrap_or_default();
        let fault = {
            let mut state = state.lock().unwrap();
            state.requests.push(first.trim().to_string());
            let found = state.faults.iter_mut().find(|(needle, _, left)| *left > 0 && first.contains(needle.as_str()));
            found.map(|(_, fault, left)| {
                *left -= 1;
                *fault
            })
        };
        let mut client = client;
        if let Some(Fault::Status(code)) = fault {
            return write!(client, "HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
        let mut server = TcpStream::connect(("127.0.0.1", upstream))?;
        server.write_all(format!("{}Connection: close\r\n\r\n", head.concat()).as_bytes())?;
        let limit = match fault {
            Some(Fault::BreakAfter(n)) => n as u64,
            _ => u64::MAX,
        };
        if let Some(Fault::Garble) = fault {
            let mut answer = Vec::new();
            server.read_to_end(&mut answer)?;
            if let Some(body) = answer.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4).filter(|&at| at < answer.len()) {
                let middle = body + (answer.len() - body) / 2;
                answer[middle] ^= 0x55;
            }
            return client.write_all(&answer).and_then(|()| client.shutdown(std::net::Shutdown::Both));
        }
        std::io::copy(&mut (&mut server).take(limit), &mut client)?;
        client.shutdown(std::net::Shutdown::Both)
    }

    /// The repository URL through this proxy.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/roadside/vehicle-classifier", self.port)
    }

    /// The next `times` requests whose request line contains `needle` get `fault`.
    pub fn inject(&self, needle: &str, fault: Fault, times: usize) {
        self.state.lock().unwrap().faults.push((needle.to_string(), fault, times));
    }

    /// Request lines seen so far (`GET /v2/… HTTP/1.1`), faulted ones too.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

/// Publishes one retained QoS 1 message and waits for the broker's acknowledgement.
pub fn publish_retained(port: u16, topic: &str, payload: &[u8]) {
    publish_with(port, topic, payload, true)
}

/// Publishes every payload to `topic` (QoS 1) over one connection, as fast
/// as the broker takes them; returns when the broker acknowledged them all.
pub fn publish_many(port: u16, topic: &str, payloads: Vec<Vec<u8>>) {
    let mut options = MqttOptions::new(format!("test-flood-{}", free_port()), "127.0.0.1", port);
    options.set_max_packet_size(8 << 20, 8 << 20);
    let (client, mut connection) = Client::new(options, 1000);
    let total = payloads.len();
    let topic_owned = topic.to_string();
    let sender = std::thread::spawn(move || {
        for payload in payloads {
            client.publish(topic_owned.as_str(), QoS::AtLeastOnce, false, payload).unwrap();
        }
        client
    });
    let mut acknowledged = 0;
    for event in connection.iter() {
        match event {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                acknowledged += 1;
                if acknowledged == total {
                    break;
                }
            }
            Ok(_) => {}
            Err(error) => panic!("flooding {topic}: {error}"),
        }
    }
    let _ = sender.join().unwrap().disconnect();
}

impl OciRegistry {
    /// Another repository of this registry (e.g. `roadside/vehicle-detector`).
    pub fn repository_url(&self, repository: &str) -> String {
        format!("http://127.0.0.1:{}/{repository}", self.port)
    }
}

/// A trainer's signing keys (`release keygen`): `trainer`, pinned by the
/// test agents, and `stranger`, which they do not know.
pub struct ReleaseKeys {
    pub dir: tempfile::TempDir,
}

impl ReleaseKeys {
    pub fn new() -> ReleaseKeys {
        let dir = tempfile::tempdir().unwrap();
        for key in ["trainer", "stranger"] {
            let out = Command::new(BIN).args(["release", "keygen", "--key-id", key, "--dir"]).arg(dir.path()).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        ReleaseKeys { dir }
    }

    pub fn public_key(&self) -> PathBuf {
        self.dir.path().join("trainer.pub")
    }

    pub fn secret_key(&self) -> PathBuf {
        self.dir.path().join("trainer.key")
    }

    /// `cctv-agent release publish` of `model` (its spec beside it) as
    /// `version` under `tag`, signed by the trainer; the process's output.
    pub fn try_publish(&self, registry_url: &str, tag: &str, version: u64, model: &Path, extra: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(["release", "publish", "--registry", registry_url, "--tag", tag, "--version", &version.to_string(), "--key"])
            .arg(self.secret_key())
            .arg("--model")
            .arg(model)
            .args(extra)
            .output()
            .unwrap()
    }

    /// As `try_publish`, and it must succeed.
    pub fn publish(&self, registry_url: &str, tag: &str, version: u64, model: &Path) {
        let out = self.try_publish(registry_url, tag, version, model, &[]);
        assert!(out.status.success(), "release publish: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Points `to` at what `from` points at in the repository at `url`, as a
/// trainer promoting a release would.
pub fn retag(url: &str, from: &str, to: &str) {
    let client = cctv_agent::models::registry::Registry::new(url).unwrap();
    let digest = client.tag_digest(from).unwrap().unwrap();
    let (manifest, _) = client.manifest(&digest).unwrap();
    client.push_manifest(to, &manifest).unwrap();
}

/// The last telemetry's figures of `camera`, if any arrived.
pub fn camera_telemetry(sub: &Subscriber, camera: &str) -> Option<Value> {
    let last = sub.on("/telemetry").last()?.payload.clone();
    last["cameras"].as_array()?.iter().find(|c| c["id"] == camera).cloned()
}

/// Samples received on `…/samples/<id>`, reassembled: id → (meta, JPEG bytes).
/// A sample published twice (saved, then marked wrong) keeps its latest metadata.
pub fn samples(sub: &Subscriber) -> std::collections::BTreeMap<String, (Value, Vec<u8>)> {
    use base64::Engine;
    use std::collections::BTreeMap;
    let mut parts: BTreeMap<String, BTreeMap<u64, Value>> = BTreeMap::new();
    for message in sub.all().into_iter().filter(|m| m.topic.starts_with("cctv/test-pole/samples/")) {
        assert_matches_schema(&message.payload, "sample.json");
        let id = message.payload["sample"].as_str().unwrap().to_string();
        assert!(message.topic.ends_with(&id));
        parts.entry(id).or_default().insert(message.payload["part"].as_u64().unwrap(), message.payload);
    }
    let mut whole = BTreeMap::new();
    for (id, chunks) in parts {
        let count = chunks.values().next().unwrap()["parts"].as_u64().unwrap();
        if chunks.len() as u64 != count {
            continue;
        }
        let jpeg: Vec<u8> = chunks
            .values()
            .flat_map(|c| base64::engine::general_purpose::STANDARD.decode(c["jpeg_base64"].as_str().unwrap()).unwrap())
            .collect();
        whole.insert(id, (chunks[&0]["meta"].clone(), jpeg));
    }
    whole
}

/// The bundled clip's frame `n` (BGR rows), decoded the way the agent decodes it.
pub fn clip_frame(n: u64) -> (u32, u32, Vec<u8>) {
    use opencv::prelude::*;
    let mut capture = opencv::videoio::VideoCapture::from_file(road_clip().to_str().unwrap(), opencv::videoio::CAP_ANY).unwrap();
    let mut frame = opencv::core::Mat::default();
    for _ in 0..=n {
        assert!(capture.read(&mut frame).unwrap(), "the clip ended before frame {n}");
    }
    let (w, h) = (frame.cols() as u32, frame.rows() as u32);
    (w, h, frame.data_bytes().unwrap().to_vec())
}
