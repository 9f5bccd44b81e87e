//! The TLS of the connection the store opens itself (the read cache's:
//! `topology.rs` opens it, `tracking.rs` watches it). It trusts what the
//! redis crate trusts on the store's other links: only `options.tls.ca` when
//! given, else the system's roots; with `options.tls`'s client certificate.
//! rustls with ring, as everywhere in the addon.

use std::sync::Arc;

use redis::{ErrorKind, RedisError, RedisResult, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How the store's own connection speaks TLS to a `rediss://` server.
#[derive(Clone)]
pub struct Tls(TlsConnector);

impl Tls {
    /// From the store's certificates (`options.tls`), if any.
    pub fn new(certs: Option<&TlsCertificates>) -> RedisResult<Tls> {
        let roots = match certs.and_then(|c| c.root_cert.as_deref()) {
            Some(pem) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    roots
                        .add(cert.map_err(|_| unusable("tls.ca"))?)
                        .map_err(|_| unusable("tls.ca"))?;
                }
                roots
            }
            None => {
                let mut roots = RootCertStore::empty();
                // Certificates the system store holds that rustls cannot
                // read are left out, as a browser would.
                let _ =
                    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                roots
            }
        };
        let builder = ClientConfig::builder().with_root_certificates(roots);
        let config = match certs.and_then(|c| c.client_tls.as_ref()) {
            Some(client) => {
                let chain = CertificateDer::pem_slice_iter(&client.client_cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| unusable("tls.cert"))?;
                let key = PrivateKeyDer::from_pem_slice(&client.client_key)
                    .map_err(|_| unusable("tls.key"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|_| unusable("tls.cert and tls.key"))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Tls(TlsConnector::from(Arc::new(config))))
    }

    /// The TLS handshake over `stream` with server `host`, its certificate
    /// checked.
    pub async fn connect(
        &self,
        host: &str,
        stream: TcpStream,
    ) -> RedisResult<TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| unusable("the host name"))?;
        Ok(self.0.connect(name, stream).await?)
    }
}

fn unusable(what: &str) -> RedisError {
    RedisError::from((
        ErrorKind::InvalidClientConfig,
        "TLS of the read cache's connection",
        format!("{what} is not usable"),
    ))
}
