//! Shutdown: SIGTERM drains within a bounded time, SIGINT stops at once.
//!
//! Why not pingora's own handling: on SIGTERM pingora sleeps the whole `grace_period_seconds`
//! (default 300 s) even when nothing is in flight. Here SIGTERM first flips the drain watch that the
//! listening services run on (accept loops stop, keep-alive connections close after their current
//! request), then waits until no request is in flight or `server.shutdown-grace` has passed, and
//! only then tells pingora to terminate, with its grace period set to 0 and a 1 s runtime stop.
//! A graceful stop then flushes the spans waiting for export (`server.telemetry`).
//! A [`ShutdownHandle`] does the same from code (the demo, in-process tests).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::telemetry::Telemetry;

/// How a stop was requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Drain then stop (SIGTERM).
    Graceful,
    /// Stop now (SIGINT).
    Immediate,
}

/// Stops a running gateway from code.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(Arc<watch::Sender<Option<Stop>>>);

impl ShutdownHandle {
    /// Request a stop; `run` returns once the gateway has stopped.
    pub fn stop(&self, how: Stop) {
        self.0.send_replace(Some(how));
    }
}

/// The signal watch handed to pingora.
pub struct Signals {
    drain: watch::Sender<bool>,
    inflight: Arc<AtomicUsize>,
    grace: Duration,
    requested: Arc<watch::Sender<Option<Stop>>>,
    telemetry: Option<Arc<Telemetry>>,
}

impl Signals {
    /// A watch plus its handle; `drain` is what the listening services run on.
    pub fn new(
        drain: watch::Sender<bool>,
        inflight: Arc<AtomicUsize>,
        grace: Duration,
        telemetry: Option<Arc<Telemetry>>,
    ) -> (Signals, ShutdownHandle) {
        let requested = Arc::new(watch::channel(None).0);
        let handle = ShutdownHandle(requested.clone());
        let signals = Signals {
            drain,
            inflight,
            grace,
            requested,
            telemetry,
        };
        (signals, handle)
    }

    async fn wait_for_stop(&self) -> Stop {
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        if term.is_none() || int.is_none() {
            tracing::warn!("cannot watch SIGTERM/SIGINT; only in-process stops work");
        }
        // The sender lives in `self`, so this receiver never sees a closed channel.
        let mut requested = self.requested.subscribe();
        tokio::select! {
            () = recv(term.as_mut()) => Stop::Graceful,
            () = recv(int.as_mut()) => Stop::Immediate,
            stop = requested.wait_for(Option::is_some) => {
                stop.ok().and_then(|s| *s).unwrap_or(Stop::Immediate)
            }
        }
    }

    async fn drain(&self) {
        self.drain.send_replace(true);
        let deadline = tokio::time::Instant::now() + self.grace;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while self.inflight.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tick.tick().await;
        }
        let left = self.inflight.load(Ordering::Relaxed);
        if left > 0 {
            tracing::warn!(in_flight = left, grace = ?self.grace, "shutdown grace over; stopping");
        }
    }
}

impl Signals {
    /// Export the spans still waiting (the drained requests' included) before pingora stops its
    /// runtimes; bounded by the exporter's timeout. Only on a graceful stop: SIGINT means now.
    async fn flush_spans(&self) {
        if let Some(telemetry) = self.telemetry.clone() {
            let flushed = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
            if let Err(e) = flushed {
                tracing::warn!(error = %e, "telemetry: the flush did not finish");
            }
        }
    }
}

/// Resolves on the next signal; never when the signal could not be watched.
async fn recv(sig: Option<&mut tokio::signal::unix::Signal>) {
    if let Some(s) = sig {
        if s.recv().await.is_some() {
            return;
        }
    }
    std::future::pending().await
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        match self.wait_for_stop().await {
            Stop::Graceful => {
                tracing::info!(grace = ?self.grace, "graceful shutdown: draining");
                self.drain().await;
                self.flush_spans().await;
                ShutdownSignal::GracefulTerminate
            }
            Stop::Immediate => {
                tracing::info!("immediate shutdown");
                self.drain.send_replace(true);
                ShutdownSignal::FastShutdown
            }
        }
    }
}
