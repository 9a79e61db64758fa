//! Who may open a WebSocket to the hub: checks of `Host`, `Origin` and the
//! access token on every handshake, so a web page in the engineer's browser
//! cannot drive the hub (DNS rebinding, cross-site WebSocket hijacking).

use subtle::ConstantTimeEq;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request};
use tokio_tungstenite::tungstenite::http::{HeaderMap, StatusCode};

/// The rules of one hub.
#[derive(Debug, Clone)]
pub struct Guard {
    pub port: u16,
    /// Required when the hub listens beyond loopback.
    pub token: Option<String>,
}

const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

impl Guard {
    /// Ok, or the reason the handshake is refused.
    pub fn check(&self, request: &Request) -> Result<(), String> {
        let headers = request.headers();
        if let Some(token) = &self.token {
            let given = bearer(headers).or_else(|| query_token(request.uri().query()));
            let ok = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(token.as_bytes())));
            if !ok {
                return Err("a valid access token is required: send `Authorization: Bearer <token>` (the token is in .mcc/token)".into());
            }
        } else {
            let host = header(headers, "host").ok_or("the handshake has no Host header")?;
            if !self.is_loopback_authority(host) {
                return Err(format!("Host `{host}` is not a loopback name on port {}", self.port));
            }
        }
        if let Some(origin) = header(headers, "origin") {
            let own = origin.strip_prefix("http://").is_some_and(|authority| self.is_loopback_authority(authority));
            if !own {
                return Err(format!("Origin `{origin}` is a web page; only command-line clients may connect"));
            }
        }
        Ok(())
    }

    /// `localhost:PORT`, `127.0.0.1:PORT` or `[::1]:PORT`, exactly.
    fn is_loopback_authority(&self, authority: &str) -> bool {
        let Some((host, port)) = authority.rsplit_once(':') else { return false };
        LOOPBACK_HOSTS.iter().any(|h| h.eq_ignore_ascii_case(host)) && port.parse::<u16>().ok() == Some(self.port)
    }

    /// The 403 sent for a refused handshake.
    pub fn refusal(reason: &str) -> ErrorResponse {
        let mut response = ErrorResponse::new(Some(format!("mcc hub refused the connection: {reason}\n")));
        *response.status_mut() = StatusCode::FORBIDDEN;
        response
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    header(headers, "authorization").and_then(|v| v.strip_prefix("Bearer "))
}

fn query_token(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|pair| pair.strip_prefix("token="))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder().uri("/");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn loopback_clients_pass_and_web_pages_and_foreign_hosts_do_not() {
        let guard = Guard { port: 3100, token: None };
        assert!(guard.check(&request(&[("host", "localhost:3100")])).is_ok());
        assert!(guard.check(&request(&[("host", "[::1]:3100")])).is_ok());
        assert!(guard.check(&request(&[("host", "127.0.0.1:3100"), ("origin", "http://localhost:3100")])).is_ok());
        assert!(guard.check(&request(&[("host", "evil.example:3100")])).is_err());
        assert!(guard.check(&request(&[("host", "localhost:3101")])).is_err());
        assert!(guard.check(&request(&[("host", "localhost")])).is_err());
        assert!(guard.check(&request(&[("host", "localhost.evil.example:3100")])).is_err());
        assert!(guard.check(&request(&[("host", "localhost:3100"), ("origin", "https://evil.example")])).is_err());
        assert!(guard.check(&request(&[("host", "localhost:3100"), ("origin", "null")])).is_err());
    }

    #[test]
    fn a_remote_hub_wants_the_token() {
        let guard = Guard { port: 3100, token: Some("s3cret".into()) };
        assert!(guard.check(&request(&[("host", "10.0.0.5:3100")])).is_err());
        assert!(guard.check(&request(&[("host", "10.0.0.5:3100"), ("authorization", "Bearer nope")])).is_err());
        assert!(guard.check(&request(&[("host", "10.0.0.5:3100"), ("authorization", "Bearer s3cret")])).is_ok());
    }
}
