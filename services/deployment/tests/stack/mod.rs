//! Test support for the service tests: a fresh PostgreSQL schema, and the order, issuance
//! and deployment services in-process on free ports.

#![allow(dead_code)]

use std::time::Duration;

use certledger_ca::{CertificateUrls, IssuancePolicy};
use certledger_deployment::{
    DeployerSettings, DeploymentSetup, SecretStore, StartedDeployment, served_fingerprint,
};
use certledger_eventstream::consumer::EventSource;
use certledger_issuance::ca::{CaSettings, open_ca};
use certledger_issuance::{IssuanceSetup, IssuerSettings, StartedIssuance};
use certledger_order::{CertificateList, OrderSetup, RenewalSetup};
use certledger_proto::common::v1::{
    CertificateSpec, CertificateStatus, DomainSlotKind, KeyAlgorithm, ValidationMethod,
};
use certledger_proto::deployment::v1::deployment_service_client::DeploymentServiceClient;
use certledger_proto::deployment::v1::{
    DeployRequest, ListDeploymentsRequest, RegisterTargetRequest, Target,
    register_target_request::Kind,
};
use certledger_proto::events::v1::NginxTarget;
use certledger_proto::order::v1::order_service_client::OrderServiceClient;
use certledger_proto::order::v1::{
    Application, Certificate, GetCertificateRequest, GetHistoryRequest, PlaceOrderRequest,
    application::KeySource,
};
use certledger_runtime::server::{RunningService, ServerOptions};
#[allow(unused_imports)] // not every test binary uses both
pub use certledger_testkit::db::{TestDb, pg_url};
use certledger_testkit::eventually;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::common::{Nginx, SNI};

pub const DEADLINE: Duration = Duration::from_secs(60);

pub struct Stack {
    pub order: RunningService,
    pub issuance: StartedIssuance,
    pub deployment: StartedDeployment,
    pub orders: OrderServiceClient<Channel>,
    pub deployments: DeploymentServiceClient<Channel>,
    pub dir: tempfile::TempDir,
    pub db: TestDb,
}

/// Order, issuance (NONE validation allowed) and deployment over a fresh schema; the
/// deployment service opens the issuance service's key store directory itself.
pub async fn start_stack(drift_interval: Option<Duration>) -> Stack {
    start_stack_with(drift_interval, None).await
}

/// [`start_stack`], with renewal: the order service keeps its certificate index and uses
/// `renewal` (its clock is the issuer's too, so that certificates are valid from the
/// time the test set).
pub async fn start_stack_with(
    drift_interval: Option<Duration>,
    renewal: Option<RenewalSetup>,
) -> Stack {
    let _ = certledger_deployment::install_default_crypto_provider();
    let db = TestDb::postgres().await.expect("test database");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_settings = CaSettings {
        data_dir: dir.path().join("issuance"),
        policy: IssuancePolicy::default(),
        urls: CertificateUrls::default(),
        keys: certledger_ca::KeyStoreKind::Sqlite.into(),
    };
    let ca = open_ca(&ca_settings).expect("open CA");
    let list = match &renewal {
        Some(_) => Some((
            CertificateList::open(&db.url, &db.schema)
                .await
                .expect("certificate index"),
            EventSource::SqlTail {
                log: db.log.clone(),
            },
        )),
        None => None,
    };
    let renewal = renewal.unwrap_or_default();
    let clock = renewal.settings.clock.clone();
    let order = certledger_order::start(
        OrderSetup {
            repo: certledger_runtime::CertificateRepository::new(db.log.clone()),
            listen: "127.0.0.1:0".parse().expect("addr"),
            issuers: vec!["builtin".into()],
            server: ServerOptions::default(),
            list,
            renewal,
            tasks: vec![],
        },
        CancellationToken::new(),
    )
    .await
    .expect("order service");
    let issuance = certledger_issuance::start(
        IssuanceSetup {
            repo: certledger_runtime::CertificateRepository::new(db.log.clone()),
            source: EventSource::SqlTail {
                log: db.log.clone(),
            },
            authority: ca.authority,
            keys: ca.keys,
            settings: IssuerSettings {
                allow_no_validation: true,
                reissue_delay: Duration::ZERO,
                clock,
                ..IssuerSettings::default()
            },
            listen: "127.0.0.1:0".parse().expect("addr"),
            server: ServerOptions::default(),
            recover: true,
            tasks: vec![],
        },
        CancellationToken::new(),
    )
    .await
    .expect("issuance service");
    // The deployment service opens the issuance service's key store of its own.
    let keys = ca_settings
        .keys
        .open(&ca_settings.key_dir())
        .expect("key store");
    let deployment = certledger_deployment::start(
        DeploymentSetup {
            log: db.log.clone(),
            source: Some(EventSource::SqlTail {
                log: db.log.clone(),
            }),
            keys,
            secrets: SecretStore::open(dir.path().join("deployment-secrets")).expect("secrets"),
            settings: DeployerSettings {
                verify_deadline: Duration::from_secs(10),
                reload_timeout: Duration::from_secs(20),
                probe_timeout: Duration::from_secs(5),
                webhook_base_delay: Duration::from_millis(50),
                webhook_max_delay: Duration::from_millis(200),
            },
            drift_interval,
            listen: "127.0.0.1:0".parse().expect("addr"),
            server: ServerOptions::default(),
            tasks: vec![],
        },
        CancellationToken::new(),
    )
    .await
    .expect("deployment service");
    let orders = OrderServiceClient::connect(order.url())
        .await
        .expect("order client");
    let deployments = DeploymentServiceClient::connect(deployment.service.url())
        .await
        .expect("deployment client");
    Stack {
        order,
        issuance,
        deployment,
        orders,
        deployments,
        dir,
        db,
    }
}

