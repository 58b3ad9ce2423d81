//! How this server reaches other servers (Raft traffic, forwarded writes,
//! membership requests), plain or over TLS, decided in one place.

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// TLS for the client API and the Raft traffic (one port serves both).
#[derive(Clone)]
pub struct Tls {
    /// This server's certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// This server's private key, PEM.
    pub key_pem: Vec<u8>,
    /// The authority that signed every server's certificate, PEM: other
    /// servers are checked against it.
    pub ca_pem: Vec<u8>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls { .. }")
    }
}

impl Tls {
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }
}

/// The URI of a server at `addr` (`host:port` or a URL).
pub fn uri(addr: &str, tls: bool) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else if tls {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    }
}

/// An endpoint for the server at `addr`; with `ca`, over TLS checked
/// against that authority.
pub fn endpoint(addr: &str, ca: Option<&[u8]>) -> Result<Endpoint, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(uri(addr, ca.is_some()))?
        .connect_timeout(std::time::Duration::from_millis(500))
        .tcp_nodelay(true);
    match ca {
        Some(ca) => {
            endpoint.tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        }
        None => Ok(endpoint),
    }
}
