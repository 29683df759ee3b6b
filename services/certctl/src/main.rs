//! `certctl`: the command-line client of certledger over gRPC. See `certctl help`.

mod args;
mod lifecycle;
mod render;
mod tokens;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use certledger_proto::common::v1::{
    CertificateSpec, CertificateStatus, DomainSlotKind, DomainSlots, KeyAlgorithm, PageRequest,
    ValidationMethod,
};
use certledger_proto::deployment::v1::deployment_service_client::DeploymentServiceClient;
use certledger_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;
use certledger_proto::issuance::v1::{
    ApproveApplicationRequest, ExportCertificateRequest, GetCaChainRequest, KeyFormat,
    RejectApplicationRequest,
};
use certledger_proto::order::v1::application::KeySource;
use certledger_proto::order::v1::order_service_client::OrderServiceClient;
use certledger_proto::order::v1::{
    Application, Certificate, GetCertificateRequest, GetHistoryRequest, HistoryEntry,
    ListCertificatesRequest, PlaceOrderRequest, SubmitApplicationRequest, WatchCertificateRequest,
};
use certledger_proto::revocation::v1::revocation_service_client::RevocationServiceClient;
use tokio_stream::StreamExt;
use tonic::Streaming;
use tonic::transport::Channel;

use args::{Args, UsageError};

/// The default server: certd's default gRPC address.
const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";
/// Request metadata naming the tenant.
const TENANT_HEADER: &str = "x-certledger-tenant";

const HELP: &str = "certctl: the command-line client of certledger (gRPC)

Usage: certctl [--server URL] [--tenant ID] [--json] <command> [options]

