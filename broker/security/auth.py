"""Who is calling, and may they: the gRPC side of mutual TLS, tokens and roles, for servers and clients.

Server side, ``Guard.check`` runs first inside every servicer method (not in an interceptor: in
``grpc.aio`` an interceptor cannot see the TLS peer, the call's ``auth_context()`` can). It reads
the client certificate's common name, verifies the bearer token, requires the token's subject to
be that TLS peer, finds the account and checks its role against the RPC's policy. Health checking
and reflection have no servicer guard: a stock client with a client certificate can use them.

Client side, ``ClientIdentity`` holds a principal's TLS files and a way to get tokens (its own key,
minting one token per call, or a session token from the login endpoint) and opens channels whose
every call carries a fresh ``authorization: Bearer`` header.
"""

from __future__ import annotations

import json
import socket
import ssl
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from broker.security.accounts import AccountBook, AccountKind, Role
from broker.security.pki import TlsFiles, common_name
from broker.security.tokens import TokenMinter, TokenVerifier, bearer
from slicing.errors import PermissionDenied, Unauthenticated

MAX_RECEIVE_BYTES = 256 * 1024
# Notes and slice read-backs flow toward clients and can be larger than any request.
MAX_SEND_BYTES = 4 * 1024 * 1024
#: The broker's server: message limits; one process per port (a second broker on the same port fails
#: to start instead of sharing its calls).
SERVER_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
    ("grpc.max_send_message_length", MAX_SEND_BYTES),
    ("grpc.so_reuseport", 0),
)
Metadata = tuple[tuple[str, str], ...]

ANY_ROLE = frozenset(Role)
# Which roles may call which RPC; tenancy (a customer's or peer's own slices) is checked on top.
POLICY: dict[str, frozenset[Role]] = {
    "Reserve": ANY_ROLE,
    "Commit": ANY_ROLE,
    "Abort": ANY_ROLE,
    "Activate": ANY_ROLE,
    "Deactivate": ANY_ROLE,
    "CommitAndActivate": ANY_ROLE,
    "Terminate": ANY_ROLE,
    "Get": ANY_ROLE,
    "List": ANY_ROLE,
    "Watch": ANY_ROLE,
    "GetUsage": frozenset({Role.OPERATOR}),
    "SetOffer": frozenset({Role.OPERATOR}),
    "SubscribeNotes": frozenset({Role.PEER_SP, Role.OPERATOR}),
    "GetCatalog": frozenset({Role.PEER_SP, Role.OPERATOR}),
    "ListAlerts": ANY_ROLE,
    "AddRule": ANY_ROLE,
    "SetCondition": frozenset({Role.OPERATOR}),
    "SetMode": frozenset({Role.OPERATOR}),
    # The REST API's own reads (broker.api.rest): what this SP offers, and the event feeds.
    "ListSpecifications": ANY_ROLE,
    "Subscribe": ANY_ROLE,
}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its account id and role, and the customer a peer SP acts for."""

    id: str
    role: Role
    on_behalf_of: str = ""
    peer: str = ""

    @property
    def sees_all(self) -> bool:
        """An operator sees and manages every slice of its SP; others only their own."""
        return self.role is Role.OPERATOR

    def owns(self, requester: str) -> bool:
        """Whether a slice reserved by ``requester`` is visible to this principal."""
        return self.sees_all or requester == self.id


def tls_peer(context: grpc.aio.ServicerContext) -> str:
    """The common name of the verified client certificate, or '' on a plaintext connection."""
    names = context.auth_context().get("x509_common_name")
    if not names:
        return ""
    value = names[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Guard:
    """Authenticates and authorises each call from inside it."""

    def __init__(self, verifier: TokenVerifier, accounts: AccountBook, *, require_tls: bool) -> None:
        self._verifier = verifier
        self._accounts = accounts
        self._require_tls = require_tls

    @property
    def verifier(self) -> TokenVerifier:
        """The token verifier (its replay cache is inspected by tests)."""
        return self._verifier

    def check(self, context: grpc.aio.ServicerContext, rpc: str) -> Principal:
        """The caller of ``rpc``; ``Unauthenticated`` or ``PermissionDenied`` (never anything else) otherwise."""
        return self.check_call(tls_peer(context), bearer(context.invocation_metadata()), rpc)

    def check_call(self, peer: str, token: str, rpc: str) -> Principal:
        """The caller of ``rpc`` from its verified TLS peer name and bearer token, whatever the transport.

        gRPC and the REST API both come here, so both apply the same tokens, accounts and roles.
        """
        if self._require_tls and not peer:
            raise Unauthenticated("no verified TLS client certificate")
        self._accounts.refresh()
        claims = self._verifier.verify(token)
        if self._require_tls and claims.subject != peer:
            raise Unauthenticated(f"token subject '{claims.subject[:64]}' is not the TLS peer '{peer[:64]}'")
        account = self._accounts.get(claims.subject)
        if account is None:
            raise Unauthenticated(f"no account '{claims.subject[:64]}' here")
        if claims.session and account.kind is not AccountKind.USER:
            raise Unauthenticated("session tokens are for user accounts")
        principal = Principal(account.id, account.role, claims.on_behalf_of, peer)
        if principal.on_behalf_of and principal.role is not Role.PEER_SP:
            raise PermissionDenied("only a peer SP orders on behalf of a customer")
        if principal.role not in POLICY.get(rpc, frozenset()):
            raise PermissionDenied(f"{rpc} is not allowed to role {principal.role}")
        return principal


# --- client side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientIdentity:
    """A principal calling brokers: its TLS files (None: plaintext) and its token source."""

    name: str
    tls: TlsFiles | None
    minter: TokenMinter | None = None
    session_token: str = ""
    on_behalf_of: str = ""

    def token(self, audience: str, on_behalf_of: str = "") -> str:
        """A token for one call to ``audience``: freshly minted, or the session token."""
        if self.minter is not None:
            return self.minter.mint(audience, on_behalf_of=on_behalf_of or self.on_behalf_of)
        return self.session_token

    def metadata(self, audience: str, on_behalf_of: str = "") -> Metadata:
        """Call metadata carrying a token for ``audience``; mint per call (a call token is single-use)."""
        return (("authorization", f"Bearer {self.token(audience, on_behalf_of)}"),)

    def credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials presenting this principal's client certificate."""
        assert self.tls is not None
        return grpc.ssl_channel_credentials(
            root_certificates=self.tls.ca, private_key=self.tls.key, certificate_chain=self.tls.cert
        )

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context (for HTTPS and plain sockets) presenting this principal's certificate."""
        assert self.tls is not None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self.tls.ca.decode())
        # The ssl module loads a key pair only from files: a private folder that lives for this call.
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert.write_bytes(self.tls.cert)
            key.write_bytes(self.tls.key)
            ctx.load_cert_chain(cert, key)
        return ctx

    def channel(self, address: str, audience: str, *, server_name: str = "", authenticate: bool = True) -> Any:
        """A channel to the broker of SP ``audience`` whose every call carries a fresh token."""
        interceptors = token_interceptors(lambda: self.metadata(audience)) if authenticate else []
        return open_channel(address, self if self.tls else None, server_name=server_name, interceptors=interceptors)


