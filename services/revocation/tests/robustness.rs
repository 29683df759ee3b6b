//! The OCSP responder on hostile input: arbitrary bytes, every truncation and random mutations
//! of a valid request, arbitrary GET paths. It must never panic, always produce a well-formed
//! response, and never answer `good` for anything but the one recorded serial of its issuer.

use std::sync::{Arc, OnceLock};

use certledger_ca::{Authority, AuthorityConfig, MemoryKeyStore, SerialNumber};
use certledger_revocation::{
    CertIdHash, CertStatus, IssuerSigner, MemoryStatusSource, OcspConfig, OcspResponse,
    OcspResponseStatus, Responder,
};
use proptest::prelude::*;
use time::OffsetDateTime;

struct Fixture {
    signer: Arc<IssuerSigner>,
    responder: Responder,
    request: Vec<u8>,
    serial: SerialNumber,
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = MemoryKeyStore::new();
        let authority = Authority::open_or_create(
            &AuthorityConfig::new(dir.path()),
            &keys,
            OffsetDateTime::now_utc(),
        )
        .expect("CA");
        let signer = Arc::new(IssuerSigner::from_authority(&authority, &keys).expect("signer"));
        let serial = SerialNumber::from_hex("0102030405060708090a0b0c0d0e0f101112").expect("s");
        let source = Arc::new(MemoryStatusSource::new());
        source.record_issued(serial.clone());

        // OCSPRequest { TBSRequest { requestList { Request { CertID } } , [2] { nonce } } }
        let cert_id = tlv(
            0x30,
            &[
                tlv(
                    0x30,
                    &[tlv(0x06, &[0x2b, 0x0e, 0x03, 0x02, 0x1a]), vec![0x05, 0x00]].concat(),
                ),
                tlv(0x04, &CertIdHash::Sha1.digest(signer.subject_der())),
                tlv(0x04, &CertIdHash::Sha1.digest(signer.public_key_bits())),
                tlv(0x02, serial.as_bytes()),
            ]
            .concat(),
        );
        let nonce = tlv(
            0x30,
            &[
                tlv(
                    0x06,
                    &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02],
                ),
                tlv(0x04, &tlv(0x04, &[9; 16])),
            ]
            .concat(),
        );
        let tbs = tlv(
            0x30,
            &[
                tlv(0x30, &tlv(0x30, &cert_id)),
                tlv(0xa2, &tlv(0x30, &nonce)),
            ]
            .concat(),
        );
        let request = tlv(0x30, &tbs);
        let responder =
            Responder::new(signer.clone(), source, OcspConfig::default()).expect("responder");
        let check = responder.respond(&request, OffsetDateTime::now_utc());
        assert_eq!(check.status, OcspResponseStatus::Successful);
        assert_eq!(check.answers[0].status, CertStatus::Good);
        Fixture {
            signer,
            responder,
            request,
            serial,
        }
    })
}

/// The response is a DER SEQUENCE; unsuccessful ones are exactly SEQUENCE { ENUMERATED };
/// `good` only for the recorded serial of this issuer.
fn check(response: &OcspResponse, f: &Fixture) {
    assert_eq!(response.der.first(), Some(&0x30));
    match response.status {
        OcspResponseStatus::Successful => {
            assert!(!response.answers.is_empty());
            for answer in &response.answers {
                if answer.status == CertStatus::Good {
                    assert!(answer.issuer_matched);
                    assert_eq!(answer.serial.as_ref(), Some(&f.serial));
                }
            }
        }
        status => {
            assert_eq!(response.der, vec![0x30, 0x03, 0x0a, 0x01, status.code()]);
        }
    }
}

#[test]
fn every_truncation_is_malformed() {
    let f = fixture();
    let now = OffsetDateTime::now_utc();
    for len in 0..f.request.len() {
        let response = f.responder.respond(&f.request[..len], now);
        assert_eq!(
            response.status,
            OcspResponseStatus::MalformedRequest,
            "len {len}"
        );
    }
    let mut longer = f.request.clone();
    longer.push(0);
    assert_eq!(
        f.responder.respond(&longer, now).status,
        OcspResponseStatus::MalformedRequest
    );
}

#[test]
fn oversized_requests_are_refused_before_parsing() {
    let f = fixture();
    let huge = vec![0x30; OcspConfig::default().max_request_bytes + 1];
    let response = f.responder.respond(&huge, OffsetDateTime::now_utc());
    assert_eq!(response.status, OcspResponseStatus::MalformedRequest);
    let path = "A".repeat(1 << 20);
    let response = f.responder.respond_get(&path, OffsetDateTime::now_utc());
    assert_eq!(response.status, OcspResponseStatus::MalformedRequest);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let f = fixture();
        check(&f.responder.respond(&bytes, OffsetDateTime::now_utc()), f);
    }

    #[test]
    fn mutated_requests_never_panic_and_never_say_good_wrongly(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6)
    ) {
        let f = fixture();
        let mut request = f.request.clone();
        for (index, byte, op) in edits {
            if request.is_empty() {
                break;
            }
            let i = index.index(request.len());
            match op {
                0 => request[i] = byte,
                1 => request.insert(i, byte),
                _ => { request.remove(i); }
            }
        }
        check(&f.responder.respond(&request, OffsetDateTime::now_utc()), f);
    }

    #[test]
    fn arbitrary_get_paths_never_panic(path in "[A-Za-z0-9+/=%_-]{0,300}") {
        let f = fixture();
        check(&f.responder.respond_get(&path, OffsetDateTime::now_utc()), f);
    }
}

struct Unavailable;

impl certledger_revocation::StatusSource for Unavailable {
    fn status(
        &self,
        _serial: &SerialNumber,
    ) -> Result<CertStatus, certledger_revocation::StatusUnavailable> {
        Err(certledger_revocation::StatusUnavailable {
            reason: "read model still catching up".into(),
        })
    }
}

#[test]
fn unavailable_source_means_try_later_and_validity_is_configurable() {
    let f = fixture();
    let signer = f.signer.clone();
    let responder = Responder::new(signer.clone(), Arc::new(Unavailable), OcspConfig::default())
        .expect("responder");
    let response = responder.respond(&f.request, OffsetDateTime::now_utc());
    assert_eq!(response.status, OcspResponseStatus::TryLater);
    assert_eq!(response.der, vec![0x30, 0x03, 0x0a, 0x01, 0x03]);

    let config = OcspConfig {
        validity: time::Duration::hours(1),
        ..OcspConfig::default()
    };
    let source = Arc::new(MemoryStatusSource::new());
    let responder = Responder::new(signer, source, config).expect("responder");
    let now = time::macros::datetime!(2030-06-01 12:00:00.999 UTC);
    let response = responder.respond(&f.request, now);
    assert_eq!(response.status, OcspResponseStatus::Successful);
    assert_eq!(response.answers[0].status, CertStatus::Unknown);
    assert_eq!(
        response.this_update,
        Some(time::macros::datetime!(2030-06-01 12:00:00 UTC))
    );
    assert_eq!(
        response.next_update,
        Some(time::macros::datetime!(2030-06-01 13:00:00 UTC))
    );
    for bad in [time::Duration::days(11), time::Duration::seconds(10)] {
        let config = OcspConfig {
            validity: bad,
            ..OcspConfig::default()
        };
        assert!(
            Responder::new(
                f.signer.clone(),
                Arc::new(MemoryStatusSource::new()),
                config
            )
            .is_err()
        );
    }
}