Commands:
  order     order a certificate; with --domain the application is submitted inline
              --domain NAME (repeatable)  --generate-key ALG | --csr FILE
              --validation approval|http-01|none (default approval)
              --validity-days N  --auto-renew  --idempotency-key KEY
              --issuer ID (default builtin)  --slots single|wildcard|multi:N
              --wait (until issued or failed, showing progress)
              --quiet (print only the certificate id)
  apply ID  submit the application of an ordered certificate
              --domain NAME (repeatable)  --generate-key ALG | --csr FILE  --wait  --quiet
  approve ID [--comment TEXT] [--wait]   approve an application (validation approval)
  reject ID --reason TEXT                reject an application
  get ID                                 a certificate
  list [--status STATUS] [--domain TEXT] [--limit N]
  history ID                             every event of a certificate, as a timeline
  watch ID                               the history, then live events (Ctrl-C to stop)
  ca [--issuer ID]                       the issuing CA's chain (intermediate, root) in PEM
  export ID [--include-private-key] [--out DIR]
                                         the certificate and chain (and the key) in PEM;
                                         --out writes cert.pem, chain.pem, fullchain.pem,
                                         key.pem (0600)
  renew ID [--csr FILE] [--wait] [--quiet]
                                         order the successor of a certificate (same
                                         specification; --csr for a CSR-based one)
  revoke ID --reason REASON [--comment TEXT]
                                         revoke; REASON: unspecified key-compromise
                                         ca-compromise affiliation-changed superseded
                                         cessation-of-operation certificate-hold
                                         privilege-withdrawn aa-compromise
  targets [list]                         deployment targets
  targets add NAME --kind file|nginx|webhook [--quiet]
              file:    --cert-path P --key-path P [--chain-path P] [--command \"ARGV\"]
              nginx:   --cert-path P --key-path P --reload \"ARGV\" --verify-address HOST:PORT
                       [--verify-server-name NAME]
              webhook: --url URL --secret-file FILE [--max-attempts N]
              (paths are absolute paths on the server's host; ARGV is split at spaces)
  targets remove TARGET-ID
  deploy ID --target TARGET-ID           install on a target and wait until it is verified
                                         (or failed), showing progress
  tokens [list] [--for-tenant T]         API tokens of the tenant (admin)
  tokens create NAME --role ROLE [--role ROLE] [--valid-days N] [--for-tenant T]
                                         a new token; ROLE: viewer operator
                                         security-officer admin; the secret is shown once;
                                         --for-tenant: another tenant's (platform admins)
  tokens revoke TOKEN-ID [--reason TEXT] [--for-tenant T]
                                         it stops working at once (tokens and client
                                         certificates alike)
  tokens client-cert NAME --role ROLE [--role ROLE] --cert-out FILE --key-out FILE
              [--ca-out FILE] [--valid-days N] [--for-tenant T]
                                         a client certificate for mutual TLS: the key is
                                         generated here (ECDSA P-256, written 0600) and
                                         only a CSR is sent; use it with --cert/--key
  whoami                                 who the server takes you for
  help                                   this text

Key algorithms: ecdsa-p256 ecdsa-p384 rsa-2048 rsa-3072 rsa-4096 ed25519

Global options (anywhere on the line):
  --server URL   certd or the service to talk to [CERTLEDGER_SERVER] (default http://127.0.0.1:50051)
  --tenant ID    the tenant to act in, on a server without authentication [CERTLEDGER_TENANT]
  --token-file F the API token to send [CERTLEDGER_TOKEN_FILE] (default ./certledger-data/admin.token,
                 which certd writes at first start); CERTLEDGER_TOKEN=<token> takes precedence
  --ca-file F    the CA that signed the server's TLS certificate (https:// servers)
                 [CERTLEDGER_CA_FILE] (default ./certledger-data/tls/ca.pem if it exists,
                 the identity CA certd --tls creates); giving it implies https://
  --cert F       a client certificate to present (mutual TLS) [CERTLEDGER_CERT]; then no
  --key F        token is sent unless one is named explicitly [CERTLEDGER_KEY]
  --json         machine-readable output
";

/// Where certd --tls keeps its identity CA (certd's default data directory).
const DEFAULT_CA_FILE: &str = "./certledger-data/tls/ca.pem";

/// A failure: usage (exit 2) or the server's status (exit 1).
enum Failure {
    Usage(String),
    Status(tonic::Status),
    Other(String),
}

impl From<UsageError> for Failure {
    fn from(e: UsageError) -> Self {
        Failure::Usage(e.0)
    }
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Self {
        Failure::Status(s)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match run(argv).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("certctl: {message}\n(see certctl help)");
            ExitCode::from(2)
        }
        Err(Failure::Status(status)) => {
            eprintln!(
                "certctl: {}: {}",
                render::code_name(status.code()),
                status.message()
            );
            ExitCode::from(1)
        }
        Err(Failure::Other(message)) => {
            eprintln!("certctl: {message}");
            ExitCode::from(1)
        }
    }
}

struct Ctx {
    channel: Channel,
    tenant: Option<String>,
    token: Option<String>,
    json: bool,
}

impl Ctx {
    fn request<T>(&self, message: T) -> Result<tonic::Request<T>, Failure> {
        let mut request = tonic::Request::new(message);
        if let Some(tenant) = &self.tenant {
            let value = tenant.parse().map_err(|_| {
                Failure::Usage(format!("--tenant {tenant:?} is not a valid tenant id"))
            })?;
            request.metadata_mut().insert(TENANT_HEADER, value);
        }
        if let Some(token) = &self.token {
            let value = format!("Bearer {token}").parse().map_err(|_| {
                Failure::Usage("the API token has characters a header cannot carry".into())
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }

    fn order(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::new(self.channel.clone())
    }

    fn issuance(&self) -> IssuanceServiceClient<Channel> {
        IssuanceServiceClient::new(self.channel.clone())
    }

    fn deployment(&self) -> DeploymentServiceClient<Channel> {
        DeploymentServiceClient::new(self.channel.clone())
    }

    fn revocation(&self) -> RevocationServiceClient<Channel> {
        RevocationServiceClient::new(self.channel.clone())
    }

    /// The certificate as it is now.
    async fn certificate(&self, id: &str) -> Result<Certificate, Failure> {
        Ok(self
            .order()
            .get_certificate(self.request(GetCertificateRequest {
                certificate_id: id.to_owned(),
            })?)
            .await?
            .into_inner())
    }

    /// The certificate's events after `after_version`, then live ones.
    async fn watch(
        &self,
        id: &str,
        after_version: u64,
    ) -> Result<Streaming<HistoryEntry>, Failure> {
        Ok(self
            .order()
            .watch_certificate(self.request(WatchCertificateRequest {
                certificate_id: id.to_owned(),
                after_version,
            })?)
            .await?
            .into_inner())
    }
}

async fn run(argv: Vec<String>) -> Result<(), Failure> {
    let mut args = Args::parse(argv)?;
    let json = args.switch("json");
    let server = args
        .value("server")?
        .or_else(|| {
            std::env::var("CERTLEDGER_SERVER")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let tenant = args.value("tenant")?.or_else(|| {
        std::env::var("CERTLEDGER_TENANT")
            .ok()
            .filter(|s| !s.is_empty())
    });
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let ca_file = args.value("ca-file")?.or_else(|| env("CERTLEDGER_CA_FILE"));
    let identity = match (
        args.value("cert")?.or_else(|| env("CERTLEDGER_CERT")),
        args.value("key")?.or_else(|| env("CERTLEDGER_KEY")),
    ) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => return Err(Failure::Usage("--cert needs --key".into())),
        (None, Some(_)) => return Err(Failure::Usage("--key needs --cert".into())),
    };
    let token = tokens::find_token(args.value("token-file")?, identity.is_none())?;
    let Some(command) = args.next_positional() else {
        print!("{HELP}");
        return Ok(());
    };
    if matches!(command.as_str(), "help" | "--help" | "-h") || args.switch("help") {
        print!("{HELP}");
        return Ok(());
    }
    let server = if server.contains("://") {
        server
    } else if ca_file.is_some() || identity.is_some() {
        format!("https://{server}")
    } else {
        format!("http://{server}")
    };
    let mut endpoint = Channel::from_shared(server.clone())
        .map_err(|e| Failure::Usage(format!("--server {server:?}: {e}")))?
        .connect_timeout(Duration::from_secs(5));
    if server.starts_with("https://") {
        endpoint = endpoint
            .tls_config(tls_config(ca_file, identity)?)
            .map_err(|e| Failure::Usage(format!("TLS for {server}: {e}")))?;
    } else if identity.is_some() {
        return Err(Failure::Usage(format!(
            "--cert is presented over TLS only; {server} is plaintext (use https://)"
        )));
    }
    let channel = endpoint.connect_lazy();
    let ctx = Ctx {
        channel,
        tenant,
        token,
        json,
    };
    let result = match command.as_str() {
        "order" => order(&ctx, &mut args).await,
        "apply" => apply(&ctx, &mut args).await,
        "approve" => approve(&ctx, &mut args).await,
        "reject" => reject(&ctx, &mut args).await,
        "get" => get(&ctx, &mut args).await,
        "list" => list(&ctx, &mut args).await,
        "history" => history(&ctx, &mut args).await,
        "watch" => watch(&ctx, &mut args).await,
        "ca" => ca(&ctx, &mut args).await,
        "export" => export(&ctx, &mut args).await,
        "renew" => lifecycle::renew(&ctx, &mut args).await,
        "revoke" => lifecycle::revoke(&ctx, &mut args).await,
        "targets" => lifecycle::targets(&ctx, &mut args).await,
        "deploy" => lifecycle::deploy(&ctx, &mut args).await,
        "tokens" => tokens::tokens(&ctx, &mut args).await,
        "whoami" => tokens::whoami(&ctx, &mut args).await,
        other => Err(Failure::Usage(format!("unknown command {other:?}"))),
    };
    match result {
        Err(Failure::Status(status)) if status.code() == tonic::Code::Unavailable => {
            Err(Failure::Status(tonic::Status::unavailable(format!(
                "{server}: {} (is certd running? start it with `cargo run -p certledger-certd`)",
                status.message()
            ))))
        }
        Err(Failure::Status(status))
            if server.starts_with("http://")
                && (status.message().contains("h2 protocol error")
                    || status.message().contains("transport error")) =>
        {
            Err(Failure::Status(tonic::Status::new(
                status.code(),
                format!(
                    "{server}: {} (if the server serves TLS, e.g. certd --tls, use --server https://… with --ca-file)",
                    status.message()
                ),
            )))
        }
        other => other,
    }
}

/// TLS to the server: trust `ca_file` (or certd's default identity CA), present the
/// client certificate `identity` (certificate file, key file) if given.
fn tls_config(
    ca_file: Option<String>,
    identity: Option<(String, String)>,
) -> Result<tonic::transport::ClientTlsConfig, Failure> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |path: &str, what: &str| {
        std::fs::read_to_string(path).map_err(|e| Failure::Usage(format!("{what} {path}: {e}")))
    };
    let ca_file = ca_file
        .or_else(|| {
            std::path::Path::new(DEFAULT_CA_FILE)
                .exists()
                .then(|| DEFAULT_CA_FILE.to_owned())
        })
        .ok_or_else(|| {
            Failure::Usage(
                "an https:// server needs --ca-file (CERTLEDGER_CA_FILE): the CA of its certificate, e.g. certd's <data-dir>/tls/ca.pem".into(),
            )
        })?;
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&ca_file, "--ca-file")?));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            read(&cert, "--cert")?,
            read(&key, "--key")?,
        ));
    }
    Ok(tls)
}

