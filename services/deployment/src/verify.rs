//! What does a TLS server serve? A real handshake (rustls, aws-lc-rs) that reports the
//! SHA-256 fingerprint of the leaf certificate presented.
//!
//! This is a probe of what is served, not a trust decision: any chain is accepted (an
//! expired or privately issued certificate must still be seen for what it is). The
//! handshake signature *is* checked against the presented certificate, so the server is
//! proven to hold the matching private key.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::bundle::{normalize_fingerprint, sha256_fingerprint};

/// The least time a retry is given before the deadline.
const MIN_FAIR_ATTEMPT: Duration = Duration::from_millis(250);

/// Why a probe saw no certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The address is not `host:port`.
    #[error("{0:?} is not host:port")]
    Address(String),
    /// The server name is not a DNS name or IP address.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    /// No TCP connection.
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// The address.
        address: String,
        /// The OS's reason.
        reason: String,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with {address} failed: {reason}")]
    Handshake {
        /// The address.
        address: String,
        /// rustls's reason.
        reason: String,
    },
    /// The server presented no certificate.
    #[error("{0} presented no certificate")]
    NoCertificate(String),
    /// Connect and handshake did not finish in time.
    #[error("no TLS handshake with {address} within {} ms", timeout.as_millis())]
    Timeout {
        /// The address.
        address: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// The TLS client could not be configured.
    #[error("TLS client configuration: {0}")]
    Config(String),
}

/// How long and how often [`wait_for_fingerprint`] tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Give up after this long.
    pub deadline: Duration,
    /// Time allowed for one connect + handshake.
    pub handshake_timeout: Duration,
    /// Pause after the first failed attempt; doubles after each.
    pub initial_backoff: Duration,
    /// The longest pause between attempts.
    pub max_backoff: Duration,
    /// Consecutive handshakes that must see the expected certificate (at least 1).
    pub confirmations: u32,
    /// The time those handshakes must span. After a reload, old workers keep accepting
    /// connections for a moment beside the new ones (nginx signals them about 100 ms after
    /// starting the new workers), so one good handshake does not yet mean every new
    /// connection gets the new certificate.
    pub settle: Duration,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(3),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            confirmations: 3,
            settle: Duration::from_millis(500),
        }
    }
}

/// The expected certificate was served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// Its fingerprint.
    pub fingerprint: String,
    /// Handshakes it took.
    pub attempts: u32,
}

/// The expected certificate was not seen before the deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFailure {
    /// The fingerprint expected.
    pub expected: String,
    /// Handshakes tried.
    pub attempts: u32,
    /// The last fingerprint served instead, if a handshake succeeded.
    pub last_fingerprint: Option<String>,
    /// The last probe error, if the last attempt failed.
    pub last_error: Option<ProbeError>,
    /// Whether the expected certificate was seen at all (served, but not steadily).
    pub seen_expected: bool,
}

impl VerifyFailure {
    /// What was observed: the last fingerprint served instead or, when no other certificate
    /// was seen, why no certificate was seen.
    pub fn observed(&self) -> String {
        match (&self.last_fingerprint, &self.last_error) {
            (Some(fp), _) => fp.clone(),
            (None, Some(e)) => e.to_string(),
            (None, None) if self.seen_expected => format!("{} (not steadily)", self.expected),
            (None, None) => "nothing".into(),
        }
    }

    /// A sentence for a person.
    pub fn message(&self, address: &str) -> String {
        let (expected, attempts) = (&self.expected, self.attempts);
        match (&self.last_fingerprint, &self.last_error) {
            (Some(fp), last_error) => {
                let mut m = if self.seen_expected {
                    format!(
                        "{address} serves certificate {expected} only intermittently (also \
                         {fp}) after {attempts} handshakes"
                    )
                } else {
                    format!(
                        "{address} still serves certificate {fp} instead of {expected} after \
                         {attempts} handshakes"
                    )
                };
                if let Some(e) = last_error {
                    m.push_str(&format!("; last attempt: {e}"));
                }
                m
            }
            (None, Some(e)) => format!(
                "certificate {expected} not seen on {address} after {attempts} attempts: {e}"
            ),
            (None, None) => format!(
                "certificate {expected} seen on {address}, but not steadily before the deadline"
            ),
        }
    }
}

/// One handshake with `address` (`host:port`), sending `server_name` as SNI (default: the
/// host of `address`; an IP address sends no SNI). Returns the SHA-256 fingerprint
/// (lower-case hex of the DER) of the leaf certificate presented.
pub async fn served_fingerprint(
    address: &str,
    server_name: Option<&str>,
    timeout: Duration,
) -> Result<String, ProbeError> {
    let name = server_name_for(address, server_name)?;
    let config = client_config()?;
    let connector = TlsConnector::from(config);
    let handshake = async {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|e| ProbeError::Connect {
                address: address.to_string(),
                reason: e.to_string(),
            })?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| ProbeError::Handshake {
                address: address.to_string(),
                reason: e.to_string(),
            })?;
        let (_, connection) = tls.get_ref();
        connection
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|leaf| sha256_fingerprint(leaf.as_ref()))
            .ok_or_else(|| ProbeError::NoCertificate(address.to_string()))
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| ProbeError::Timeout {
            address: address.to_string(),
            timeout,
        })?
}

