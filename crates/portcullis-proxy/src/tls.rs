//! Listener certificates: loaded from the PEM files `listen[].tls` names, chosen per handshake by
//! the client's SNI, and replaceable while the listener serves.
//!
//! Why a resolver of our own instead of rustls' `with_single_cert` / `ResolvesServerCertUsingSni`:
//! pingora takes one `ResolvesServerCert` per listener when it is built and never asks again, so
//! the only way to change a certificate without rebinding (and dropping connections) is a
//! resolver whose certificates can be swapped. [`ListenerCerts`] holds the current set in an
//! `ArcSwap`: a handshake does one lock-free load; a reload stores a new set in one pointer
//! write. Connections already established keep the session they negotiated (TLS does not look at
//! the certificate again), so nothing in flight is disturbed; the next handshake sees the new set.
//! rustls' own SNI resolver also rejects wildcard names at `add` time and has no default, which
//! the first-certificate fallback needs.
//!
//! A set is built completely (every file read, every chain parsed, every key checked against its
//! certificate) before it is stored, so a broken replacement never replaces a working set: the
//! reloader reports the file and keeps serving the old one.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use portcullis_config::Tls;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The raw bytes of a listener's files, certificate then key per entry: what a set was built
/// from, so the watcher can tell whether the files changed.
pub type FileBytes = Vec<(Vec<u8>, Vec<u8>)>;

/// One certificate chain with its key and the DNS names it may be served for.
#[derive(Debug)]
struct Entry {
    /// Lowercase DNS names of the end-entity certificate (subjectAltName, else the CN):
    /// `api.example.com` or `*.example.com`.
    names: Vec<String>,
    key: Arc<CertifiedKey>,
}

impl Entry {
    fn exact(&self, sni: &str) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(sni))
    }

    /// `*.example.com` matches exactly one more label: `a.example.com`, not `a.b.example.com`
    /// nor `example.com` (RFC 6125 §6.4.3).
    fn wildcard(&self, sni: &str) -> bool {
        let Some((first, rest)) = sni.split_once('.') else {
            return false;
        };
        !first.is_empty()
            && self.names.iter().any(|n| {
                n.strip_prefix("*.")
                    .is_some_and(|suffix| suffix.eq_ignore_ascii_case(rest))
            })
    }
}

/// A complete certificate set, ready to serve.
#[derive(Debug)]
pub struct CertSet {
    entries: Vec<Entry>,
    files: FileBytes,
}

impl CertSet {
    /// Builds a set from the files' bytes (`files[i]` read from `paths[i]`). `Err`: one line
    /// naming the file and what is wrong with it.
    pub fn build(paths: &[Tls], files: FileBytes) -> Result<CertSet, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let entries = paths
            .iter()
            .zip(&files)
            .map(|(tls, (cert, key))| entry(&provider, tls, cert, key))
            .collect::<Result<Vec<_>, _>>()?;
        if entries.is_empty() {
            return Err("no certificate".to_owned());
        }
        Ok(CertSet { entries, files })
    }

    /// The bytes this set was built from.
    pub fn files(&self) -> &FileBytes {
        &self.files
    }

    /// The DNS names of each certificate, in file order (logs).
    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.names.join(" ")).collect()
    }

    /// The certificate for `sni`: an exact name first, then a wildcard, else the first one.
    fn pick(&self, sni: Option<&str>) -> Option<&Entry> {
        let matched = sni.and_then(|sni| {
            let sni = sni.trim_end_matches('.');
            self.entries
                .iter()
                .find(|e| e.exact(sni))
                .or_else(|| self.entries.iter().find(|e| e.wildcard(sni)))
        });
        matched.or_else(|| self.entries.first())
    }
}