fn key_algorithm(name: &str) -> Result<KeyAlgorithm, Failure> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "ecdsa-p256" | "p256" | "ec" | "ecdsa" => KeyAlgorithm::EcdsaP256,
        "ecdsa-p384" | "p384" => KeyAlgorithm::EcdsaP384,
        "rsa-2048" | "rsa2048" | "rsa" => KeyAlgorithm::Rsa2048,
        "rsa-3072" | "rsa3072" => KeyAlgorithm::Rsa3072,
        "rsa-4096" | "rsa4096" => KeyAlgorithm::Rsa4096,
        "ed25519" => KeyAlgorithm::Ed25519,
        other => {
            return Err(Failure::Usage(format!(
                "--generate-key {other:?}: use ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096 or ed25519"
            )));
        }
    })
}

fn validation_method(name: &str) -> Result<ValidationMethod, Failure> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "approval" => ValidationMethod::Approval,
        "http-01" | "http01" => ValidationMethod::Http01,
        "dns-01" | "dns01" => ValidationMethod::Dns01,
        "none" => ValidationMethod::None,
        other => {
            return Err(Failure::Usage(format!(
                "--validation {other:?}: use approval, http-01 or none"
            )));
        }
    })
}

/// The domain slots the names need (or `--slots`).
fn domain_slots(slots: Option<&str>, domains: &[String]) -> Result<DomainSlots, Failure> {
    let slot = |kind: DomainSlotKind, max_names: u32, allow_wildcards: bool| DomainSlots {
        kind: kind as i32,
        max_names,
        allow_wildcards,
    };
    if let Some(spec) = slots {
        return match spec {
            "single" => Ok(slot(DomainSlotKind::Single, 0, false)),
            "wildcard" => Ok(slot(DomainSlotKind::Wildcard, 0, true)),
            s => match s.strip_prefix("multi:").map(str::parse::<u32>) {
                Some(Ok(n)) => Ok(slot(DomainSlotKind::Multi, n, true)),
                _ => Err(Failure::Usage(format!(
                    "--slots {s:?}: use single, wildcard or multi:N"
                ))),
            },
        };
    }
    let wildcards = domains.iter().filter(|d| d.starts_with("*.")).count();
    Ok(match (domains.len(), wildcards) {
        (0 | 1, 0) => slot(DomainSlotKind::Single, 0, false),
        (1, 1) => slot(DomainSlotKind::Wildcard, 0, true),
        (2, 1)
            if domains.iter().any(|d| {
                domains
                    .iter()
                    .any(|w| w.strip_prefix("*.") == Some(d.as_str()))
            }) =>
        {
            slot(DomainSlotKind::Wildcard, 0, true)
        }
        (n, w) => slot(
            DomainSlotKind::Multi,
            u32::try_from(n).unwrap_or(u32::MAX),
            w > 0,
        ),
    })
}