/// Handshakes with `address` until it steadily serves the certificate `expected`
/// (fingerprint, any common notation): `options.confirmations` handshakes in a row over at
/// least `options.settle`, backing off between failed attempts, until `options.deadline`.
/// A server reload is asynchronous (old workers finish gracefully), so the first handshakes
/// may still see the previous certificate, and a first good one may be followed by a last
/// one from an old worker.
pub async fn wait_for_fingerprint(
    address: &str,
    server_name: Option<&str>,
    expected: &str,
    options: &VerifyOptions,
) -> Result<Served, VerifyFailure> {
    let expected = normalize_fingerprint(expected);
    let deadline = Instant::now() + options.deadline;
    let confirmations = options.confirmations.max(1);
    let confirm_interval = options.settle / confirmations.saturating_sub(1).max(1);
    let mut backoff = options.initial_backoff;
    let mut streak: u32 = 0;
    let mut streak_start = Instant::now();
    let mut failure = VerifyFailure {
        expected: expected.clone(),
        attempts: 0,
        last_fingerprint: None,
        last_error: None,
        seen_expected: false,
    };
    loop {
        failure.attempts += 1;
        let started = Instant::now();
        let remaining = deadline.saturating_duration_since(started);
        let attempt_timeout = options
            .handshake_timeout
            .min(remaining)
            .max(Duration::from_millis(1));
        match served_fingerprint(address, server_name, attempt_timeout).await {
            Ok(fingerprint) if fingerprint == expected => {
                failure.seen_expected = true;
                if streak == 0 {
                    streak_start = started;
                }
                streak += 1;
                if streak >= confirmations && started - streak_start >= options.settle {
                    return Ok(Served {
                        fingerprint,
                        attempts: failure.attempts,
                    });
                }
            }
            Ok(fingerprint) => {
                tracing::debug!(address, served = %fingerprint, expected = %expected, "not served yet");
                streak = 0;
                failure.last_fingerprint = Some(fingerprint);
                failure.last_error = None;
            }
            Err(
                e @ (ProbeError::Address(_) | ProbeError::ServerName(_) | ProbeError::Config(_)),
            ) => {
                failure.last_error = Some(e);
                return Err(failure);
            }
            Err(e) => {
                tracing::debug!(address, error = %e, "probe failed");
                streak = 0;
                failure.last_error = Some(e);
            }
        }
        // Another attempt only if it still gets a fair time: one cut short by the deadline
        // would fail for that reason alone and hide what was observed.
        let now = Instant::now();
        let fair = options.handshake_timeout.min(MIN_FAIR_ATTEMPT);
        let Some(left) = deadline.checked_duration_since(now + fair) else {
            return Err(failure);
        };
        let pause = if streak > 0 {
            confirm_interval
        } else {
            let pause = backoff;
            backoff = (backoff * 2).min(options.max_backoff);
            pause
        };
        tokio::time::sleep(pause.min(left)).await;
    }
}

/// The TLS server name for a probe of `address`: `sni` if given, else the address's host.
fn server_name_for(address: &str, sni: Option<&str>) -> Result<ServerName<'static>, ProbeError> {
    let host = host_of(address).ok_or_else(|| ProbeError::Address(address.to_string()))?;
    let name = match sni {
        Some(sni) if !sni.trim().is_empty() => sni.trim(),
        _ => host,
    };
    ServerName::try_from(name.to_string()).map_err(|_| ProbeError::ServerName(name.to_string()))
}

/// The host part of `host:port` or `[v6]:port`.
fn host_of(address: &str) -> Option<&str> {
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':')?)
    } else {
        address.rsplit_once(':')?
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return None;
    }
    Some(host)
}

fn client_config() -> Result<Arc<ClientConfig>, ProbeError> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let verifier = Arc::new(AcceptAnyChain {
                algorithms: provider.signature_verification_algorithms,
            });
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|builder| {
                    Arc::new(
                        builder
                            .dangerous()
                            .with_custom_certificate_verifier(verifier)
                            .with_no_client_auth(),
                    )
                })
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(ProbeError::Config)
}

/// Accepts whatever chain the server presents (the probe reports it, it does not trust it)
/// but checks the handshake signature, so the server must hold the certificate's key.
#[derive(Debug)]
struct AcceptAnyChain {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyChain {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_names() {
        assert_eq!(host_of("127.0.0.1:443"), Some("127.0.0.1"));
        assert_eq!(host_of("[::1]:8443"), Some("::1"));
        assert_eq!(host_of("example.test:443"), Some("example.test"));
        assert_eq!(host_of("example.test"), None);
        assert_eq!(host_of(":443"), None);
        assert_eq!(host_of("h:99999"), None);
        assert!(matches!(
            server_name_for("127.0.0.1:443", None),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name_for("127.0.0.1:443", Some("www.example.test")),
            Ok(ServerName::DnsName(_))
        ));
        assert!(matches!(
            server_name_for("nope", None),
            Err(ProbeError::Address(_))
        ));
    }

    #[tokio::test]
    async fn refused_connection_is_reported_before_the_deadline() {
        // Bind then drop a listener to get a port nothing listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let address = format!("127.0.0.1:{port}");
        let options = VerifyOptions {
            deadline: Duration::from_secs(1),
            ..VerifyOptions::default()
        };
        let failure = wait_for_fingerprint(&address, None, "AA:BB", &options)
            .await
            .unwrap_err();
        assert_eq!(failure.expected, "aabb");
        assert!(failure.attempts >= 2, "{failure:?}");
        assert!(matches!(
            failure.last_error,
            Some(ProbeError::Connect { .. })
        ));
    }
}
