//! TLS for the gRPC servers and the identity CA behind mutual TLS.
//!
//! * [`ServerTls`]: the server's certificate and key (PEM files, `--tls-cert`/`--tls-key`)
//!   and, for mutual TLS, the CA whose client certificates are accepted
//!   (`--tls-client-ca`). Client certificates are optional at the handshake
//!   (`client_auth_optional`) so that bearer tokens keep working over TLS; a presented
//!   one must chain to that CA (rustls checks the signature and validity period) and is
//!   then mapped to a credential of the token registry by the
//!   [`Authenticator`](crate::auth::Authenticator).
//! * [`IdentityCa`]: certledger's internal CA for its own TLS (not a customer issuer). It
//!   signs the servers' certificates and the client certificates issued through
//!   `TokenService.IssueClientCertificate`, from a CSR: the client's key never reaches the
//!   server. A client certificate carries its tenant and credential id as the SAN URI
//!   `urn:certledger:<tenant>:<credential id>` ([`client_uri`]).
//! * [`prepare_identity_dir`]: what certd does on first start: create the identity CA and
//!   a server certificate in `<data-dir>/tls/` (keys mode 0600, never logged), and reuse
//!   them afterwards.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::{DateTime, TimeDelta, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::{Args, ConfigError, Flag};

/// `--tls-cert`.
pub const TLS_CERT_FLAG: Flag = Flag::value(
    "tls-cert",
    "CERTLEDGER_TLS_CERT",
    "serve gRPC over TLS with this certificate (PEM, the chain after it); needs --tls-key",
);

/// `--tls-key`.
pub const TLS_KEY_FLAG: Flag = Flag::value(
    "tls-key",
    "CERTLEDGER_TLS_KEY",
    "the private key of --tls-cert (PEM PKCS#8, SEC1 or PKCS#1; keep it mode 0600)",
);

/// `--tls-client-ca`.
pub const TLS_CLIENT_CA_FLAG: Flag = Flag::value(
    "tls-client-ca",
    "CERTLEDGER_TLS_CLIENT_CA",
    "accept client certificates (mutual TLS) signed by this CA (PEM; certledger's identity CA); bearer tokens keep working",
);

/// `--identity-ca-cert`.
pub const IDENTITY_CA_CERT_FLAG: Flag = Flag::value(
    "identity-ca-cert",
    "CERTLEDGER_IDENTITY_CA_CERT",
    "the identity CA certificate (PEM) that signs client certificates (TokenService.IssueClientCertificate); needs --identity-ca-key",
);

/// `--identity-ca-key`.
pub const IDENTITY_CA_KEY_FLAG: Flag = Flag::value(
    "identity-ca-key",
    "CERTLEDGER_IDENTITY_CA_KEY",
    "the identity CA's private key (PEM PKCS#8; keep it mode 0600)",
);

/// The TLS options of every server binary.
pub const TLS_FLAGS: [Flag; 3] = [TLS_CERT_FLAG, TLS_KEY_FLAG, TLS_CLIENT_CA_FLAG];

/// The options of a binary that issues client certificates (hosts `TokenService`).
pub const IDENTITY_CA_FLAGS: [Flag; 2] = [IDENTITY_CA_CERT_FLAG, IDENTITY_CA_KEY_FLAG];

/// The files of `<data-dir>/tls/` that [`prepare_identity_dir`] writes.
pub mod files {
    /// The identity CA certificate: what clients trust (`certctl --ca-file`).
    pub const CA_CERT: &str = "ca.pem";
    /// The identity CA key (0600).
    pub const CA_KEY: &str = "ca-key.pem";
    /// The server certificate.
    pub const SERVER_CERT: &str = "server.pem";
    /// The server key (0600).
    pub const SERVER_KEY: &str = "server-key.pem";
}

/// Installs aws-lc-rs as the process's rustls provider (several are linked in, so
/// rustls cannot pick one itself). Returns whether this call installed it.
pub fn install_crypto_provider() -> bool {
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_ok()
}

/// Where a server's TLS material is (paths, from the flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The certificate (chain) PEM.
    pub cert: PathBuf,
    /// Its key PEM.
    pub key: PathBuf,
    /// The CA of accepted client certificates, if mutual TLS is on.
    pub client_ca: Option<PathBuf>,
}