/// The application from `--domain`, `--generate-key`/`--csr` (`None`: no names given).
fn application(
    args: &mut Args,
    default_key: Option<KeyAlgorithm>,
) -> Result<Option<Application>, Failure> {
    let domains = args.values("domain")?;
    let generate = args.value("generate-key")?;
    let csr = args.value("csr")?;
    if domains.is_empty() {
        if generate.is_some() || csr.is_some() {
            return Err(Failure::Usage(
                "--generate-key and --csr need at least one --domain".into(),
            ));
        }
        return Ok(None);
    }
    let key_source = match (generate, csr) {
        (Some(_), Some(_)) => {
            return Err(Failure::Usage(
                "give either --generate-key ALG or --csr FILE, not both".into(),
            ));
        }
        (Some(alg), None) => KeySource::GenerateKey(key_algorithm(&alg)? as i32),
        (None, Some(path)) => KeySource::CsrPem(
            std::fs::read_to_string(&path)
                .map_err(|e| Failure::Usage(format!("--csr {path}: {e}")))?,
        ),
        (None, None) => match default_key {
            Some(alg) => KeySource::GenerateKey(alg as i32),
            None => {
                return Err(Failure::Usage(
                    "the application needs --generate-key ALG or --csr FILE".into(),
                ));
            }
        },
    };
    Ok(Some(Application {
        domains,
        subject: None,
        key_source: Some(key_source),
        ip_addresses: Vec::new(),
    }))
}

