//! TLS and mutual TLS against a real certd (`--tls`), over real handshakes: the server
//! certificate chains to certd's identity CA (checked by `openssl`); bearer tokens keep
//! working over TLS; a client certificate issued through `TokenService` from a CSR
//! authenticates with its roles and is recorded as the actor; revoking it refuses it at
//! once, on the open connection; one expired by the server's clock, one whose validity
//! is over, and one signed by another CA are all refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, ensure};
use certledger_proto::auth::v1::token_service_client::TokenServiceClient;
use certledger_proto::auth::v1::{
    IssueClientCertificateRequest, ListTokensRequest, RevokeTokenRequest, WhoAmIRequest,
};
use certledger_proto::common::v1::{
    CertificateSpec, DomainSlotKind, KeyAlgorithm, Role, ValidationMethod,
};
use certledger_proto::issuance::v1::GetCaChainRequest;
use certledger_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;
use certledger_proto::order::v1::application::KeySource;
use certledger_proto::order::v1::order_service_client::OrderServiceClient;
use certledger_proto::order::v1::{Application, GetHistoryRequest, PlaceOrderRequest};
use certledger_runtime::clock::ManualClock;
use chrono::{TimeDelta, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request};

struct Running {
    url: String,
    ca_pem: String,
    data: PathBuf,
    admin: String,
    clock: Arc<ManualClock>,
    shutdown: CancellationToken,
    certd: certledger_certd::Certd,
    _dir: tempfile::TempDir,
}

/// certd on free loopback ports with its data in `data`, with `extra` options.
fn configure(data: &Path, extra: &[&str]) -> anyhow::Result<certledger_certd::CertdConfig> {
    let mut argv: Vec<String> = [
        "--data-dir",
        &data.display().to_string(),
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "off",
        "--revocation-http-listen",
        "127.0.0.1:0",
    ]
    .map(str::to_owned)
    .to_vec();
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    certledger_certd::configure(argv, |_| None)?.context("configuration")
}

/// The first token certd wrote into `data`.
fn admin_token(data: &Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(data.join("admin.token"))?
        .trim()
        .to_owned())
}

/// A PEM CSR for a fresh key: (CSR, the key).
fn csr() -> anyhow::Result<(String, KeyPair)> {
    let key = KeyPair::generate()?;
    let csr = CertificateParams::new(vec![])?
        .serialize_request(&key)?
        .pem()?;
    Ok((csr, key))
}

async fn start() -> anyhow::Result<Running> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut config = configure(&data, &["--tls"])?;
    let clock = ManualClock::new(Utc::now());
    config.auth_clock = clock.clone();
    let shutdown = CancellationToken::new();
    let certd = certledger_certd::start(&config, shutdown.clone()).await?;
    let url = certd.grpc_url();
    ensure!(url.starts_with("https://"), "{url}");
    let admin = admin_token(&data)?;
    let ca_pem = std::fs::read_to_string(data.join("tls/ca.pem"))?;
    Ok(Running {
        url,
        ca_pem,
        data,
        admin,
        clock,
        shutdown,
        certd,
        _dir: dir,
    })
}

impl Running {
    /// A TLS channel trusting the identity CA, presenting `identity` if given.
    async fn channel(&self, identity: Option<(&str, &str)>) -> anyhow::Result<Channel> {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Ok(Channel::from_shared(self.url.clone())?
            .tls_config(tls)?
            .connect()
            .await?)
    }

    /// Issues a client certificate for a key generated here: (credential id, cert PEM,
    /// key PEM).
    async fn client_certificate(
        &self,
        name: &str,
        roles: &[Role],
        valid_days: u32,
    ) -> anyhow::Result<(String, String, String)> {
        let (csr, key) = csr()?;
        let channel = self.channel(None).await?;
        let issued = TokenServiceClient::new(channel)
            .issue_client_certificate(bearer(
                &self.admin,
                IssueClientCertificateRequest {
                    name: name.into(),
                    roles: roles.iter().map(|r| *r as i32).collect(),
                    valid_days,
                    tenant: String::new(),
                    csr_pem: csr,
                },
            )?)
            .await?
            .into_inner();
        let token = issued.token.context("token")?;
        let info = token.client_certificate.context("client certificate")?;
        ensure!(info.sha256_fingerprint.len() == 64, "{info:?}");
        ensure!(info.subject == format!("CN={name},O=default"), "{info:?}");
        ensure!(issued.ca_certificate_pem == self.ca_pem);
        ensure!(!issued.certificate_pem.contains("PRIVATE KEY"));
        Ok((token.token_id, issued.certificate_pem, key.serialize_pem()))
    }
}

