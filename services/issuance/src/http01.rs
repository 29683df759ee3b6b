//! HTTP-01 validation (as in ACME, RFC 8555 section 8.3): fetch
//! `http://<domain>:<port>/.well-known/acme-challenge/<token>` and compare the body with
//! the key authorization.
//!
//! Name resolution can be overridden per name (or for every name with `*`), so that tests
//! and staging point names at `127.0.0.1:PORT`. Redirects are not followed; the body is
//! read up to 8 KiB; every step has a timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

/// Longest body read.
pub const MAX_BODY: usize = 8 * 1024;

/// Where and how to fetch challenges.
#[derive(Debug, Clone)]
pub struct Http01Settings {
    /// The port to connect to (80 in production).
    pub port: u16,
    /// Name → address overrides; the key `*` applies to every name.
    pub resolve: HashMap<String, SocketAddr>,
    /// Timeout of the whole fetch (connect, request, body).
    pub timeout: Duration,
}

impl Default for Http01Settings {
    fn default() -> Self {
        Self {
            port: 80,
            resolve: HashMap::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

impl Http01Settings {
    /// Parses one override: `name=ip:port`, `name=ip` (the configured port), or
    /// `*=ip:port` for every name.
    pub fn parse_override(&self, text: &str) -> Result<(String, SocketAddr), String> {
        let (name, target) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not name=ip:port"))?;
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() {
            return Err(format!("{text:?} names no host"));
        }
        let target = target.trim();
        let addr = target
            .parse::<SocketAddr>()
            .or_else(|_| {
                target
                    .parse::<std::net::IpAddr>()
                    .map(|ip| SocketAddr::new(ip, self.port))
            })
            .map_err(|_| format!("{target:?} is not ip:port or ip"))?;
        Ok((name, addr))
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The key authorization was served.
    Valid,
    /// Something else was served.
    Mismatch {
        /// What a person should know.
        reason: String,
        /// What was served (clipped).
        observed: String,
    },
    /// Nothing could be fetched.
    Unreachable {
        /// What failed.
        reason: String,
    },
}

/// Fetches challenge responses.
#[derive(Debug, Clone)]
pub struct Http01Checker {
    settings: Http01Settings,
}

impl Http01Checker {
    /// A checker with `settings`.
    pub fn new(settings: Http01Settings) -> Self {
        Self { settings }
    }

    /// The URL a challenge is fetched from (for messages).
    pub fn url(&self, domain: &str, token: &str) -> String {
        let host = if domain.contains(':') {
            format!("[{domain}]")
        } else {
            domain.to_owned()
        };
        if self.settings.port == 80 {
            format!("http://{host}/.well-known/acme-challenge/{token}")
        } else {
            format!(
                "http://{host}:{}/.well-known/acme-challenge/{token}",
                self.settings.port
            )
        }
    }

    async fn resolve(&self, domain: &str) -> Result<SocketAddr, String> {
        let resolve = &self.settings.resolve;
        if let Some(addr) = resolve.get(domain).or_else(|| resolve.get("*")) {
            return Ok(*addr);
        }
        if let Ok(ip) = domain.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, self.settings.port));
        }
        let mut addrs = tokio::net::lookup_host((domain, self.settings.port))
            .await
            .map_err(|e| format!("{domain} does not resolve: {e}"))?;
        addrs
            .next()
            .ok_or_else(|| format!("{domain} resolves to no address"))
    }

    /// Checks one challenge.
    pub async fn check(&self, domain: &str, token: &str, key_authorization: &str) -> Outcome {
        let url = self.url(domain, token);
        match tokio::time::timeout(self.settings.timeout, self.fetch(domain, token)).await {
            Err(_) => Outcome::Unreachable {
                reason: format!("{url} did not answer within {:?}", self.settings.timeout),
            },
            Ok(Err(why)) => Outcome::Unreachable {
                reason: format!("{url}: {why}"),
            },
            Ok(Ok((status, body))) => {
                let text = String::from_utf8_lossy(&body);
                let observed: String = text.trim().chars().take(256).collect();
                if status != 200 {
                    return Outcome::Mismatch {
                        reason: format!(
                            "{url} answered HTTP {status}; serve the key authorization there with status 200"
                        ),
                        observed,
                    };
                }
                if text.trim() == key_authorization {
                    Outcome::Valid
                } else {
                    Outcome::Mismatch {
                        reason: format!("{url} served something other than the key authorization"),
                        observed,
                    }
                }
            }
        }
    }

    async fn fetch(&self, domain: &str, token: &str) -> Result<(u16, Bytes), String> {
        let addr = self.resolve(domain).await?;
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|e| format!("HTTP handshake with {addr} failed: {e}"))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let host = if domain.contains(':') {
            format!("[{domain}]")
        } else {
            domain.to_owned()
        };
        let request = http::Request::get(format!("/.well-known/acme-challenge/{token}"))
            .header(http::header::HOST, host)
            .header(http::header::USER_AGENT, "certledger-issuance (HTTP-01)")
            .header(http::header::ACCEPT, "*/*")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("building the request: {e}"))?;
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("request to {addr} failed: {e}"))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("reading the response body from {addr}: {e}"))?
                .to_bytes();
            Ok((status, body))
        }
        .await;
        driver.abort();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse() {
        let s = Http01Settings {
            port: 8080,
            ..Default::default()
        };
        assert_eq!(
            s.parse_override("WWW.example.com=127.0.0.1:5000").unwrap(),
            ("www.example.com".into(), "127.0.0.1:5000".parse().unwrap())
        );
        assert_eq!(
            s.parse_override("*=127.0.0.1").unwrap().1,
            "127.0.0.1:8080".parse().unwrap()
        );
        assert!(s.parse_override("nope").is_err());
        assert!(s.parse_override("a=b").is_err());
    }
}
