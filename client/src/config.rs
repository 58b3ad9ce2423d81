//! How a [`Client`](crate::Client) finds the cluster and how patient it is:
//! the server list, the timeouts, the failover budget, the keep-alive pings,
//! and the parsing of server addresses into the URIs the transport needs.

use std::time::Duration;

use tonic::codegen::http::Uri;

use crate::retry::Backoff;

/// The address a client uses when none is configured: a single local server
/// on the conventional gRPC port.
pub const DEFAULT_SERVER: &str = "127.0.0.1:50051";

/// Everything a [`Client`](crate::Client) needs to know before it connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The servers of the cluster, tried in this order at connect time and
    /// round robin after a failure. Each is `host:port` (`127.0.0.1:50051`,
    /// `[::1]:50051`) or `http://host:port`. Any server accepts any call, so
    /// the order only says which one is preferred.
    pub servers: Vec<String>,
    /// How long to wait for one server to accept a connection before moving
    /// on to the next.
    pub connect_timeout: Duration,
    /// How long one attempt of a call may take, including the time a replica
    /// spends catching up with this client's writes (it waits "a few seconds"
    /// before answering UNAVAILABLE, so keep this above that). For
    /// [`Client::subscribe`](crate::Client::subscribe) it bounds opening the
    /// stream only, never the stream itself.
    pub request_timeout: Duration,
    /// The wait before each reconnection attempt.
    pub backoff: Backoff,
    /// How many reconnection attempts (each to the next server of the list)
    /// one call makes before it gives up with the last error it saw, or
    /// [`ClientError::NoServerReachable`](crate::ClientError::NoServerReachable)
    /// if no server answered at all.
    pub failover_attempts: u32,
    /// The PEM certificate of the authority that signed the servers'
    /// certificates. When set, every connection uses TLS (`https`) and
    /// checks the server against it; when unset, connections are plain.
    pub tls_ca: Option<Vec<u8>>,
    /// Pings on every open connection, so a server that vanished without
    /// closing its sockets (power loss, partition) is noticed: by a
    /// subscription that is only waiting, which then fails over, and by an
    /// idle client, whose next call then moves on at once instead of
    /// waiting out the request timeout. `None` sends no pings (for a proxy
    /// that refuses them).
    pub keep_alive: Option<KeepAlive>,
}

/// The HTTP/2 pings of a connection: a connection whose ping goes
/// unanswered is dropped, at most `interval + timeout` after the server
/// fell silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    /// How long a connection may stay silent, busy or idle, before it is
    /// pinged.
    pub interval: Duration,
    /// How long a ping may go unanswered before the connection counts as
    /// dead.
    pub timeout: Duration,
}

impl Default for KeepAlive {
    /// A dead server noticed within 4 s; a ping every 2 s costs a few bytes.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            servers: vec![DEFAULT_SERVER.to_owned()],
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            // With the default backoff: 0.1 + 0.2 + ... + 5 s, about 16 s of
            // waiting before a call gives up.
            failover_attempts: 8,
            tls_ca: None,
            keep_alive: Some(KeepAlive::default()),
        }
    }
}

/// Turns a configured server address into the URI the transport connects to
/// (`http://host:port`), or says in words what is wrong with it.
///
/// A bare `host:port` gets `http://`, or `https://` with `tls`; a trailing
/// `/` is dropped. The port is required (there is no conventional port to
/// guess), and the scheme must match `tls`.
pub fn endpoint_uri(address: &str, tls: bool) -> Result<String, &'static str> {
    let address = address.trim();
    if address.is_empty() {
        return Err("the address is empty");
    }
    let scheme = if tls { "https" } else { "http" };
    let uri: Uri = if address.contains("://") {
        address.parse()
    } else {
        format!("{scheme}://{address}").parse()
    }
    .map_err(|_| "expected host:port or http://host:port")?;
    match (uri.scheme_str(), tls) {
        (Some("http"), false) | (Some("https"), true) => {}
        (Some("https"), false) => {
            return Err("https needs the servers' CA certificate (tls_ca, or --tls-ca)");
        }
        (Some("http"), true) => return Err("with a TLS CA configured, use https:// or host:port"),
        _ => return Err("only http:// and https:// addresses are supported"),
    }
    let Some(authority) = uri.authority() else {
        return Err("expected host:port or http://host:port");
    };
    if authority.as_str().contains('@') {
        return Err("user information is not allowed in a server address");
    }
    if authority.host().is_empty() {
        return Err("the host is missing");
    }
    if authority.port_u16().is_none() {
        return Err("the port is missing or not a number: write host:port, e.g. 127.0.0.1:50051");
    }
    // gRPC owns the path; a prefix would silently route every call elsewhere.
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("a server address has no path or query: write host:port");
    }
    Ok(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(address: &str, expected: Result<&str, &str>) {
        assert_eq!(
            endpoint_uri(address, false),
            expected.map(str::to_owned),
            "{address:?}"
        );
    }

    #[test]
    fn bare_host_and_port_gets_the_http_scheme() {
        check("127.0.0.1:50051", Ok("http://127.0.0.1:50051"));
        check("localhost:7000", Ok("http://localhost:7000"));
        check("[::1]:50051", Ok("http://[::1]:50051"));
        check("  chat.example:1 \n", Ok("http://chat.example:1"));
    }

    #[test]
    fn http_urls_are_kept_without_a_trailing_slash() {
        check("http://127.0.0.1:50051", Ok("http://127.0.0.1:50051"));
        check("http://127.0.0.1:50051/", Ok("http://127.0.0.1:50051"));
        check("http://[::1]:9/", Ok("http://[::1]:9"));
    }

    #[test]
    fn unusable_addresses_say_why() {
        check("", Err("the address is empty"));
        check("   ", Err("the address is empty"));
        check(
            "localhost",
            Err("the port is missing or not a number: write host:port, e.g. 127.0.0.1:50051"),
        );
        check(
            "http://localhost",
            Err("the port is missing or not a number: write host:port, e.g. 127.0.0.1:50051"),
        );
        check(
            "https://localhost:443",
            Err("https needs the servers' CA certificate (tls_ca, or --tls-ca)"),
        );
        check(
            "ftp://localhost:21",
            Err("only http:// and https:// addresses are supported"),
        );
        check(
            "http://localhost:1/chat",
            Err("a server address has no path or query: write host:port"),
        );
        check(
            "http://localhost:1/?x=1",
            Err("a server address has no path or query: write host:port"),
        );
        check(
            "http://me@localhost:1",
            Err("user information is not allowed in a server address"),
        );
        check(
            "host:port",
            Err("the port is missing or not a number: write host:port, e.g. 127.0.0.1:50051"),
        );
        check("a b:1", Err("expected host:port or http://host:port"));
    }

    #[test]
    fn default_config_points_at_one_local_server() {
        let config = ClientConfig::default();
        assert_eq!(config.servers, [DEFAULT_SERVER]);
        assert!(endpoint_uri(DEFAULT_SERVER, false).is_ok());
        assert_eq!(
            endpoint_uri("127.0.0.1:1", true),
            Ok("https://127.0.0.1:1".to_owned())
        );
        assert!(endpoint_uri("http://127.0.0.1:1", true).is_err());
        assert!(config.connect_timeout < config.request_timeout);
        assert!(config.failover_attempts > 0);
    }

    #[test]
    fn by_default_a_dead_server_is_noticed_within_five_seconds() {
        let keep_alive = ClientConfig::default()
            .keep_alive
            .expect("pings are on by default");
        assert!(keep_alive.interval + keep_alive.timeout <= Duration::from_secs(5));
    }
}