impl TlsSettings {
    /// From [`TLS_FLAGS`] (those the binary declares); `None` when TLS is not asked for.
    pub fn from_args(args: &Args) -> Result<Option<Self>, ConfigError> {
        let path = |flag: &Flag| {
            args.value(flag.name)
                .filter(|v| !v.trim().is_empty())
                .map(PathBuf::from)
        };
        let (cert, key, client_ca) = (
            path(&TLS_CERT_FLAG),
            path(&TLS_KEY_FLAG),
            path(&TLS_CLIENT_CA_FLAG),
        );
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(Self {
                cert,
                key,
                client_ca,
            })),
            (None, None) if client_ca.is_some() => Err(args.error(
                TLS_CLIENT_CA_FLAG.name,
                "needs --tls-cert and --tls-key (client certificates are only asked for over TLS)",
            )),
            (None, None) => Ok(None),
            (Some(_), None) => Err(args.error(TLS_KEY_FLAG.name, "is required with --tls-cert")),
            (None, Some(_)) => Err(args.error(TLS_CERT_FLAG.name, "is required with --tls-key")),
        }
    }

    /// Reads and checks the files.
    pub fn load(&self) -> anyhow::Result<ServerTls> {
        let read = |path: &Path, what: &str| {
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the {what} {}", path.display()))
        };
        let cert = read(&self.cert, "TLS certificate (--tls-cert)")?;
        let key = read(&self.key, "TLS key (--tls-key)")?;
        let client_ca = match &self.client_ca {
            Some(path) => Some(read(path, "client CA (--tls-client-ca)")?),
            None => None,
        };
        ServerTls::from_pem(cert, key, client_ca).with_context(|| {
            format!(
                "TLS material {} / {}",
                self.cert.display(),
                self.key.display()
            )
        })
    }
}

/// A server's TLS identity and, for mutual TLS, the accepted client CA. Its `Debug`
/// never shows the key.
#[derive(Clone)]
pub struct ServerTls {
    cert_pem: String,
    key_pem: String,
    client_ca_pem: Option<String>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// From PEM text; checks that the certificates and the key parse (messages never
    /// quote the key).
    pub fn from_pem(
        cert_pem: String,
        key_pem: String,
        client_ca_pem: Option<String>,
    ) -> anyhow::Result<Self> {
        if parse_certificates(&cert_pem)?.is_empty() {
            bail!("the TLS certificate file holds no CERTIFICATE block");
        }
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|_| anyhow::anyhow!("the TLS key file holds no PEM private key"))?;
        if let Some(ca) = &client_ca_pem
            && parse_certificates(ca)?.is_empty()
        {
            bail!("the client CA file holds no CERTIFICATE block");
        }
        install_crypto_provider();
        Ok(Self {
            cert_pem,
            key_pem,
            client_ca_pem,
        })
    }

    /// Whether client certificates are accepted.
    pub fn mutual(&self) -> bool {
        self.client_ca_pem.is_some()
    }

    /// The server certificate (chain) PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    /// tonic's configuration: this identity; client certificates optional, checked
    /// against the client CA when presented.
    pub fn config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .timeout(std::time::Duration::from_secs(10));
        match &self.client_ca_pem {
            Some(ca) => config
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(true),
            None => config,
        }
    }

    /// A rustls configuration for HTTPS (HTTP/1.1) with this identity and no client
    /// certificates: the dashboard and JSON API authenticate with tokens.
    pub fn https_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        install_crypto_provider();
        let certs = parse_certificates(&self.cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|_| anyhow::anyhow!("the TLS key file holds no PEM private key"))?;
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                anyhow::anyhow!("the TLS certificate and key do not make a server identity: {e}")
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn parse_certificates(pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("not PEM certificates: {e}"))
}

/// The SAN URI a client certificate carries: `urn:certledger:<tenant>:<credential id>`.
pub fn client_uri(tenant: &str, credential_id: &str) -> String {
    format!("urn:certledger:{tenant}:{credential_id}")
}

/// The tenant and credential id of a [`client_uri`].
pub fn parse_client_uri(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("urn:certledger:")?;
    let (tenant, id) = rest.split_once(':')?;
    (!tenant.is_empty() && !id.is_empty() && !id.contains(':')).then_some((tenant, id))
}