fn entry(
    provider: &Arc<CryptoProvider>,
    tls: &Tls,
    cert: &[u8],
    key: &[u8],
) -> Result<Entry, String> {
    let at = |path: &Path, detail: String| format!("{}: {detail}", path.display());
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| at(&tls.cert, e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(at(&tls.cert, "no CERTIFICATE in the file".to_owned()));
    };
    let names = dns_names(leaf).map_err(|e| at(&tls.cert, e))?;
    let key_der = PrivateKeyDer::from_pem_slice(key).map_err(|e| at(&tls.key, e.to_string()))?;
    let certified = CertifiedKey::from_der(chain, key_der, provider).map_err(|e| {
        at(
            &tls.key,
            format!("not the key of {}: {e}", tls.cert.display()),
        )
    })?;
    Ok(Entry {
        names,
        key: Arc::new(certified),
    })
}

/// The DNS names a certificate is valid for: its subjectAltName DNS entries, or (no such
/// extension, old certificates) its subject CN.
fn dns_names(der: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?;
    let names = match san {
        Some(san) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        None => cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .map(str::to_ascii_lowercase)
            .collect(),
    };
    Ok(names)
}

/// Reads every file of a listener: cert and key per entry. `Err`: the file that cannot be read.
pub fn read_files(paths: &[Tls]) -> Result<FileBytes, String> {
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| format!("{}: cannot read: {e}", p.display()));
    paths
        .iter()
        .map(|t| Ok((read(&t.cert)?, read(&t.key)?)))
        .collect()
}

/// A TLS listener's certificates: the rustls resolver pingora asks at every handshake, and the
/// files it reloads from.
#[derive(Debug)]
pub struct ListenerCerts {
    /// The listener's configured address (logs).
    pub addr: String,
    /// The files, as configured at start (their paths are restart-only, their contents reload).
    pub paths: Vec<Tls>,
    current: ArcSwap<CertSet>,
}

impl ListenerCerts {
    /// Reads and checks the files now (start-up). `Err`: one line naming the bad file.
    pub fn load(addr: &str, paths: &[Tls]) -> Result<ListenerCerts, String> {
        let set = CertSet::build(paths, read_files(paths)?)?;
        Ok(ListenerCerts {
            addr: addr.to_owned(),
            paths: paths.to_vec(),
            current: ArcSwap::from_pointee(set),
        })
    }

    /// The set serving now.
    pub fn current(&self) -> Arc<CertSet> {
        self.current.load_full()
    }

    /// Serve `set` from the next handshake on.
    pub fn install(&self, set: CertSet) {
        self.current.store(Arc::new(set));
    }
}

impl ResolvesServerCert for ListenerCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .load()
            .pick(hello.server_name())
            .map(|e| e.key.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn entry(names: &[&str]) -> Entry {
        let cert = rcgen::generate_simple_self_signed(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        let der = cert.cert.der().clone();
        let key =
            PrivateKeyDer::from_pem_slice(cert.signing_key.serialize_pem().as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        Entry {
            names: dns_names(&der).unwrap(),
            key: Arc::new(CertifiedKey::from_der(vec![der], key, &provider).unwrap()),
        }
    }

    fn set(entries: Vec<Entry>) -> CertSet {
        CertSet {
            entries,
            files: Vec::new(),
        }
    }

    fn picked(set: &CertSet, sni: Option<&str>) -> String {
        set.pick(sni).unwrap().names.join(" ")
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_the_first() {
        let s = set(vec![
            entry(&["default.test"]),
            entry(&["*.b.test"]),
            entry(&["API.b.test", "a.test"]),
        ]);
        assert_eq!(picked(&s, Some("a.test")), "api.b.test a.test");
        // An exact name wins over an earlier wildcard, whatever the case.
        assert_eq!(picked(&s, Some("api.B.test")), "api.b.test a.test");
        assert_eq!(picked(&s, Some("x.b.test")), "*.b.test");
        assert_eq!(picked(&s, Some("x.b.test.")), "*.b.test");
        // A wildcard covers one label only.
        assert_eq!(picked(&s, Some("y.x.b.test")), "default.test");
        assert_eq!(picked(&s, Some("b.test")), "default.test");
        assert_eq!(picked(&s, None), "default.test");
    }
}
