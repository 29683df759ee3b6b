//! Access control across every RPC certd serves, found by server reflection: without
//! credentials `UNAUTHENTICATED`; with a role that lacks the method's permission
//! `PERMISSION_DENIED` naming it; another tenant's certificate is `NOT_FOUND`; a revoked
//! token stops working at once; every event records the token that caused it. An RPC
//! without a policy fails this test.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, ensure};
use certledger_proto::auth::v1::token_service_client::TokenServiceClient;
use certledger_proto::auth::v1::{CreateTokenRequest, RevokeTokenRequest};
use certledger_proto::common::v1::{
    CertificateSpec, DomainSlotKind, KeyAlgorithm, Role, ValidationMethod,
};
use certledger_proto::issuance::v1::ExportCertificateRequest;
use certledger_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;
use certledger_proto::order::v1::application::KeySource;
use certledger_proto::order::v1::order_service_client::OrderServiceClient;
use certledger_proto::order::v1::{
    Application, GetCertificateRequest, GetHistoryRequest, PlaceOrderRequest,
    RenewCertificateRequest,
};
use certledger_proto::revocation::v1::RevokeCertificateRequest;
use certledger_proto::revocation::v1::revocation_service_client::RevocationServiceClient;
use certledger_runtime::auth::{Permission, method_permission};
use prost::Message;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

struct Running {
    channel: Channel,
    admin: String,
    shutdown: CancellationToken,
    certd: certledger_certd::Certd,
    _dir: tempfile::TempDir,
}

async fn start() -> anyhow::Result<Running> {
    let dir = tempfile::tempdir()?;
    let argv = [
        "--data-dir",
        &dir.path().join("data").display().to_string(),
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "off",
        "--revocation-http-listen",
        "127.0.0.1:0",
    ]
    .map(str::to_owned)
    .to_vec();
    let config = certledger_certd::configure(argv, |_| None)?.context("configuration")?;
    let shutdown = CancellationToken::new();
    let certd = certledger_certd::start(&config, shutdown.clone()).await?;
    let admin = std::fs::read_to_string(dir.path().join("data/admin.token"))?
        .trim()
        .to_owned();
    let channel = Channel::from_shared(format!("http://{}", certd.grpc_addr()))?
        .connect()
        .await?;
    Ok(Running {
        channel,
        admin,
        shutdown,
        certd,
        _dir: dir,
    })
}

fn with_token<T>(token: &str, message: T) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

/// Every method of every certledger service, as reflection lists them.
async fn methods(channel: Channel) -> anyhow::Result<Vec<String>> {
    let mut reflection = ServerReflectionClient::new(channel);
    let ask = |message| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    };
    let services: Vec<String> = {
        let mut stream = reflection
            .server_reflection_info(tokio_stream::once(ask(MessageRequest::ListServices(
                String::new(),
            ))))
            .await?
            .into_inner();
        match stream
            .next()
            .await
            .context("reflection answer")??
            .message_response
        {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect()
            }
            other => anyhow::bail!("unexpected reflection answer {other:?}"),
        }
    };
    let mut methods = BTreeSet::new();
    for service in services.iter().filter(|s| s.starts_with("certledger.")) {
        let mut stream = reflection
            .server_reflection_info(tokio_stream::once(ask(
                MessageRequest::FileContainingSymbol(service.clone()),
            )))
            .await?
            .into_inner();
        let Some(MessageResponse::FileDescriptorResponse(files)) = stream
            .next()
            .await
            .context("reflection answer")??
            .message_response
        else {
            anyhow::bail!("no file for {service}");
        };
        for bytes in files.file_descriptor_proto {
            let file = prost_types::FileDescriptorProto::decode(bytes.as_slice())?;
            for s in &file.service {
                let name = format!("{}.{}", file.package(), s.name());
                if name == *service {
                    for m in &s.method {
                        methods.insert(format!("/{name}/{}", m.name()));
                    }
                }
            }
        }
    }
    ensure!(
        methods.len() >= 25,
        "only {} methods found: {methods:?}",
        methods.len()
    );
    Ok(methods.into_iter().collect())
}

/// Calls `path` with an empty request message (valid for every request type), as
/// `token`; the status it ends with (OK when it answered, or still streams after a
/// while: both mean the call was let through).
async fn call(channel: Channel, path: &str, token: Option<&str>) -> anyhow::Result<tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let mut request = Request::new(());
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path = http::uri::PathAndQuery::from_str(path)?;
    let call = grpc.server_streaming(request, path, codec);
    let status = match tokio::time::timeout(Duration::from_secs(5), call).await {
        Err(_) => tonic::Status::ok("still running"),
        Ok(Err(status)) => status,
        Ok(Ok(response)) => {
            let mut stream = response.into_inner();
            match tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
                Ok(Some(Err(status))) => status,
                _ => tonic::Status::ok("answered"),
            }
        }
    };
    Ok(status)
}

