"""Checks gRPC over TLS (--grpc-tls) with the grpcio client (C-core), independent of tonic.

Usage: tls_check.py GRPC_ADDR CAFILE trusted|untrusted
With `trusted`, a TLS channel that trusts CAFILE (the test's self-signed certificate) calls
/grpc.health.v1.Health/Check and /marchproxy.ModuleService/GetStatus (generic API, answers
not decoded: no stubs needed) and both must be OK; then a plaintext channel to the same port
must fail with UNAVAILABLE. With `untrusted`, the TLS channel that trusts CAFILE must fail
with UNAVAILABLE (the server presents another certificate). Prints one line per check; exits
non-zero with the reason on the first failure.
"""

import sys

import grpc


def fail(why):
    print(f"FAIL: {why}", flush=True)
    sys.exit(1)


def call(channel, method):
    rpc = channel.unary_unary(method, request_serializer=lambda _: b"", response_deserializer=lambda b: b)
    try:
        rpc(None, timeout=10)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()


HEALTH = "/grpc.health.v1.Health/Check"
STATUS = "/marchproxy.ModuleService/GetStatus"


def main():
    addr, cafile, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(cafile, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    with grpc.secure_channel(addr, creds) as channel:
        for method in [HEALTH, STATUS]:
            code, details = call(channel, method)
            if mode == "trusted" and code != grpc.StatusCode.OK:
                fail(f"{method} over TLS trusting {cafile}: {code} {details!r}")
            if mode == "untrusted" and code != grpc.StatusCode.UNAVAILABLE:
                fail(f"{method} over TLS trusting {cafile}: {code} {details!r}, want UNAVAILABLE")
            print(f"{method} over TLS trusting {cafile}: {code.name} {details}")
    if mode == "trusted":
        with grpc.insecure_channel(addr) as channel:
            code, details = call(channel, HEALTH)
            if code != grpc.StatusCode.UNAVAILABLE:
                fail(f"{HEALTH} in plaintext on the TLS port: {code} {details!r}, want UNAVAILABLE")
            print(f"{HEALTH} in plaintext: {code.name} ({details})")
    print("OK")


if __name__ == "__main__":
    main()
