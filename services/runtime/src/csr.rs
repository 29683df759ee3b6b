//! CSR inspection for the services, remembering the CSRs that passed.
//!
//! An order's CSR is inspected when the order service accepts the application and again
//! when the issuer prepares the certificate. Inspection depends on the CSR's text alone,
//! so in one process (certd) the second finds the first's result instead of verifying the
//! self-signature again, which was 14 % of the CPU of issuing a certificate for a CSR
//! (BENCHMARKS.md, seventh session). Failures are not kept.

use std::sync::{LazyLock, Mutex};

use certledger_ca::{CsrError, InspectedCsr};

use crate::stream_cache::BoundedMap;

/// Inspections kept (a few kilobytes each, the PEM text included).
const PASSED_KEPT: usize = 1024;

static PASSED: LazyLock<Mutex<BoundedMap<InspectedCsr>>> =
    LazyLock::new(|| Mutex::new(BoundedMap::new(PASSED_KEPT)));

/// [`certledger_ca::inspect_csr_pem`], answered from the CSRs that passed lately when
/// `pem` is one of them.
pub fn inspect_csr_pem(pem: &str) -> Result<InspectedCsr, CsrError> {
    let passed = || PASSED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(inspected) = passed().get(pem) {
        return Ok(inspected.clone());
    }
    let inspected = certledger_ca::inspect_csr_pem(pem)?;
    passed().insert(pem, inspected.clone());
    Ok(inspected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_pem(name: &str) -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
        params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem")
    }

    #[test]
    fn a_passed_inspection_is_kept_for_the_same_text_only() {
        let pem = csr_pem("kept.example");
        let first = inspect_csr_pem(&pem).expect("inspect");
        assert_eq!(PASSED.lock().expect("lock").get(&pem), Some(&first));
        assert_eq!(inspect_csr_pem(&pem), Ok(first));
        // Another signature over the same request is inspected on its own, and fails.
        let der = pem::parse(&pem).expect("pem");
        let mut altered = der.contents().to_vec();
        let last = altered.len() - 3;
        altered[last] ^= 0x01;
        let altered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", altered));
        assert_eq!(inspect_csr_pem(&altered), Err(CsrError::BadSignature));
        assert!(PASSED.lock().expect("lock").get(&altered).is_none());
    }
}