pub fn as_tenant<T>(tenant: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-certledger-tenant", tenant.parse().expect("tenant"));
    request
}

pub fn spec(method: ValidationMethod) -> CertificateSpec {
    certledger_testkit::certificate_spec(DomainSlotKind::Multi, 3, method)
}

impl Stack {
    /// Places an order (generated key) with `method`; returns the certificate id.
    pub async fn order(&self, tenant: &str, names: &[&str], method: ValidationMethod) -> String {
        self.order_spec(tenant, names, spec(method)).await
    }

    /// Places an order (generated key) for `spec`; returns the certificate id.
    pub async fn order_spec(&self, tenant: &str, names: &[&str], spec: CertificateSpec) -> String {
        self.orders
            .clone()
            .place_order(as_tenant(
                tenant,
                PlaceOrderRequest {
                    spec: Some(spec),
                    application: Some(Application {
                        domains: names.iter().map(|d| (*d).to_owned()).collect(),
                        key_source: Some(KeySource::GenerateKey(KeyAlgorithm::Unspecified as i32)),
                        ..Default::default()
                    }),
                    idempotency_key: String::new(),
                },
            ))
            .await
            .expect("place order")
            .into_inner()
            .certificate
            .expect("certificate")
            .certificate_id
    }

    /// Orders with validation NONE and waits until issued.
    pub async fn issue(&self, tenant: &str, names: &[&str]) -> Certificate {
        let id = self.order(tenant, names, ValidationMethod::None).await;
        self.wait_for(&id, tenant, CertificateStatus::Issued).await
    }

    pub async fn wait_for(&self, id: &str, tenant: &str, status: CertificateStatus) -> Certificate {
        let client = self.orders.clone();
        eventually(DEADLINE, &format!("certificate {id} {status:?}"), || {
            let mut client = client.clone();
            let request = as_tenant(
                tenant,
                GetCertificateRequest {
                    certificate_id: id.to_owned(),
                },
            );
            async move {
                let cert = client.get_certificate(request).await.ok()?.into_inner();
                assert_ne!(
                    cert.status,
                    CertificateStatus::Failed as i32,
                    "certificate failed: {:?}",
                    cert.last_failure
                );
                (cert.status == status as i32).then_some(cert)
            }
        })
        .await
        .expect("certificate status")
    }

    pub async fn certificate(&self, id: &str, tenant: &str) -> Certificate {
        self.orders
            .clone()
            .get_certificate(as_tenant(
                tenant,
                GetCertificateRequest {
                    certificate_id: id.to_owned(),
                },
            ))
            .await
            .expect("get certificate")
            .into_inner()
    }

    /// The event types of a certificate's history.
    pub async fn history(
        &self,
        id: &str,
        tenant: &str,
    ) -> Vec<certledger_proto::order::v1::HistoryEntry> {
        self.orders
            .clone()
            .get_history(as_tenant(
                tenant,
                GetHistoryRequest {
                    certificate_id: id.to_owned(),
                },
            ))
            .await
            .expect("history")
            .into_inner()
            .entries
    }

    pub async fn history_types(&self, id: &str, tenant: &str) -> Vec<String> {
        self.history(id, tenant)
            .await
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }
}

pub async fn served(nginx: &Nginx) -> String {
    served_fingerprint(&nginx.address(), Some(SNI), Duration::from_secs(5))
        .await
        .expect("handshake")
}

pub async fn register_nginx(stack: &Stack, tenant: &str, nginx: &Nginx) -> Target {
    stack
        .deployments
        .clone()
        .register_target(as_tenant(
            tenant,
            RegisterTargetRequest {
                name: "edge nginx".into(),
                kind: Some(Kind::Nginx(NginxTarget {
                    certificate_path: nginx.cert_path.display().to_string(),
                    key_path: nginx.key_path.display().to_string(),
                    reload_command: nginx.reload_command(),
                    verify_address: nginx.address(),
                    verify_server_name: SNI.into(),
                })),
                webhook_secret: String::new(),
            },
        ))
        .await
        .expect("register nginx target")
        .into_inner()
}

pub async fn deploy(
    stack: &Stack,
    tenant: &str,
    certificate_id: &str,
    target_id: &str,
) -> Result<certledger_proto::order::v1::Deployment, tonic::Status> {
    stack
        .deployments
        .clone()
        .deploy(as_tenant(
            tenant,
            DeployRequest {
                certificate_id: certificate_id.into(),
                target_id: target_id.into(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// The deployment state of `certificate_id` on `target_id`, as ListDeployments by target
/// shows it.
pub async fn state_on(
    stack: &Stack,
    tenant: &str,
    target_id: &str,
    certificate_id: &str,
) -> Option<String> {
    stack
        .deployments
        .clone()
        .list_deployments(as_tenant(
            tenant,
            ListDeploymentsRequest {
                certificate_id: String::new(),
                target_id: target_id.into(),
            },
        ))
        .await
        .ok()?
        .into_inner()
        .deployments
        .into_iter()
        .find(|v| v.certificate_id == certificate_id)
        .and_then(|v| v.deployment)
        .map(|d| d.state)
}

/// Waits until `successor` is verified on `target_id` and `predecessor` is recorded as
/// replaced there.
pub async fn wait_for_replacement(
    stack: &Stack,
    tenant: &str,
    target_id: &str,
    successor: &str,
    predecessor: &str,
) {
    eventually(
        DEADLINE,
        "successor deployed, predecessor replaced",
        || async {
            let s = state_on(stack, tenant, target_id, successor).await;
            let p = state_on(stack, tenant, target_id, predecessor).await;
            (s.as_deref() == Some("succeeded") && p.as_deref() == Some("replaced")).then_some(())
        },
    )
    .await
    .expect("replacement");
}
