//! `certd`: every certledger service in one process (see the library docs). Prints
//! `listening on <grpc addr>`, with the dashboard `listening on http(s)://<addr>`, then
//! `revocation on http://<addr>` (CRLs and OCSP) on stdout; what to do next and the logs
//! go to stderr. Stops on SIGINT/SIGTERM.

use std::io::Write;
use std::process::ExitCode;

use certledger_certd::{CertdConfig, configure, start};
use certledger_runtime::server::cancel_on_signals;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    // With the deployment service linked, rustls has two providers; pick one for the code
    // (async-nats with tls://) that does not pass its own.
    certledger_deployment::install_default_crypto_provider();
    let config = match configure(std::env::args().skip(1).collect(), |k| {
        std::env::var(k).ok()
    }) {
        Ok(Some(config)) => config,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certd: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    certledger_runtime::telemetry::init();
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "certd failed");
            eprintln!("certd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: CertdConfig) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    let certd = start(&config, shutdown).await?;
    let grpc = certd.grpc_addr();
    println!("listening on {grpc}");
    let scheme = if config.auth.tls.is_some() {
        "https"
    } else {
        "http"
    };
    if let Some(http) = certd.http_addr() {
        println!("listening on {scheme}://{http}");
    }
    println!("revocation on http://{}", certd.revocation_http_addr());
    let _ = std::io::stdout().flush();
    eprintln!("{}", banner(&config, &certd));
    tracing::info!(%grpc, tls = config.auth.tls.is_some(), embedded = config.embedded, nats = config.issuance.nats_url.is_some(), "certd started");
    certd.wait().await?;
    tracing::info!("certd stopped");
    Ok(())
}

fn banner(config: &CertdConfig, certd: &certledger_certd::Certd) -> String {
    let grpc = certd.grpc_addr();
    let mut out = String::from("\ncertd is running.\n");
    if config.embedded {
        out.push_str(&format!(
            "  data:        {} (embedded SQLite, CA and keys)\n",
            config.data_dir.display()
        ));
    } else {
        out.push_str(&format!(
            "  data:        PostgreSQL; CA and keys in {}; events {}\n",
            config.data_dir.display(),
            if config.issuance.nats_url.is_some() {
                "through NATS JetStream"
            } else {
                "by tailing the SQL log"
            }
        ));
    }
    out.push_str(&format!(
        "  gRPC:        {grpc} (OrderService, IssuanceService, DeploymentService,\n               \
         RevocationService, CertificateQueryService, TokenService, health, reflection)\n"
    ));
    let scheme = if config.auth.tls.is_some() {
        "https"
    } else {
        "http"
    };
    if let Some(http) = certd.http_addr() {
        out.push_str(&format!(
            "  dashboard:   {scheme}://{http}/  (sign in with a token; JSON under /api/, Prometheus /metrics)\n"
        ));
    }
    let revocation = certd.revocation_http_addr();
    out.push_str(&format!(
        "  revocation:  http://{revocation}/crl/{}.crl and http://{revocation}/ocsp\n",
        config.issuance.issuer.issuer_id
    ));
    out.push_str(&format!(
        "  deployment:  webhook secrets in {}\n",
        config.secrets_dir.display()
    ));
    match (&config.auth.enabled, &config.auth.bootstrap_token_file) {
        (false, _) => out.push_str(
            "\n  WARNING: authentication is OFF (--insecure-no-auth): anyone who can reach these\n  \
             ports can order, revoke and export private keys, in any tenant.\n",
        ),
        (true, Some(path)) => out.push_str(&format!(
            "  auth:        API tokens; {} holds one with every role (certctl reads it from\n               \
             ./certledger-data by default, or CERTLEDGER_TOKEN_FILE)\n",
            path.display()
        )),
        (true, None) => out.push_str("  auth:        API tokens\n"),
    }
    out.push_str(&format!("  TLS:         {}\n", config.auth.describe_tls()));
    if let Some(tls) = &config.auth.tls {
        out.push_str(&format!(
            "               server certificate {}\n",
            tls.cert.display()
        ));
        if let Some((ca, _)) = &config.auth.identity_ca {
            out.push_str(&format!(
                "               identity CA {} (certctl --ca-file; client certificates:\n               \
                 certctl tokens client-cert NAME --role ROLE)\n",
                ca.display()
            ));
        }
    }
    if config.issuance.issuer.allow_no_validation {
        out.push_str(
            "\n  NOTE: validation method `none` is allowed: this is a laptop CA that signs any name\n  \
             it is asked for. Its root is trusted only where you install it. Refuse it with\n  \
             --allow-no-validation=false.\n",
        );
    }
    let server = match (&config.auth.tls, &config.auth.identity_ca) {
        (Some(_), Some((ca, _))) => {
            format!(" --server {} --ca-file {}", certd.grpc_url(), ca.display())
        }
        (Some(_), None) => format!(
            " --server {} --ca-file <CA of --tls-cert>",
            certd.grpc_url()
        ),
        (None, _) if grpc.to_string() == certledger_certd::DEFAULT_LISTEN => String::new(),
        (None, _) => format!(" --server {}", certd.grpc_url()),
    };
    out.push_str(&format!(
        "\nNext, in another terminal:\n  \
         cargo run -q -p certledger-certctl --{server} order --domain example.test --generate-key ecdsa-p256 --validation approval\n  \
         cargo run -q -p certledger-certctl --{server} approve <certificate id>\n"
    ));
    out
}