/// What a presented client certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// From the SAN URI.
    pub tenant: String,
    /// From the SAN URI.
    pub credential_id: String,
    /// Lower-case hex SHA-256 of the DER.
    pub sha256_fingerprint: String,
    /// Its not-after.
    pub not_after: DateTime<Utc>,
}

/// Reads a presented (already chain-verified) client certificate. The error says what is
/// missing, for an `UNAUTHENTICATED` message.
pub fn peer_certificate(der: &[u8]) -> Result<PeerCertificate, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the client certificate does not parse: {e}"))?;
    let uri = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|name| match name {
                GeneralName::URI(uri) => parse_client_uri(uri).map(|_| *uri),
                _ => None,
            })
        })
        .ok_or_else(|| {
            "the client certificate names no certledger credential (SAN URI urn:certledger:<tenant>:<id>); \
             client certificates come from TokenService.IssueClientCertificate (certctl tokens client-cert)"
                .to_owned()
        })?;
    let (tenant, credential_id) =
        parse_client_uri(uri).ok_or_else(|| "unreachable: the URI parsed".to_owned())?;
    let not_after = DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
        .ok_or_else(|| "the client certificate's not-after is out of range".to_owned())?;
    Ok(PeerCertificate {
        tenant: tenant.to_owned(),
        credential_id: credential_id.to_owned(),
        sha256_fingerprint: hex::encode(Sha256::digest(der)),
        not_after,
    })
}

/// A client certificate the identity CA signed.
#[derive(Debug, Clone)]
pub struct SignedClientCertificate {
    /// PEM.
    pub pem: String,
    /// Lower-case hex serial.
    pub serial: String,
    /// Lower-case hex SHA-256 of the DER.
    pub sha256_fingerprint: String,
    /// `CN=<name>,O=<tenant>`.
    pub subject: String,
    /// Its not-after (whole seconds).
    pub not_after: DateTime<Utc>,
}

/// Who a client certificate is for.
#[derive(Debug, Clone, Copy)]
pub struct ClientSubject<'a> {
    /// The tenant it acts within.
    pub tenant: &'a str,
    /// The credential id (the token registry's).
    pub credential_id: &'a str,
    /// Its name (the common name).
    pub name: &'a str,
}

/// Why a CSR was not signed (a message for `INVALID_ARGUMENT` on `csr_pem`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CsrError(String);

/// certledger's internal CA for TLS (servers and client certificates). Its `Debug`
/// never shows the key.
pub struct IdentityCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for IdentityCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityCa").finish_non_exhaustive()
    }
}

/// Lifetime of a new identity CA: ten years.
const CA_VALID_DAYS: i64 = 3650;
/// Lifetime of a server certificate certd issues itself: one year (re-issued at start
/// when fewer than 30 days are left).
const SERVER_VALID_DAYS: i64 = 365;
const SERVER_RENEW_BEFORE_DAYS: i64 = 30;

fn offset(at: DateTime<Utc>) -> anyhow::Result<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(at.timestamp())
        .map_err(|e| anyhow::anyhow!("time {at} out of range: {e}"))
}

fn random_serial() -> (SerialNumber, String) {
    let mut bytes = rand::random::<[u8; 16]>();
    // Positive, and no leading zero byte to confuse comparisons.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    (SerialNumber::from_slice(&bytes), hex::encode(bytes))
}