async fn order(ctx: &Ctx, args: &mut Args) -> Result<(), Failure> {
    let key_alg = match args.peek_value("generate-key") {
        Some(alg) => key_algorithm(&alg)?,
        None => KeyAlgorithm::EcdsaP256,
    };
    let domains_peek = args.peek_values("domain");
    let slots = args.value("slots")?;
    let spec = CertificateSpec {
        issuer: args.value("issuer")?.unwrap_or_else(|| "builtin".into()),
        key_algorithm: key_alg as i32,
        validity_days: args.parsed::<u32>("validity-days")?.unwrap_or(0),
        domain_slots: Some(domain_slots(slots.as_deref(), &domains_peek)?),
        validation_method: validation_method(
            &args
                .value("validation")?
                .unwrap_or_else(|| "approval".into()),
        )? as i32,
        auto_renew: args.switch("auto-renew"),
    };
    let application = application(args, Some(key_alg))?;
    let idempotency_key = args.value("idempotency-key")?.unwrap_or_default();
    let wait = args.switch("wait");
    let quiet = args.switch("quiet");
    args.finish()?;
    let response = ctx
        .order()
        .place_order(ctx.request(PlaceOrderRequest {
            spec: Some(spec),
            application,
            idempotency_key,
        })?)
        .await?
        .into_inner();
    let certificate = response.certificate.unwrap_or_default();
    if !ctx.json && response.replayed {
        eprintln!("(the idempotency key matched an earlier order: this is that order)");
    }
    finish(ctx, None, certificate, wait, quiet).await
}