async fn create_token(
    running: &Running,
    tenant: &str,
    roles: &[Role],
) -> anyhow::Result<(String, String)> {
    let created = TokenServiceClient::new(running.channel.clone())
        .create_token(with_token(
            &running.admin,
            CreateTokenRequest {
                name: format!("{tenant} test"),
                roles: roles.iter().map(|r| *r as i32).collect(),
                valid_days: 1,
                tenant: tenant.into(),
            },
        )?)
        .await?
        .into_inner();
    let id = created.token.context("token")?.token_id;
    Ok((id, created.secret))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rpc_needs_credentials_and_its_permission() -> anyhow::Result<()> {
    let running = start().await?;
    let methods = methods(running.channel.clone()).await?;
    let (_, viewer) = create_token(&running, "default", &[Role::Viewer]).await?;
    let (_, operator) = create_token(&running, "default", &[Role::Operator]).await?;
    let mut checked = 0;
    for method in &methods {
        let permission =
            method_permission(method).with_context(|| format!("{method} has no access policy"))?;
        let anonymous = call(running.channel.clone(), method, None).await?;
        ensure!(
            anonymous.code() == Code::Unauthenticated,
            "{method} without credentials: {anonymous:?}"
        );
        let bad = call(running.channel.clone(), method, Some("clt.default.x.y")).await?;
        ensure!(
            bad.code() == Code::Unauthenticated,
            "{method} with an unknown token: {bad:?}"
        );
        // The viewer has only Read; the operator has no Approve, Revoke, ExportKey,
        // ManageTargets or ManageTokens.
        for (token, granted) in [
            (&viewer, permission == Permission::Read),
            (
                &operator,
                matches!(
                    permission,
                    Permission::Read | Permission::Order | Permission::Renew | Permission::Deploy
                ),
            ),
        ] {
            let status = call(running.channel.clone(), method, Some(token)).await?;
            if granted {
                ensure!(
                    !matches!(
                        status.code(),
                        Code::Unauthenticated | Code::PermissionDenied
                    ),
                    "{method} refused a role that has {permission:?}: {status:?}"
                );
            } else {
                ensure!(
                    status.code() == Code::PermissionDenied
                        && status
                            .message()
                            .contains(&format!("{:?}", permission.as_str())),
                    "{method} with a role lacking {permission:?}: {status:?}"
                );
            }
        }
        checked += 1;
    }
    ensure!(checked == methods.len());
    running.shutdown.cancel();
    running.certd.wait().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_are_isolated_tokens_revoked_at_once_and_actors_recorded() -> anyhow::Result<()> {
    let running = start().await?;
    let spec = CertificateSpec {
        validity_days: 30,
        ..certledger_testkit::certificate_spec(DomainSlotKind::Single, 0, ValidationMethod::None)
    };
    let (token_id, operator) = create_token(&running, "default", &[Role::Operator]).await?;
    let mut orders = OrderServiceClient::new(running.channel.clone());
    let placed = orders
        .place_order(with_token(
            &operator,
            PlaceOrderRequest {
                spec: Some(spec),
                application: Some(Application {
                    domains: vec!["tenant.example.test".into()],
                    key_source: Some(KeySource::GenerateKey(KeyAlgorithm::Unspecified as i32)),
                    ..Default::default()
                }),
                idempotency_key: String::new(),
            },
        )?)
        .await?
        .into_inner();
    let id = placed.certificate.context("certificate")?.certificate_id;

    // The event records the token that placed the order.
    let history = orders
        .get_history(with_token(
            &operator,
            GetHistoryRequest {
                certificate_id: id.clone(),
            },
        )?)
        .await?
        .into_inner();
    let first = history.entries.first().context("history")?;
    ensure!(first.actor == format!("token:{token_id}"), "{first:?}");

    // Another tenant, even with every role, finds nothing.
    let (_, other) = create_token(
        &running,
        "other",
        &[
            Role::Viewer,
            Role::Operator,
            Role::SecurityOfficer,
            Role::Admin,
        ],
    )
    .await?;
    let not_found = [
        orders
            .get_certificate(with_token(
                &other,
                GetCertificateRequest {
                    certificate_id: id.clone(),
                },
            )?)
            .await
            .err(),
        orders
            .renew_certificate(with_token(
                &other,
                RenewCertificateRequest {
                    certificate_id: id.clone(),
                    csr_pem: String::new(),
                },
            )?)
            .await
            .err(),
        IssuanceServiceClient::new(running.channel.clone())
            .export_certificate(with_token(
                &other,
                ExportCertificateRequest {
                    certificate_id: id.clone(),
                    include_private_key: true,
                    ..Default::default()
                },
            )?)
            .await
            .err(),
        RevocationServiceClient::new(running.channel.clone())
            .revoke_certificate(with_token(
                &other,
                RevokeCertificateRequest {
                    certificate_id: id.clone(),
                    reason: certledger_proto::common::v1::RevocationReason::Superseded as i32,
                    ..Default::default()
                },
            )?)
            .await
            .err(),
    ];
    for status in not_found {
        let status = status.context("another tenant was answered")?;
        ensure!(status.code() == Code::NotFound, "{status:?}");
    }

    // The operator may read but not export the key.
    let export = IssuanceServiceClient::new(running.channel.clone())
        .export_certificate(with_token(
            &operator,
            ExportCertificateRequest {
                certificate_id: id.clone(),
                include_private_key: true,
                ..Default::default()
            },
        )?)
        .await;
    let status = export.err().context("an operator exported a private key")?;
    ensure!(
        status.code() == Code::PermissionDenied && status.message().contains("\"export-key\""),
        "{status:?}"
    );

    // Revoked, the token is refused on the next call.
    TokenServiceClient::new(running.channel.clone())
        .revoke_token(with_token(
            &running.admin,
            RevokeTokenRequest {
                token_id: token_id.clone(),
                reason: "test".into(),
                tenant: String::new(),
            },
        )?)
        .await?;
    let refused = orders
        .get_certificate(with_token(
            &operator,
            GetCertificateRequest { certificate_id: id },
        )?)
        .await
        .err()
        .context("a revoked token was served")?;
    ensure!(
        refused.code() == Code::Unauthenticated && refused.message().contains("revoked"),
        "{refused:?}"
    );
    running.shutdown.cancel();
    running.certd.wait().await?;
    Ok(())
}
