//! systemd's notify protocol (Type=notify): READY, RELOADING, STOPPING, STATUS, WATCHDOG.
//! Every call is a no-op when NOTIFY_SOCKET is unset (not under systemd).

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::app::App;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

pub fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading"),
        ]),
        Err(_) => send(&[NotifyState::Reloading, NotifyState::Status("reloading")]),
    }
}

pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("draining in-flight calls"),
    ]);
}

/// Pets the watchdog at half its interval, but only while every inference worker is alive:
/// a wedged worker lets the watchdog fire and systemd restarts the daemon. Also refreshes
/// STATUS= with what the daemon is doing.
pub fn spawn_watchdog(app: Arc<App>) {
    let mut usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut usec);
    let period = if watchdog {
        Duration::from_micros(usec / 2).max(Duration::from_millis(100))
    } else {
        Duration::from_secs(10)
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let stats = app.batcher().stats();
            let alive = app.batcher().worker_alive(Duration::from_secs(30));
            if watchdog {
                if alive {
                    send(&[NotifyState::Watchdog]);
                } else {
                    tracing::error!(
                        "an inference worker is unresponsive; withholding the watchdog ping"
                    );
                }
            }
            status(&format!(
                "serving: {} texts in {} batches, queue {}/{}",
                stats.texts, stats.batches, stats.queue_depth, stats.queue_capacity
            ));
        }
    });
}