async fn apply(ctx: &Ctx, args: &mut Args) -> Result<(), Failure> {
    let id = args.required_positional("certificate id")?;
    let application = application(args, None)?
        .ok_or_else(|| Failure::Usage("apply needs at least one --domain".into()))?;
    let expected_version = args.parsed::<u64>("expected-version")?.unwrap_or(0);
    let wait = args.switch("wait");
    let quiet = args.switch("quiet");
    args.finish()?;
    let certificate = ctx
        .order()
        .submit_application(ctx.request(SubmitApplicationRequest {
            certificate_id: id,
            application: Some(application),
            expected_version,
        })?)
        .await?
        .into_inner();
    finish(ctx, None, certificate, wait, quiet).await
}

async fn approve(ctx: &Ctx, args: &mut Args) -> Result<(), Failure> {
    let id = args.required_positional("certificate id")?;
    let comment = args.value("comment")?.unwrap_or_default();
    let wait = args.switch("wait");
    args.finish()?;
    // Right after the order, the issuance service may not have started the validation
    // yet (status applied): wait a little for it instead of failing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let certificate = loop {
        let result = ctx
            .issuance()
            .approve_application(ctx.request(ApproveApplicationRequest {
                certificate_id: id.clone(),
                comment: comment.clone(),
            })?)
            .await;
        match result {
            Ok(response) => break response.into_inner(),
            Err(status)
                if status.code() == tonic::Code::FailedPrecondition
                    && tokio::time::Instant::now() < deadline =>
            {
                let current = ctx.certificate(&id).await?;
                if current.status != CertificateStatus::Applied as i32 {
                    return Err(status.into());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => return Err(status.into()),
        }
    };
    finish(ctx, None, certificate, wait, false).await
}

async fn reject(ctx: &Ctx, args: &mut Args) -> Result<(), Failure> {
    let id = args.required_positional("certificate id")?;
    let reason = args
        .value("reason")?
        .ok_or_else(|| Failure::Usage("reject needs --reason TEXT".into()))?;
    args.finish()?;
    let certificate = ctx
        .issuance()
        .reject_application(ctx.request(RejectApplicationRequest {
            certificate_id: id,
            reason,
        })?)
        .await?
        .into_inner();
    finish(ctx, None, certificate, false, false).await
}

/// Prints the certificate (only its id with `quiet`), after waiting for it to settle
/// with `wait`; with the certificate it renews (`predecessor`), both.
async fn finish(
    ctx: &Ctx,
    predecessor: Option<&Certificate>,
    certificate: Certificate,
    wait: bool,
    quiet: bool,
) -> Result<(), Failure> {
    let certificate = if wait {
        wait_until_settled(ctx, certificate).await?
    } else {
        certificate
    };
    if quiet {
        println!("{}", certificate.certificate_id);
    } else if ctx.json {
        match predecessor {
            Some(p) => println!(
                "{}",
                serde_json::json!({
                    "predecessor": render::certificate_value(p),
                    "successor": render::certificate_value(&certificate),
                })
            ),
            None => println!("{}", render::certificate_json(&certificate)),
        }
    } else {
        if let Some(p) = predecessor {
            println!(
                "renewing {} ({}, not after {}); the successor:\n",
                p.certificate_id,
                render::status_name(p.status),
                render::time(p.not_after.as_ref())
            );
        }
        print!("{}", render::certificate_text(&certificate));
        if !wait {
            print!("{}", render::next_step(&certificate));
        }
    }
    if wait && certificate.status != CertificateStatus::Issued as i32 {
        return Err(Failure::Other(format!(
            "certificate {} ended {}",
            certificate.certificate_id,
            render::status_name(certificate.status)
        )));
    }
    Ok(())
}

fn settled(status: i32) -> bool {
    [
        CertificateStatus::Issued,
        CertificateStatus::Failed,
        CertificateStatus::Cancelled,
        CertificateStatus::Revoked,
        CertificateStatus::Expired,
    ]
    .iter()
    .any(|s| *s as i32 == status)
}

/// Follows the certificate's events until it is issued (or failed), printing progress
/// on stderr; returns the certificate as it is then.
async fn wait_until_settled(ctx: &Ctx, certificate: Certificate) -> Result<Certificate, Failure> {
    let id = certificate.certificate_id.clone();
    if settled(certificate.status) {
        return Ok(certificate);
    }
    eprintln!(
        "waiting for {id} ({}); Ctrl-C stops waiting, not the order",
        render::status_name(certificate.status)
    );
    let mut stream = ctx.watch(&id, certificate.version).await?;
    let mut hinted = false;
    follow(ctx, &id, &mut stream, |current| {
        if settled(current.status) {
            return true;
        }
        if !hinted && current.status == CertificateStatus::Validating as i32 {
            if current.spec.as_ref().map(|s| s.validation_method)
                == Some(ValidationMethod::Approval as i32)
            {
                eprintln!("  waiting for approval: certctl approve {id}");
            }
            hinted = true;
        }
        false
    })
    .await
}

/// Prints the certificate's events from `stream` on stderr until `done` holds for the
/// certificate as it is then (looked at after each event, and every few seconds);
/// returns it.
async fn follow(
    ctx: &Ctx,
    id: &str,
    stream: &mut Streaming<HistoryEntry>,
    mut done: impl FnMut(&Certificate) -> bool,
) -> Result<Certificate, Failure> {
    loop {
        let current = ctx.certificate(id).await?;
        if done(&current) {
            return Ok(current);
        }
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(Ok(entry))) => eprintln!("  {}", render::history_line(&entry)),
            Ok(Some(Err(status))) => return Err(status.into()),
            Ok(None) => {
                return Err(Failure::Other(
                    "the server closed the watch before the certificate settled".into(),
                ));
            }
            Err(_) => {}
        }
    }
}

