"""WebSockets and gRPC through the gateway (issue 19), with real clients and servers: the
`websockets` library on both sides of a WebSocket, `grpcio` on both sides of a gRPC call (an h2c
listener in front, `upstream-protocol: h2c` behind), `portcullis idp` signing the tokens.

What they prove:
- a WebSocket upgrade passes only after the route's policy accepted the handshake, with the token in
  the `access_token` query parameter as SignalR sends it, or in `Authorization`; the backend gets
  the identity headers; a rejected upgrade is the gateway's 401 JSON and never reaches the backend;
- an upgraded socket lives by `websocket-idle-timeout`, not by the route's request `timeout`: idle
  past `timeout` it survives; idle past `websocket-idle-timeout` the gateway closes it;
- gRPC unary, server-streaming and bidirectional-streaming calls pass with a token, trailers (grpc-status and custom trailing
  metadata) reach the client; without a token the client reads `UNAUTHENTICATED`, with a token that
  lacks the role `PERMISSION_DENIED`, both with the gateway's message, and the backend sees neither.
"""
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
import threading
import time

import grpc
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.sync.server import serve

from stack import (
    TIMEOUT, client_credentials_token, start_gateway_listeners, start_idp, stop,
)

IDP_YAML = """
listen: "127.0.0.1:0"
issuer: "http://127.0.0.1:{port}/realm"
resources:
  "api://orders": { token-lifetime: 300 }
clients:
  - { client-id: hub-client, client-secret: "s3cret", auth-method: client_secret_post,
      default-resource: "api://orders", roles: [Orders.Reader] }
signing-keys: [{ id: protocols-test-key }]
"""


def gateway_yaml(discovery, ws_backend, grpc_backend):
    jwt = f"""openid-config: [{{ url: "{discovery}" }}]
      audiences: [api://orders]"""
    return f"""
server:
  listen: ["127.0.0.1:0", {{ addr: "127.0.0.1:0", h2c: true }}]
  admin: "127.0.0.1:0"
policies:
  hub:
    validate-jwt:
      query-parameter-name: access_token
      {jwt}
    forward-claims: {{ X-User: sub }}
    forward-token: false
  api:
    validate-jwt:
      {jwt}
    forward-claims: {{ x-user: sub }}
  admin:
    validate-jwt:
      {jwt}
    roles: {{ values: [Orders.Admin] }}
    insufficient-scope-httpcode: 403
routes:
  - {{ name: hub, match: {{ path-prefix: /hub }}, upstream: "{ws_backend}", policy: hub }}
  - {{ name: ws-header, match: {{ path-prefix: /ws }}, upstream: "{ws_backend}", policy: api }}
  - name: ws-patient
    match: {{ path-prefix: /patient }}
    upstream: "{ws_backend}"
    policy: hub
    timeout: 1s
  - name: ws-impatient
    match: {{ path-prefix: /impatient }}
    upstream: "{ws_backend}"
    policy: hub
    websocket-idle-timeout: 1s
  - name: grpc-admin
    match: {{ path-prefix: /echo.Admin }}
    upstream: "{grpc_backend}"
    upstream-protocol: h2c
    policy: admin
  - name: grpc
    match: {{ path-prefix: /echo.Echo }}
    upstream: "{grpc_backend}"
    upstream-protocol: h2c
    policy: api
"""