impl IdentityCa {
    /// From the CA certificate and key PEM (which must belong together).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> anyhow::Result<Self> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| anyhow::anyhow!("the identity CA key does not parse: {e}"))?;
        let cert_der = parse_certificates(cert_pem)?
            .into_iter()
            .next()
            .context("the identity CA certificate file holds no CERTIFICATE block")?;
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| anyhow::anyhow!("the identity CA certificate does not parse: {e}"))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            bail!("the identity CA key does not belong to its certificate");
        }
        if !cert.is_ca() {
            bail!("the identity CA certificate is not a CA certificate (basic constraints)");
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| anyhow::anyhow!("the identity CA certificate: {e}"))?;
        install_crypto_provider();
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    /// From the files of `--identity-ca-cert` and `--identity-ca-key`.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let cert_pem = std::fs::read_to_string(cert)
            .with_context(|| format!("reading the identity CA certificate {}", cert.display()))?;
        let key_pem = std::fs::read_to_string(key)
            .with_context(|| format!("reading the identity CA key {}", key.display()))?;
        Self::from_pem(&cert_pem, &key_pem)
            .with_context(|| format!("identity CA {} / {}", cert.display(), key.display()))
    }

    /// A new identity CA (ECDSA P-256): its certificate PEM and key PEM.
    pub fn generate(common_name: &str, now: DateTime<Utc>) -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate().context("generating the identity CA key")?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "certledger");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = offset(now - TimeDelta::minutes(5))?;
        params.not_after = offset(now + TimeDelta::days(CA_VALID_DAYS))?;
        params.serial_number = Some(random_serial().0);
        let cert = params
            .self_signed(&key)
            .context("signing the identity CA certificate")?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The CA certificate PEM (what clients and servers trust).
    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for `names` (DNS names or IP addresses): certificate PEM and
    /// key PEM.
    pub fn issue_server(
        &self,
        names: &[String],
        now: DateTime<Utc>,
    ) -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate().context("generating the server key")?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().map_or("certledger", String::as_str),
        );
        dn.push(DnType::OrganizationName, "certledger");
        params.distinguished_name = dn;
        for name in names {
            params.subject_alt_names.push(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    name.as_str()
                        .try_into()
                        .map_err(|e| anyhow::anyhow!("server name {name:?}: {e}"))?,
                ),
            });
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = offset(now - TimeDelta::minutes(5))?;
        params.not_after = offset(now + TimeDelta::days(SERVER_VALID_DAYS))?;
        params.serial_number = Some(random_serial().0);
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("signing the server certificate")?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Signs a client certificate for the public key of `csr_pem` (whose signature must
    /// verify). Subject and names are the server's, whatever the CSR asks for:
    /// `CN=<name>,O=<tenant>`, SAN URI [`client_uri`], extended key usage clientAuth.
    pub fn sign_client(
        &self,
        csr_pem: &str,
        subject: ClientSubject<'_>,
        now: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> Result<SignedClientCertificate, CsrError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            CsrError(format!(
                "is not a PEM PKCS#10 request with a valid signature: {e}"
            ))
        })?;
        let internal = |what: &str, e: &dyn std::fmt::Display| CsrError(format!("{what}: {e}"));
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, subject.name);
        dn.push(DnType::OrganizationName, subject.tenant);
        params.distinguished_name = dn;
        let uri = client_uri(subject.tenant, subject.credential_id);
        params.subject_alt_names = vec![SanType::URI(
            uri.as_str()
                .try_into()
                .map_err(|e| internal("the credential URI", &e))?,
        )];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before =
            offset(now - TimeDelta::minutes(5)).map_err(|e| internal("not-before", &e))?;
        params.not_after = offset(not_after).map_err(|e| internal("not-after", &e))?;
        let (serial, serial_hex) = random_serial();
        params.serial_number = Some(serial);
        let signed = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(|e| internal("signing", &e))?;
        Ok(SignedClientCertificate {
            pem: signed.pem(),
            serial: serial_hex,
            sha256_fingerprint: hex::encode(Sha256::digest(signed.der())),
            subject: format!("CN={},O={}", subject.name, subject.tenant),
            not_after: DateTime::from_timestamp(not_after.timestamp(), 0).unwrap_or(not_after),
        })
    }
}

