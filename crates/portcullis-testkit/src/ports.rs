//! Loopback ports for tests that need an address nobody answers on.
//!
//! Binding port 0, reading the port and dropping the listener is racy: once dropped, another test
//! (or the kernel's next port-0 choice) may take the port and answer. A [`ClosedPort`] keeps its
//! socket bound for as long as it lives but never listens, so the port stays reserved and a
//! connection to it is refused at once (RST), which is what "the upstream is down" means.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpSocket;

/// A loopback TCP port that is bound (reserved) but not listening: connections are refused.
#[derive(Debug)]
pub struct ClosedPort {
    _socket: TcpSocket,
    addr: SocketAddr,
}

impl ClosedPort {
    /// Reserves a fresh loopback port (no `SO_REUSEADDR`, so nothing else can bind it meanwhile).
    pub fn reserve() -> io::Result<ClosedPort> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = socket.local_addr()?;
        Ok(ClosedPort {
            _socket: socket,
            addr,
        })
    }

    /// The reserved address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn connections_to_a_closed_port_are_refused_and_the_port_stays_taken() {
        let port = ClosedPort::reserve().unwrap();
        let err = std::net::TcpStream::connect(port.addr()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        assert!(std::net::TcpListener::bind(port.addr()).is_err());
    }
}
