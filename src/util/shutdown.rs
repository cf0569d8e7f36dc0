//! One shutdown signal that plain threads and async tasks can both wait on.
//!
//! Triggering is one-way. Threads poll [`Shutdown::is_triggered`] or sleep
//! with [`Shutdown::sleep`] (which wakes early on shutdown); tasks await
//! [`Shutdown::wait`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    flag: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
    notify: tokio::sync::watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (notify, _) = tokio::sync::watch::channel(false);
        Shutdown {
            inner: Arc::new(Inner {
                flag: AtomicBool::new(false),
                lock: Mutex::new(()),
                wake: Condvar::new(),
                notify,
            }),
        }
    }

    pub fn trigger(&self) {
        self.inner.flag.store(true, Ordering::SeqCst);
        let _guard = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.inner.wake.notify_all();
        self.inner.notify.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    /// Sleeps for `duration` or until shutdown; returns true if shutdown was triggered.
    pub fn sleep(&self, duration: Duration) -> bool {
        let guard = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .inner
            .wake
            .wait_timeout_while(guard, duration, |_| !self.is_triggered());
        self.is_triggered()
    }

    /// Resolves once shutdown is triggered.
    pub async fn wait(&self) {
        let mut rx = self.inner.notify.subscribe();
        let _ = rx.wait_for(|triggered| *triggered).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn sleep_wakes_early_when_triggered_from_another_thread() {
        let shutdown = Shutdown::new();
        let other = shutdown.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            other.trigger();
        });
        let start = Instant::now();
        assert!(shutdown.sleep(Duration::from_secs(10)));
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
    }
}
