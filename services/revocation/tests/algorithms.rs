//! Every intermediate key algorithm the CA supports signs CRLs and OCSP responses openssl
//! accepts.

mod common;

use std::sync::Arc;

use certledger_ca::KeyAlgorithm;
use certledger_revocation::{
    CrlConfig, MemoryStatusSource, OcspConfig, OcspResponseStatus, Responder, RevocationReason,
    RevokedEntry, build_crl,
};
use common::*;
use time::OffsetDateTime;

#[test]
fn crl_and_ocsp_signatures_for_every_issuer_key_algorithm() {
    for algorithm in [
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Ed25519,
    ] {
        let ca = TestCa::with_algorithm(&format!("Alg {algorithm}"), algorithm);
        let (good, good_pem) = ca.issue("good");
        let (revoked, revoked_pem) = ca.issue("revoked");
        let now = OffsetDateTime::now_utc();

        // CRL
        let crl = build_crl(
            &ca.signer,
            &CrlConfig::default(),
            7,
            now,
            &[RevokedEntry {
                serial: revoked.serial.clone(),
                revoked_at: now,
                reason: RevocationReason::CessationOfOperation,
            }],
        )
        .unwrap_or_else(|e| panic!("{algorithm}: {e}"));
        let crl_path = ca.path("crl.pem");
        write(&crl_path, &crl.pem);
        let out = run_ok(
            openssl()
                .args(["crl", "-noout", "-in"])
                .arg(&crl_path)
                .arg("-CAfile")
                .arg(&ca.chain_pem),
        );
        assert!(out.contains("verify OK"), "{algorithm}: {out}");
        let (ok, stdout, stderr) = run(openssl()
            .args(["verify", "-crl_check", "-CRLfile"])
            .arg(&crl_path)
            .arg("-CAfile")
            .arg(&ca.root_pem)
            .arg("-untrusted")
            .arg(&ca.intermediate_pem)
            .arg(&revoked_pem));
        assert!(
            !ok && format!("{stdout}{stderr}").contains("certificate revoked"),
            "{algorithm}: {stdout}{stderr}"
        );

        // OCSP, without a server: openssl writes the request, the responder answers it.
        let source = Arc::new(MemoryStatusSource::new());
        source.record_issued(good.serial.clone());
        source.record_revoked(revoked.serial.clone(), now, RevocationReason::Superseded);
        let responder =
            Responder::new(ca.signer.clone(), source, OcspConfig::default()).expect("responder");
        let req_path = ca.path("req.der");
        run_ok(
            openssl()
                .arg("ocsp")
                .arg("-issuer")
                .arg(&ca.intermediate_pem)
                .arg("-cert")
                .arg(&good_pem)
                .arg("-cert")
                .arg(&revoked_pem)
                .arg("-no_nonce")
                .arg("-reqout")
                .arg(&req_path),
        );
        let request = std::fs::read(&req_path).expect("read request");
        let response = responder.respond(&request, now);
        assert_eq!(
            response.status,
            OcspResponseStatus::Successful,
            "{algorithm}"
        );
        let resp_path = ca.path("resp.der");
        write(&resp_path, &response.der);
        let out = run_ok(
            openssl()
                .args(["ocsp", "-respin"])
                .arg(&resp_path)
                .arg("-issuer")
                .arg(&ca.intermediate_pem)
                .arg("-cert")
                .arg(&good_pem)
                .arg("-cert")
                .arg(&revoked_pem)
                .arg("-CAfile")
                .arg(&ca.chain_pem)
                .arg("-no_nonce"),
        );
        assert!(out.contains("Response verify OK"), "{algorithm}: {out}");
        assert!(
            out.contains(&format!("{}: good", good_pem.display())),
            "{algorithm}: {out}"
        );
        assert!(
            out.contains(&format!("{}: revoked", revoked_pem.display())),
            "{algorithm}: {out}"
        );
        assert!(out.contains("Reason: superseded"), "{algorithm}: {out}");
    }
}