async fn get(ctx: &Ctx, args: &mut Args) -> Result<(), Failure> {
    let id = args.required_positional("certificate id")?;
    args.finish()?;
    let certificate = ctx.certificate(&id).await?;
    if ctx.json {
        println!("{}", render::certificate_json(&certificate));
    } else {
        print!("{}", render::certificate_text(&certificate));
    }
    Ok(())
}

fn status_filter(name: &str) -> Result<CertificateStatus, Failure> {
    let upper = format!(
        "CERTIFICATE_STATUS_{}",
        name.to_ascii_uppercase().replace('-', "_")
    );
    CertificateStatus::from_str_name(&upper).ok_or_else(|| {
        Failure::Usage(format!(
            "--status {name:?}: use e.g. issued, validating, failed"
        ))
    })
}

async fn list(ctx: &Ctx, args: &mut Args) -> Result<(), Failure> {
    let status = match args.value("status")? {
        Some(s) => status_filter(&s)? as i32,
        None => 0,
    };
    let domain = args.value("domain")?.unwrap_or_default();
    let limit = args.parsed::<usize>("limit")?.unwrap_or(1000);
    args.finish()?;
    let mut certificates = Vec::new();
    let mut token = String::new();
    loop {
        let page = ctx
            .order()
            .list_certificates(ctx.request(ListCertificatesRequest {
                status,
                domain: domain.clone(),
                page: Some(PageRequest {
                    page_size: 100,
                    page_token: token.clone(),
                }),
            })?)
            .await?
            .into_inner();
        certificates.extend(page.certificates);
        if page.next_page_token.is_empty() || certificates.len() >= limit {
            break;
        }
        token = page.next_page_token;
    }
    certificates.truncate(limit);
    if ctx.json {
        let list: Vec<_> = certificates.iter().map(render::certificate_value).collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        print!("{}", render::certificate_table(&certificates));
    }
    Ok(())
}

async fn history(ctx: &Ctx, args: &mut Args) -> Result<(), Failure> {
    let id = args.required_positional("certificate id")?;
    args.finish()?;
    let entries = ctx
        .order()
        .get_history(ctx.request(GetHistoryRequest { certificate_id: id })?)
        .await?
        .into_inner()
        .entries;
    if ctx.json {
        let list: Vec<_> = entries.iter().map(render::history_value).collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        for entry in &entries {
            println!("{}", render::history_line(entry));
        }
    }
    Ok(())
}

