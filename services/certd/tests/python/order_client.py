"""Orders a certificate from certd with stubs generated from proto/ and reads it back.

Usage: order_client.py ADDRESS (the stubs' directory on PYTHONPATH)

Generate the stubs with (pip install grpcio-tools):
    python3 -m grpc_tools.protoc -I proto --python_out=OUT --grpc_python_out=OUT \
        $(find proto -name '*.proto')
"""

import os
import sys
import time

import grpc

from certledger.auth.v1 import auth_pb2, auth_pb2_grpc
from certledger.common.v1 import common_pb2
from certledger.issuance.v1 import issuance_pb2, issuance_pb2_grpc
from certledger.order.v1 import order_pb2, order_pb2_grpc


def main() -> int:
    address = sys.argv[1]
    with grpc.insecure_channel(address) as channel:
        # The standard health service, called without generated stubs: an empty
        # HealthCheckRequest; the response's field 1 is the status (1 = SERVING).
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        health = check(b"", timeout=10)
        assert health == b"\x08\x01", f"health: {health!r}"

        orders = order_pb2_grpc.OrderServiceStub(channel)
        issuance = issuance_pb2_grpc.IssuanceServiceStub(channel)
        # Without credentials nothing but health and reflection is served.
        try:
            orders.GetCertificate(order_pb2.GetCertificateRequest(certificate_id="x"), timeout=10)
            raise AssertionError("served without credentials")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
        metadata = (("authorization", "Bearer " + os.environ["CERTLEDGER_TOKEN"]),)

        spec = common_pb2.CertificateSpec(
            issuer="builtin",
            key_algorithm=common_pb2.KEY_ALGORITHM_ECDSA_P256,
            validity_days=30,
            domain_slots=common_pb2.DomainSlots(kind=common_pb2.DOMAIN_SLOT_KIND_SINGLE),
            validation_method=common_pb2.VALIDATION_METHOD_APPROVAL,
        )
        application = order_pb2.Application(
            domains=["python.example.test"],
            generate_key=common_pb2.KEY_ALGORITHM_ECDSA_P256,
        )
        placed = orders.PlaceOrder(
            order_pb2.PlaceOrderRequest(
                spec=spec, application=application, idempotency_key="python-client-1"
            ),
            metadata=metadata,
            timeout=10,
        )
        cert_id = placed.certificate.certificate_id
        assert cert_id, placed

        # The approval can only be given once validation has started.
        deadline = time.time() + 30
        while True:
            try:
                issuance.ApproveApplication(
                    issuance_pb2.ApproveApplicationRequest(
                        certificate_id=cert_id, comment="python"
                    ),
                    metadata=metadata,
                    timeout=10,
                )
                break
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.FAILED_PRECONDITION or time.time() > deadline:
                    raise
                time.sleep(0.1)

        while True:
            cert = orders.GetCertificate(
                order_pb2.GetCertificateRequest(certificate_id=cert_id),
                metadata=metadata,
                timeout=10,
            )
            if cert.status == common_pb2.CERTIFICATE_STATUS_ISSUED:
                break
            assert time.time() < deadline, f"not issued: {cert}"
            time.sleep(0.1)
        assert cert.certificate_pem.startswith("-----BEGIN CERTIFICATE-----"), cert
        assert list(cert.domains) == ["python.example.test"], cert.domains

        history = orders.GetHistory(
            order_pb2.GetHistoryRequest(certificate_id=cert_id),
            metadata=metadata,
            timeout=10,
        )
        types = [e.event_type for e in history.entries]
        assert "CertificateIssued" in types, types

        # Another tenant does not see it: a token of tenant "python", made by the admin.
        tokens = auth_pb2_grpc.TokenServiceStub(channel)
        other = tokens.CreateToken(
            auth_pb2.CreateTokenRequest(
                name="python reader",
                roles=[common_pb2.ROLE_VIEWER],
                tenant="python",
            ),
            metadata=metadata,
            timeout=10,
        )
        try:
            orders.GetCertificate(
                order_pb2.GetCertificateRequest(certificate_id=cert_id),
                metadata=(("authorization", "Bearer " + other.secret),),
                timeout=10,
            )
            raise AssertionError("tenant python saw the default tenant's certificate")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e

        # A precise error: the field is named.
        try:
            orders.PlaceOrder(
                order_pb2.PlaceOrderRequest(
                    spec=spec,
                    application=order_pb2.Application(
                        domains=["bad..example.test"],
                        generate_key=common_pb2.KEY_ALGORITHM_ECDSA_P256,
                    ),
                ),
                metadata=metadata,
                timeout=10,
            )
            raise AssertionError("a bad domain was accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
            assert "domains[0]" in e.details(), e.details()

        print(f"issued {cert_id} serial {cert.serial}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