fn bearer<T>(token: &str, message: T) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

fn spec() -> CertificateSpec {
    CertificateSpec {
        validity_days: 30,
        ..certledger_testkit::certificate_spec(DomainSlotKind::Single, 0, ValidationMethod::None)
    }
}

fn place_order() -> PlaceOrderRequest {
    PlaceOrderRequest {
        spec: Some(spec()),
        application: Some(Application {
            domains: vec!["mtls.example.test".into()],
            key_source: Some(KeySource::GenerateKey(KeyAlgorithm::Unspecified as i32)),
            ..Default::default()
        }),
        idempotency_key: String::new(),
    }
}

async fn who(channel: Channel) -> Result<(String, Vec<i32>), tonic::Status> {
    let me = TokenServiceClient::new(channel)
        .who_am_i(WhoAmIRequest {})
        .await?
        .into_inner();
    Ok((me.actor, me.roles))
}

/// A client certificate naming credential `uri` signed by `issuer`, valid from
/// `not_before` to `not_after` (certificate PEM, key PEM).
fn forge(
    issuer: &Issuer<'_, KeyPair>,
    uri: &str,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![])?;
    params.distinguished_name.push(DnType::CommonName, "forged");
    params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The TLS 1.2 handshake of `openssl s_client` presenting this client certificate: its
/// output, with the alert the server sent if it refused the certificate.
fn handshake_with(running: &Running, cert: &str, key: &str) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let (cert_file, key_file) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert_file, cert)?;
    std::fs::write(&key_file, key)?;
    let addr = running.url.trim_start_matches("https://").to_owned();
    openssl(
        &[
            "s_client",
            "-tls1_2",
            "-connect",
            &addr,
            "-CAfile",
            &path(&running.data.join("tls/ca.pem")),
            "-cert",
            &path(&cert_file),
            "-key",
            &path(&key_file),
            "-alpn",
            "h2",
        ],
        "",
    )
}

/// Whether a call with this client certificate is refused (at the handshake, or by the
/// server with `UNAUTHENTICATED`); the refusal's text.
async fn refused(running: &Running, cert: &str, key: &str) -> anyhow::Result<String> {
    let outcome = match running.channel(Some((cert, key))).await {
        Err(e) => return Ok(format!("{e:?}")),
        Ok(channel) => who(channel).await,
    };
    match outcome {
        Ok(me) => anyhow::bail!("accepted as {me:?}"),
        Err(status) => {
            ensure!(
                status.code() != Code::PermissionDenied,
                "refused for the wrong reason: {status:?}"
            );
            Ok(format!("{:?}: {}", status.code(), status.message()))
        }
    }
}

fn openssl(args: &[&str], stdin: &str) -> anyhow::Result<String> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running openssl")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_certificate_chains_to_the_identity_ca_and_tokens_work_over_tls()
-> anyhow::Result<()> {
    let running = start().await?;
    let tls = running.data.join("tls");
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca-key.pem", "server-key.pem"] {
            let mode = std::fs::metadata(tls.join(key))?.permissions().mode() & 0o777;
            ensure!(mode == 0o600, "{key} has mode {mode:o}");
        }
    }
    // openssl checks the chain of the file and of what the server presents.
    let verified = openssl(
        &[
            "verify",
            "-CAfile",
            &path(&tls.join("ca.pem")),
            "-purpose",
            "sslserver",
            &path(&tls.join("server.pem")),
        ],
        "",
    )?;
    ensure!(verified.contains(": OK"), "{verified}");
    let addr = running.url.trim_start_matches("https://").to_owned();
    let handshake = openssl(
        &[
            "s_client",
            "-connect",
            &addr,
            "-CAfile",
            &path(&tls.join("ca.pem")),
            "-verify_return_error",
            "-verify_ip",
            "127.0.0.1",
            "-alpn",
            "h2",
        ],
        "",
    )?;
    ensure!(
        handshake.contains("Verify return code: 0 (ok)"),
        "{handshake}"
    );

    // A bearer token over TLS, without a client certificate.
    let channel = running.channel(None).await?;
    let (actor, _) = who_with(&running.admin, channel.clone()).await?;
    ensure!(actor.starts_with("token:"), "{actor}");
    // No credentials at all: UNAUTHENTICATED, saying what to send.
    let anonymous = who(channel).await.err().context("anonymous accepted")?;
    ensure!(
        anonymous.code() == Code::Unauthenticated
            && anonymous.message().contains("client certificate"),
        "{anonymous:?}"
    );
    // Plaintext to the TLS port gets nowhere.
    let plain = match Channel::from_shared(running.url.replace("https://", "http://"))?
        .connect()
        .await
    {
        Ok(channel) => who_with(&running.admin, channel).await.err(),
        Err(e) => Some(anyhow::Error::from(e)),
    };
    ensure!(plain.is_some(), "a plaintext call went through");

    // A restart reuses the CA and the server certificate.
    let ca_before = running.ca_pem.clone();
    let server_before = std::fs::read_to_string(tls.join("server.pem"))?;
    running.shutdown.cancel();
    running.certd.wait().await?;
    certledger_runtime::tls::prepare_identity_dir(&tls, &[], Utc::now())?;
    ensure!(std::fs::read_to_string(tls.join("ca.pem"))? == ca_before);
    ensure!(std::fs::read_to_string(tls.join("server.pem"))? == server_before);
    Ok(())
}