class WsBackend:
    """A websockets echo server recording each handshake's path and headers."""

    def __init__(self):
        self.handshakes = []
        self.server = serve(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.socket.getsockname()[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handle(self, ws):
        self.handshakes.append((ws.request.path, dict(ws.request.headers)))
        for message in ws:
            ws.send(message)

    def close(self):
        self.server.shutdown()


class GrpcBackend:
    """A grpcio server without generated code (bytes in, bytes out): `/echo.Echo/Unary` echoes the
    request with the caller's `x-user` and sets trailing metadata; `/echo.Echo/Count` streams N
    replies; `/echo.Echo/Chat` answers each message of a bidirectional stream; `/echo.Admin/Unary`
    echoes."""

    def __init__(self):
        self.calls = []

        def remember(context):
            md = dict(context.invocation_metadata())
            self.calls.append(md)
            return md

        def unary(request, context):
            md = remember(context)
            context.set_trailing_metadata((("x-trailer", "kept"),))
            return request + b" from " + md.get("x-user", "-").encode()

        def count(request, context):
            remember(context)
            for i in range(int(request)):
                yield str(i).encode()

        def chat(requests, context):
            remember(context)
            for request in requests:
                yield b"re: " + request

        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Count": grpc.unary_stream_rpc_method_handler(count),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        }
        self.server = grpc.server(ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler("echo.Echo", handlers),
            grpc.method_handlers_generic_handler("echo.Admin", {"Unary": handlers["Unary"]}),
        ))
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.url = f"http://127.0.0.1:{port}"
        self.server.start()

    def close(self):
        self.server.stop(grace=None)


@pytest.fixture(scope="module")
def stack():
    bin_ = os.environ["PORTCULLIS_BIN"]
    work = tempfile.mkdtemp(prefix="portcullis-protocols-")
    procs, backends = [], []
    try:
        idp, urls = start_idp(bin_, work, IDP_YAML)
        procs.append(idp)
        ws, rpc = WsBackend(), GrpcBackend()
        backends += [ws, rpc]
        gw, proxies, _ = start_gateway_listeners(
            bin_, work, gateway_yaml(urls["discovery"], ws.url, rpc.url)
        )
        procs.append(gw)
        token = client_credentials_token(urls["token"], "hub-client", "s3cret")
        yield {
            "ws_proxy": proxies[0].replace("http://", "ws://"),
            "h2c_proxy": proxies[1].removeprefix("http://"),
            "token": token, "ws": ws, "rpc": rpc,
        }
    finally:
        for p in reversed(procs):
            stop(p)
        for b in backends:
            b.close()
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------ WebSockets

def test_signalr_style_query_token_upgrades_and_echoes(stack):
    url = f"{stack['ws_proxy']}/hub/chat?id=conn-1&access_token={stack['token']}"
    with connect(url, open_timeout=TIMEOUT, ping_interval=None) as ws:
        ws.send("hello")
        assert ws.recv(timeout=TIMEOUT) == "hello"
    path, headers = stack["ws"].handshakes[-1]
    # The identity arrives as a header; the token itself is removed (forward-token: false).
    assert path == "/hub/chat?id=conn-1", path
    assert headers.get("x-user") == "hub-client", headers


def test_header_token_upgrades(stack):
    with connect(f"{stack['ws_proxy']}/ws/feed", open_timeout=TIMEOUT, ping_interval=None,
                 additional_headers={"Authorization": f"Bearer {stack['token']}"}) as ws:
        ws.send("x")
        assert ws.recv(timeout=TIMEOUT) == "x"


def test_rejected_upgrade_is_the_gateway_401_and_never_reaches_the_backend(stack):
    before = len(stack["ws"].handshakes)
    for url, headers in [
        (f"{stack['ws_proxy']}/hub/chat?id=2", {}),
        (f"{stack['ws_proxy']}/hub/chat?access_token=not.a.token", {}),
        (f"{stack['ws_proxy']}/ws/feed", {"X-User": "admin"}),
    ]:
        with pytest.raises(InvalidStatus) as failed:
            connect(url, open_timeout=TIMEOUT, additional_headers=headers)
        response = failed.value.response
        assert response.status_code == 401, response
        body = json.loads(response.body)
        assert body["statusCode"] == 401 and body["message"], body
    assert len(stack["ws"].handshakes) == before


def test_an_idle_socket_outlives_the_request_timeout(stack):
    # ws-patient: `timeout: 1s` for requests, the default websocket-idle-timeout for sockets.
    url = f"{stack['ws_proxy']}/patient/x?access_token={stack['token']}"
    with connect(url, open_timeout=TIMEOUT, ping_interval=None) as ws:
        time.sleep(3)  # idle on purpose: three request timeouts, no pings
        ws.send("still here")
        assert ws.recv(timeout=TIMEOUT) == "still here"


def test_a_socket_idle_past_its_idle_timeout_is_closed(stack):
    # ws-impatient: websocket-idle-timeout 1s.
    url = f"{stack['ws_proxy']}/impatient/x?access_token={stack['token']}"
    with connect(url, open_timeout=TIMEOUT, ping_interval=None) as ws:
        ws.send("one")
        assert ws.recv(timeout=TIMEOUT) == "one"
        started = time.monotonic()
        with pytest.raises((ConnectionClosed, TimeoutError)) as closed:
            ws.recv(timeout=TIMEOUT)
        assert isinstance(closed.value, ConnectionClosed), "the gateway never closed the socket"
        assert time.monotonic() - started < TIMEOUT


# ------------------------------------------------------------------------------------------ gRPC

def call(stack, method, request, token=None, streaming=False):
    with grpc.insecure_channel(stack["h2c_proxy"]) as channel:
        metadata = [("authorization", f"Bearer {token}")] if token else []
        if streaming:
            stub = channel.unary_stream(method)
            return list(stub(request, metadata=metadata, timeout=TIMEOUT))
        stub = channel.unary_unary(method)
        return stub.with_call(request, metadata=metadata, timeout=TIMEOUT)


def test_grpc_unary_passes_with_trailers(stack):
    reply, rpc_call = call(stack, "/echo.Echo/Unary", b"ping", stack["token"])
    assert reply == b"ping from hub-client"
    assert ("x-trailer", "kept") in tuple(rpc_call.trailing_metadata())
    assert rpc_call.code() == grpc.StatusCode.OK


def test_grpc_server_streaming_passes(stack):
    replies = call(stack, "/echo.Echo/Count", b"5", stack["token"], streaming=True)
    assert replies == [b"0", b"1", b"2", b"3", b"4"]


def test_grpc_bidirectional_streaming_passes(stack):
    with grpc.insecure_channel(stack["h2c_proxy"]) as channel:
        chat = channel.stream_stream("/echo.Echo/Chat")
        replies = list(chat(iter([b"a", b"b", b"c"]), timeout=TIMEOUT,
                            metadata=[("authorization", f"Bearer {stack['token']}")]))
    assert replies == [b"re: a", b"re: b", b"re: c"]


def test_grpc_without_a_token_is_unauthenticated(stack):
    before = len(stack["rpc"].calls)
    with pytest.raises(grpc.RpcError) as failed:
        call(stack, "/echo.Echo/Unary", b"ping")
    assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED, failed.value
    assert failed.value.details(), "the gateway's message"
    with pytest.raises(grpc.RpcError) as failed:
        call(stack, "/echo.Echo/Count", b"3", "not.a.token", streaming=True)
    assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED, failed.value
    assert len(stack["rpc"].calls) == before


def test_grpc_without_the_role_is_permission_denied(stack):
    before = len(stack["rpc"].calls)
    with pytest.raises(grpc.RpcError) as failed:
        call(stack, "/echo.Admin/Unary", b"ping", stack["token"])
    assert failed.value.code() == grpc.StatusCode.PERMISSION_DENIED, failed.value
    assert len(stack["rpc"].calls) == before
