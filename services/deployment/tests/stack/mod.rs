//! Test support for the service tests: a fresh PostgreSQL schema, and the order, issuance
//! and deployment services in-process on free ports.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use certledger_ca::{CertificateUrls, FileKeyStore, IssuancePolicy};
use certledger_deployment::{DeployerSettings, DeploymentSetup, SecretStore, StartedDeployment};
use certledger_eventstream::consumer::EventSource;
use certledger_issuance::ca::{CaSettings, open_ca};
use certledger_issuance::{IssuanceSetup, IssuerSettings, StartedIssuance};
use certledger_order::OrderSetup;
use certledger_proto::common::v1::{
    CertificateSpec, CertificateStatus, DomainSlotKind, DomainSlots, KeyAlgorithm, ValidationMethod,
};
use certledger_proto::deployment::v1::deployment_service_client::DeploymentServiceClient;
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
    let _ = certledger_deployment::install_default_crypto_provider();
    let db = TestDb::postgres().await.expect("test database");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_settings = CaSettings {
        data_dir: dir.path().join("issuance"),
        policy: IssuancePolicy::default(),
        urls: CertificateUrls::default(),
    };
    let ca = open_ca(&ca_settings, None).expect("open CA");
    let order = certledger_order::start(
        OrderSetup {
            log: db.log.clone(),
            listen: "127.0.0.1:0".parse().expect("addr"),
            issuers: vec!["builtin".into()],
            server: ServerOptions::default(),
            list: None,
            tasks: vec![],
        },
        CancellationToken::new(),
    )
    .await
    .expect("order service");
    let issuance = certledger_issuance::start(
        IssuanceSetup {
            log: db.log.clone(),
            source: EventSource::SqlTail {
                log: db.log.clone(),
            },
            authority: ca.authority,
            keys: ca.keys,
            settings: IssuerSettings {
                allow_no_validation: true,
                reissue_delay: Duration::ZERO,
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
    let keys = FileKeyStore::open(ca_settings.key_dir(), None).expect("key store");
    let deployment = certledger_deployment::start(
        DeploymentSetup {
            log: db.log.clone(),
            source: Some(EventSource::SqlTail {
                log: db.log.clone(),
            }),
            keys: Arc::new(keys),
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
    CertificateSpec {
        issuer: "builtin".into(),
        key_algorithm: KeyAlgorithm::EcdsaP256 as i32,
        validity_days: 90,
        domain_slots: Some(DomainSlots {
            kind: DomainSlotKind::Multi as i32,
            max_names: 3,
            allow_wildcards: false,
        }),
        validation_method: method as i32,
        auto_renew: false,
    }
}

impl Stack {
    /// Places an order (generated key) with `method`; returns the certificate id.
    pub async fn order(&self, tenant: &str, names: &[&str], method: ValidationMethod) -> String {
        self.orders
            .clone()
            .place_order(as_tenant(
                tenant,
                PlaceOrderRequest {
                    spec: Some(spec(method)),
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