#: A channel over several replicas of one SP: round robin over the addresses whose gRPC health check
#: answers SERVING, so a replica that died or stopped serving gets no calls while the others answer.
BALANCED_SERVICE_CONFIG = json.dumps(
    {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
)


def channel_options(server_name: str = "", *, balanced: bool = False) -> list[tuple[str, Any]]:
    """Message limits, reconnect pacing (the expected server name, the balancing) for client channels."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", MAX_SEND_BYTES),
        ("grpc.max_send_message_length", MAX_SEND_BYTES),
        # A peer that restarts is tried again within a second, not after gRPC's default back-off
        # (which grows past 20 s): what waits on a lower SP goes on as soon as it is back.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    if balanced:
        options.append(("grpc.service_config", BALANCED_SERVICE_CONFIG))
    return options


def open_channel(
    address: str,
    identity: ClientIdentity | None,
    *,
    server_name: str = "",
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    balanced: bool = False,
) -> grpc.aio.Channel:
    """A TLS channel presenting ``identity``'s certificate, or plaintext when ``identity`` is None.

    ``balanced``: ``address`` is a static list of replicas (``ipv4:A,B``), spread over by health.
    """
    if identity is None:
        options = channel_options(balanced=balanced)
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    options = channel_options(server_name, balanced=balanced)
    return grpc.aio.secure_channel(address, identity.credentials(), options=options, interceptors=interceptors)


def _with_metadata(details: grpc.aio.ClientCallDetails, extra: Metadata) -> grpc.aio.ClientCallDetails:
    md = grpc.aio.Metadata(*(details.metadata or ()))
    for key, value in extra:
        md.add(key, value)
    return grpc.aio.ClientCallDetails(details.method, details.timeout, md, details.credentials, details.wait_for_ready)


class UnaryTokenInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds the caller's token metadata to every unary call of a channel."""

    def __init__(self, metadata: Callable[[], Metadata]) -> None:
        self._metadata = metadata

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        """Unary calls."""
        return await continuation(_with_metadata(client_call_details, self._metadata()), request)


class StreamTokenInterceptor(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Adds the caller's token metadata to every server-streaming call of a channel."""

    def __init__(self, metadata: Callable[[], Metadata]) -> None:
        self._metadata = metadata

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        """Server-streaming calls."""
        return await continuation(_with_metadata(client_call_details, self._metadata()), request)


def token_interceptors(metadata: Callable[[], Metadata]) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors adding ``metadata()`` to unary and streaming calls (grpc.aio files each under one kind)."""
    return [UnaryTokenInterceptor(metadata), StreamTokenInterceptor(metadata)]


def server_identity(address: str, identity: ClientIdentity, timeout_s: float = 5.0) -> str:
    """The common name in a broker's server certificate, learnt by one TLS handshake (the token's audience)."""
    host, _, port = address.rpartition(":")
    ctx = identity.ssl_context()
    ctx.check_hostname = False  # the name is what we are learning; the chain is still verified against the CA
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as sock,
        ctx.wrap_socket(sock) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise ssl.SSLError("the broker sent no certificate")
    pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
    return common_name(pem)
