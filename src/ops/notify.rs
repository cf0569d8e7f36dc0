//! The systemd notify protocol (`Type=notify`): READY, STATUS, WATCHDOG and
//! STOPPING datagrams to `$NOTIFY_SOCKET`. Without that variable (not run by
//! systemd) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

pub struct Notifier {
    socket: Option<(UnixDatagram, String)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` (honouring `WATCHDOG_PID`).
    pub fn from_env() -> Notifier {
        let socket = std::env::var("NOTIFY_SOCKET").ok().filter(|s| !s.is_empty()).and_then(|path| match UnixDatagram::unbound() {
            Ok(socket) => Some((socket, path)),
            Err(error) => {
                tracing::warn!(%error, "cannot create the systemd notify socket");
                None
            }
        });
        let for_us = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok()).is_none_or(|pid| pid == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|usec| *usec > 0 && for_us)
            .map(Duration::from_micros);
        Notifier { socket, watchdog }
    }

    /// The interval systemd expects pings at, if its watchdog is on.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.socket.is_some())
    }

    pub fn ready(&self) {
        self.send("READY=1");
    }

    pub fn status(&self, text: &str) {
        self.send(&format!("STATUS={}", text.replace('\n', " ")));
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    fn send(&self, message: &str) {
        let Some((socket, path)) = &self.socket else { return };
        let result = if let Some(name) = path.strip_prefix('@') {
            // Abstract socket namespace.
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).and_then(|addr| socket.send_to_addr(message.as_bytes(), &addr))
        } else {
            socket.send_to(message.as_bytes(), path)
        };
        if let Err(error) = result {
            tracing::debug!(%error, message, "systemd notify failed");
        }
    }
}