async fn watch(ctx: &Ctx, args: &mut Args) -> Result<(), Failure> {
    let id = args.required_positional("certificate id")?;
    let after_version = args.parsed::<u64>("after-version")?.unwrap_or(0);
    args.finish()?;
    let mut stream = ctx.watch(&id, after_version).await?;
    while let Some(entry) = stream.next().await {
        let entry = entry?;
        if ctx.json {
            println!("{}", render::history_value(&entry));
        } else {
            println!("{}", render::history_line(&entry));
        }
    }
    Ok(())
}

async fn ca(ctx: &Ctx, args: &mut Args) -> Result<(), Failure> {
    let issuer = args.value("issuer")?.unwrap_or_default();
    args.finish()?;
    let chain = ctx
        .issuance()
        .get_ca_chain(ctx.request(GetCaChainRequest { issuer })?)
        .await?
        .into_inner();
    if ctx.json {
        println!(
            "{}",
            serde_json::json!({
                "issuer": chain.issuer,
                "intermediate_pem": chain.intermediate_pem,
                "root_pem": chain.root_pem,
                "chain_pem": chain.chain_pem,
            })
        );
    } else {
        print!("{}", chain.chain_pem);
    }
    Ok(())
}

async fn export(ctx: &Ctx, args: &mut Args) -> Result<(), Failure> {
    let id = args.required_positional("certificate id")?;
    let include_private_key = args.switch("include-private-key");
    let out = args.value("out")?.map(PathBuf::from);
    args.finish()?;
    if include_private_key {
        eprintln!(
            "certctl: WARNING: exporting the private key of {id}; the export is recorded in the \
             certificate's history. Keep the key file private."
        );
    }
    let export = ctx
        .issuance()
        .export_certificate(ctx.request(ExportCertificateRequest {
            certificate_id: id,
            include_private_key,
            key_format: if include_private_key {
                KeyFormat::Pem as i32
            } else {
                KeyFormat::Unspecified as i32
            },
            password: String::new(),
        })?)
        .await?
        .into_inner();
    let fullchain = format!("{}{}", export.certificate_pem, export.chain_pem);
    if let Some(dir) = out {
        std::fs::create_dir_all(&dir)
            .map_err(|e| Failure::Other(format!("creating {}: {e}", dir.display())))?;
        let mut written = vec![
            write_file(&dir.join("cert.pem"), &export.certificate_pem, 0o644)?,
            write_file(&dir.join("chain.pem"), &export.chain_pem, 0o644)?,
            write_file(&dir.join("fullchain.pem"), &fullchain, 0o644)?,
        ];
        if include_private_key {
            written.push(write_file(
                &dir.join("key.pem"),
                &export.private_key_pem,
                0o600,
            )?);
        }
        if ctx.json {
            let files: Vec<_> = written
                .iter()
                .map(|p| serde_json::Value::String(p.display().to_string()))
                .collect();
            println!("{}", serde_json::json!({ "files": files }));
        } else {
            for path in &written {
                println!("wrote {}", path.display());
            }
        }
    } else if ctx.json {
        println!(
            "{}",
            serde_json::json!({
                "certificate_pem": export.certificate_pem,
                "chain_pem": export.chain_pem,
                "private_key_pem": export.private_key_pem,
            })
        );
    } else {
        print!("{fullchain}");
        if include_private_key {
            print!("{}", export.private_key_pem);
        }
    }
    Ok(())
}

/// Writes `text` to `path` with `mode`, replacing the file atomically; the file never
/// exists with wider permissions.
fn write_file(path: &Path, text: &str, mode: u32) -> Result<PathBuf, Failure> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let error = |e: std::io::Error| Failure::Other(format!("writing {}: {e}", path.display()));
    let tmp = path.with_extension("pem.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(error)?;
    file.write_all(text.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(error)?;
    Ok(path.to_path_buf())
}