async fn who_with(token: &str, channel: Channel) -> anyhow::Result<(String, Vec<i32>)> {
    let me = TokenServiceClient::new(channel)
        .who_am_i(bearer(token, WhoAmIRequest {})?)
        .await?
        .into_inner();
    Ok((me.actor, me.roles))
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_authenticate_with_their_roles_until_revoked() -> anyhow::Result<()> {
    let running = start().await?;

    // A viewer: reads, but may not order.
    let (viewer_id, cert, key) = running
        .client_certificate("dashboard reader", &[Role::Viewer], 30)
        .await?;
    let channel = running.channel(Some((&cert, &key))).await?;
    let (actor, roles) = who(channel.clone()).await?;
    ensure!(actor == format!("cert:{viewer_id}"), "{actor}");
    ensure!(roles == vec![Role::Viewer as i32], "{roles:?}");
    IssuanceServiceClient::new(channel.clone())
        .get_ca_chain(GetCaChainRequest::default())
        .await?;
    let denied = OrderServiceClient::new(channel.clone())
        .place_order(place_order())
        .await
        .err()
        .context("a viewer placed an order")?;
    ensure!(
        denied.code() == Code::PermissionDenied && denied.message().contains("\"order\""),
        "{denied:?}"
    );

    // An operator's certificate orders, and the event records it as the actor.
    let (operator_id, cert, key) = running
        .client_certificate("deploy robot", &[Role::Operator], 30)
        .await?;
    let operator = running.channel(Some((&cert, &key))).await?;
    let mut orders = OrderServiceClient::new(operator);
    let placed = orders.place_order(place_order()).await?.into_inner();
    let id = placed.certificate.context("certificate")?.certificate_id;
    let history = orders
        .get_history(GetHistoryRequest { certificate_id: id })
        .await?
        .into_inner();
    let first = history.entries.first().context("history")?;
    ensure!(first.actor == format!("cert:{operator_id}"), "{first:?}");

    // Listed with the tokens, without any key.
    let admin = running.channel(None).await?;
    let mut tokens = TokenServiceClient::new(admin);
    let listed = tokens
        .list_tokens(bearer(&running.admin, ListTokensRequest::default())?)
        .await?
        .into_inner();
    let record = listed
        .tokens
        .iter()
        .find(|t| t.token_id == viewer_id)
        .context("the certificate is not listed")?;
    ensure!(record.client_certificate.is_some() && record.expires_at.is_some());

    // Revoked: refused at once, on the connection already open.
    tokens
        .revoke_token(bearer(
            &running.admin,
            RevokeTokenRequest {
                token_id: viewer_id.clone(),
                reason: "laptop stolen".into(),
                tenant: String::new(),
            },
        )?)
        .await?;
    let revoked = who(channel).await.err().context("revoked cert accepted")?;
    ensure!(
        revoked.code() == Code::Unauthenticated
            && revoked.message().contains(&format!(
                "client certificate {viewer_id} was revoked: laptop stolen"
            )),
        "{revoked:?}"
    );

    running.shutdown.cancel();
    running.certd.wait().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_and_foreign_client_certificates_are_refused() -> anyhow::Result<()> {
    let running = start().await?;

    // Expired by the server's clock (the TLS layer, on the real clock, let it through).
    let (short_id, cert, key) = running
        .client_certificate("one-day job", &[Role::Viewer], 1)
        .await?;
    let channel = running.channel(Some((&cert, &key))).await?;
    who(channel.clone()).await?;
    running.clock.advance(TimeDelta::days(2));
    let expired = who(channel).await.err().context("expired cert accepted")?;
    ensure!(
        expired.code() == Code::Unauthenticated
            && expired
                .message()
                .contains(&format!("client certificate {short_id} expired at")),
        "{expired:?}"
    );
    running.clock.set(Utc::now());

    // A certificate for a real credential whose validity period is over, signed by the
    // identity CA itself: the handshake refuses it (the alert says why).
    let (live_id, _, _) = running
        .client_certificate("live", &[Role::Viewer], 30)
        .await?;
    let uri = format!("urn:certledger:default:{live_id}");
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(
        running.data.join("tls/ca-key.pem"),
    )?)?;
    let identity_ca = Issuer::from_ca_cert_pem(&running.ca_pem, ca_key)?;
    let now = time::OffsetDateTime::now_utc();
    let (cert, key) = forge(
        &identity_ca,
        &uri,
        now - time::Duration::days(10),
        now - time::Duration::days(1),
    )?;
    refused(&running, &cert, &key).await?;
    let alert = handshake_with(&running, &cert, &key)?;
    ensure!(alert.contains("alert certificate expired"), "{alert}");
    // Even inside its validity, a certificate the registry does not know (another
    // fingerprint under the same id) is refused by certd.
    let (cert, key) = forge(
        &identity_ca,
        &uri,
        now - time::Duration::days(1),
        now + time::Duration::days(1),
    )?;
    let unknown = refused(&running, &cert, &key).await?;
    ensure!(
        unknown.contains("Unauthenticated") && unknown.contains("not a credential"),
        "{unknown}"
    );

    // Signed by another CA, naming the live credential: the handshake refuses it as
    // signed by an unknown CA.
    let other_key = KeyPair::generate()?;
    let mut other = CertificateParams::new(vec![])?;
    other
        .distinguished_name
        .push(DnType::CommonName, "someone else's CA");
    other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    other.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let other_issuer = Issuer::new(other, other_key);
    let (cert, key) = forge(
        &other_issuer,
        &uri,
        now - time::Duration::days(1),
        now + time::Duration::days(1),
    )?;
    refused(&running, &cert, &key).await?;
    let alert = handshake_with(&running, &cert, &key)?;
    ensure!(alert.contains("alert unknown ca"), "{alert}");

    // A request without a CSR, or with garbage, names the field.
    let bad = TokenServiceClient::new(running.channel(None).await?)
        .issue_client_certificate(bearer(
            &running.admin,
            IssueClientCertificateRequest {
                name: "x".into(),
                roles: vec![Role::Viewer as i32],
                valid_days: 1,
                tenant: String::new(),
                csr_pem:
                    "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
                        .into(),
            },
        )?)
        .await
        .err()
        .context("garbage CSR accepted")?;
    ensure!(
        bad.code() == Code::InvalidArgument && bad.message().contains("csr_pem"),
        "{bad:?}"
    );

    running.shutdown.cancel();
    running.certd.wait().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn without_tls_there_is_no_identity_ca_to_issue_client_certificates() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let config = configure(&data, &[])?;
    let shutdown = CancellationToken::new();
    let certd = certledger_certd::start(&config, shutdown.clone()).await?;
    ensure!(certd.grpc_url().starts_with("http://"));
    let admin = admin_token(&data)?;
    let channel = Channel::from_shared(certd.grpc_url())?.connect().await?;
    let (csr, _) = csr()?;
    let refused = TokenServiceClient::new(channel)
        .issue_client_certificate(bearer(
            &admin,
            IssueClientCertificateRequest {
                name: "x".into(),
                roles: vec![Role::Viewer as i32],
                valid_days: 1,
                tenant: String::new(),
                csr_pem: csr,
            },
        )?)
        .await
        .err()
        .context("issued without an identity CA")?;
    ensure!(
        refused.code() == Code::FailedPrecondition && refused.message().contains("--tls"),
        "{refused:?}"
    );
    ensure!(!data.join("tls").exists());
    // --tls with --insecure-no-auth is refused at configuration.
    let e = certledger_certd::configure(
        ["--tls", "--insecure-no-auth"].map(str::to_owned).to_vec(),
        |_| None,
    )
    .err()
    .context("--tls with --insecure-no-auth accepted")?;
    ensure!(e.to_string().contains("--tls"), "{e}");
    shutdown.cancel();
    certd.wait().await?;
    Ok(())
}
