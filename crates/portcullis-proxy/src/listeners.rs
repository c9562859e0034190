//! Listeners bound before pingora starts, so the real addresses (port 0 included) are known up front.
//!
//! Why: tests and `portcullis demo` need port 0 and the ports the OS picked, and pingora binds inside
//! its services, out of reach. Pingora can however adopt already-open sockets (its zero-downtime
//! upgrade path): a listener whose address string is found in the fd table passed to
//! `start_service` is taken over instead of bound. [`Prebound`] wraps a pingora listening service,
//! binds the sockets itself in [`Prebound::bind`], and adds their fds to that table, keyed by the
//! resolved address, right before the inner service starts. No bind-then-rebind race.
//!
//! It also swaps pingora's shutdown watch for the gateway's drain watch, so SIGTERM can stop the
//! accept loops first and wait for in-flight requests (see `shutdown.rs`).

use std::net::{SocketAddr, TcpListener};
use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::server::{Fds, ListenFds, ShutdownWatch};
use pingora_core::services::{ServiceReadyNotifier, ServiceWithDependents};

use crate::error::BuildError;

/// Bind a TCP listener (non-blocking, ready for tokio) and report its real address.
pub fn bind(addr: &str) -> Result<(TcpListener, SocketAddr), BuildError> {
    let err = |source| BuildError::Listen {
        addr: addr.to_owned(),
        source,
    };
    let listener = TcpListener::bind(addr).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    Ok((listener, local))
}

/// A pingora service whose listeners were bound beforehand.
pub struct Prebound<S> {
    inner: S,
    sockets: Vec<(String, TcpListener)>,
    drain: ShutdownWatch,
    up: Option<ServicesUp>,
}

/// Set once every proxy service has started accepting (the admin's readiness).
#[derive(Clone)]
pub struct ServicesUp {
    /// Services still starting.
    pending: Arc<AtomicUsize>,
    /// True once none are.
    up: Arc<AtomicBool>,
}

impl ServicesUp {
    /// `services` services will start; `up` turns true when the last has.
    pub fn new(services: usize, up: Arc<AtomicBool>) -> ServicesUp {
        ServicesUp {
            pending: Arc::new(AtomicUsize::new(services)),
            up,
        }
    }

    fn started(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.up.store(true, Ordering::Release);
        }
    }
}

impl<S> Prebound<S> {
    /// Wrap `inner`, whose listeners were added with the address strings of `sockets`.
    pub fn new(
        inner: S,
        sockets: Vec<(String, TcpListener)>,
        drain: ShutdownWatch,
        up: Option<ServicesUp>,
    ) -> Self {
        Prebound {
            inner,
            sockets,
            drain,
            up,
        }
    }
}

#[async_trait]
impl<S: ServiceWithDependents> ServiceWithDependents for Prebound<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        _shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready_notifier: ServiceReadyNotifier,
    ) {
        let fds = fds.unwrap_or_else(|| Arc::new(parking_lot::Mutex::new(Fds::new())));
        {
            let mut table = fds.lock();
            for (addr, socket) in self.sockets.drain(..) {
                table.add(addr, socket.into_raw_fd());
            }
        }
        if let Some(up) = &self.up {
            up.started();
        }
        self.inner
            .start_service(
                Some(fds),
                self.drain.clone(),
                listeners_per_fd,
                ready_notifier,
            )
            .await;
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }
}
