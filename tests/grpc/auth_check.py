"""Checks gRPC bearer auth with the grpcio client (C-core), independent of tonic.

Usage: auth_check.py GRPC_ADDR TOKEN
Calls /marchproxy.ModuleService/GetStatus (an empty request; the answer is not decoded, so
no stubs are needed) without metadata, with a wrong token, with the token plus a trailing
space, and with the token; then /grpc.health.v1.Health/Check without metadata. Prints one
line per check; exits non-zero with the reason on the first failure.
"""

import sys

import grpc


def fail(why):
    print(f"FAIL: {why}", flush=True)
    sys.exit(1)


def call(channel, method, metadata):
    rpc = channel.unary_unary(method, request_serializer=lambda _: b"", response_deserializer=lambda b: b)
    try:
        rpc(None, metadata=metadata, timeout=10)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()


def main():
    addr, token = sys.argv[1], sys.argv[2]
    status = "/marchproxy.ModuleService/GetStatus"
    with grpc.insecure_channel(addr) as channel:
        for what, metadata in [
            ("no token", None),
            ("a wrong token", [("authorization", "Bearer wrong")]),
            ("a trailing space", [("authorization", f"Bearer {token} ")]),
            ("two values", [("authorization", f"Bearer {token}"), ("authorization", f"Bearer {token}")]),
        ]:
            code, details = call(channel, status, metadata)
            if code != grpc.StatusCode.UNAUTHENTICATED:
                fail(f"GetStatus with {what}: {code} {details!r}, want UNAUTHENTICATED")
            print(f"GetStatus with {what}: UNAUTHENTICATED ({details})")
        code, details = call(channel, status, [("authorization", f"Bearer {token}")])
        if code != grpc.StatusCode.OK:
            fail(f"GetStatus with the token: {code} {details!r}")
        print("GetStatus with the token: OK")
        code, details = call(channel, "/grpc.health.v1.Health/Check", None)
        if code != grpc.StatusCode.OK:
            fail(f"health without a token: {code} {details!r}, want OK (it stays open)")
        print("health without a token: OK")
    print("OK")


if __name__ == "__main__":
    main()