/// Writes `contents` to `path` (mode 0600 when `secret`), atomically: a temporary file
/// renamed into place.
fn write_file(path: &Path, contents: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// Whether the server certificate at `path` covers `names` and has more than 30 days
/// left.
fn server_certificate_fits(path: &Path, names: &[String], now: DateTime<Utc>) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok(pem) = std::fs::read_to_string(path) else {
        return false;
    };
    let Some(der) = parse_certificates(&pem)
        .ok()
        .and_then(|c| c.into_iter().next())
    else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    let fresh = cert.validity().not_after.timestamp()
        > (now + TimeDelta::days(SERVER_RENEW_BEFORE_DAYS)).timestamp();
    let present: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => <[u8; 4]>::try_from(*b)
                            .ok()
                            .map(|a| IpAddr::from(a).to_string()),
                        16 => <[u8; 16]>::try_from(*b)
                            .ok()
                            .map(|a| IpAddr::from(a).to_string()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    fresh && names.iter().all(|n| present.contains(n))
}

/// The identity directory certd keeps (`<data-dir>/tls`): creates the identity CA on
/// first use and a server certificate for `names` (localhost and 127.0.0.1 always
/// included) signed by it, re-issued when the names change or it nears its end. Returns
/// the identity CA. Keys are written 0600 and never logged.
pub fn prepare_identity_dir(
    dir: &Path,
    names: &[String],
    now: DateTime<Utc>,
) -> anyhow::Result<IdentityCa> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let (ca_cert, ca_key) = (dir.join(files::CA_CERT), dir.join(files::CA_KEY));
    if !ca_cert.exists() && !ca_key.exists() {
        let (cert, key) = IdentityCa::generate("certledger identity CA", now)?;
        write_file(&ca_key, &key, true)?;
        write_file(&ca_cert, &cert, false)?;
        tracing::info!(path = %ca_cert.display(), "identity CA created");
    }
    let ca = IdentityCa::load(&ca_cert, &ca_key)?;
    let mut all: Vec<String> = ["localhost", "127.0.0.1"].map(str::to_owned).to_vec();
    for name in names {
        if !all.contains(name) {
            all.push(name.clone());
        }
    }
    let (server_cert, server_key) = (dir.join(files::SERVER_CERT), dir.join(files::SERVER_KEY));
    if !server_key.exists() || !server_certificate_fits(&server_cert, &all, now) {
        let (cert, key) = ca.issue_server(&all, now)?;
        write_file(&server_key, &key, true)?;
        write_file(&server_cert, &cert, false)?;
        tracing::info!(path = %server_cert.display(), names = ?all, "server certificate issued by the identity CA");
    }
    Ok(ca)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_uris_round_trip() {
        let uri = client_uri("acme", "0190abc");
        assert_eq!(parse_client_uri(&uri), Some(("acme", "0190abc")));
        assert_eq!(parse_client_uri("urn:certledger:acme"), None);
        assert_eq!(parse_client_uri("urn:other:acme:x"), None);
        assert_eq!(parse_client_uri("urn:certledger:acme:x:y"), None);
    }

    #[test]
    fn the_identity_dir_is_created_once_and_signs_clients() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let tls = dir.path().join("tls");
        let ca = prepare_identity_dir(&tls, &["certd.example".into()], now).unwrap();
        let first = std::fs::read_to_string(tls.join(files::CA_CERT)).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                |f: &str| std::fs::metadata(tls.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(files::CA_KEY), 0o600);
            assert_eq!(mode(files::SERVER_KEY), 0o600);
        }
        let server = std::fs::read_to_string(tls.join(files::SERVER_CERT)).unwrap();
        // Reused on the next start.
        prepare_identity_dir(&tls, &["certd.example".into()], now).unwrap();
        assert_eq!(
            std::fs::read_to_string(tls.join(files::CA_CERT)).unwrap(),
            first
        );
        assert_eq!(
            std::fs::read_to_string(tls.join(files::SERVER_CERT)).unwrap(),
            server
        );
        assert_eq!(ca.certificate_pem(), first);

        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let signed = ca
            .sign_client(
                &csr,
                ClientSubject {
                    tenant: "acme",
                    credential_id: "c1",
                    name: "web-1",
                },
                now,
                now + TimeDelta::days(1),
            )
            .unwrap();
        let der = parse_certificates(&signed.pem).unwrap().remove(0);
        let peer = peer_certificate(&der).unwrap();
        assert_eq!(
            (peer.tenant.as_str(), peer.credential_id.as_str()),
            ("acme", "c1")
        );
        assert_eq!(peer.sha256_fingerprint, signed.sha256_fingerprint);
        assert_eq!(peer.not_after, signed.not_after);
        assert!(!signed.pem.contains("PRIVATE KEY"));
        assert!(
            ca.sign_client(
                "not a csr",
                ClientSubject {
                    tenant: "acme",
                    credential_id: "c2",
                    name: "x"
                },
                now,
                now + TimeDelta::days(1)
            )
            .is_err()
        );
        // The server certificate has the names asked for.
        assert!(server_certificate_fits(
            &tls.join(files::SERVER_CERT),
            &[
                "localhost".into(),
                "127.0.0.1".into(),
                "certd.example".into()
            ],
            now
        ));
        assert!(!server_certificate_fits(
            &tls.join(files::SERVER_CERT),
            &["other.example".into()],
            now
        ));
    }
}
