"""The web view served beside the REST API: a plain HTML page and its script (no build step, nothing fetched
from elsewhere), and the one read it needs that TMF has no shape for, ``GET /fedbroker/v1/federation``.

The page itself is static and needs only the client certificate the TLS handshake asked for; what it
shows it reads from the REST API with the user's session token (``fedbroker login``), which it takes
from the address's fragment (``/#token=…``, never sent to the server as part of a URL) or from a
field on the page: the slices the token's account may see, updated live from the event stream, and,
for operators and peer SPs, the federation as this SP's notes tell it.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

from aiohttp import web

from broker.api import codec
from broker.api import rest_models as m
from broker.api.rest import PublicHandler, read_body
from broker.api.rest_tmf import iso
from broker.core.catalog import Catalog
from broker.core.offers import OfferDesk
from broker.security.auth import Principal
from broker.security.login import SessionIssuer, peer_name
from capability_catalog.model import CapabilityNote

#: The page's files: path served -> (file in ``broker/api/web``, content type).
PAGES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/web/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/web/app.css": ("app.css", "text/css; charset=utf-8"),
}
#: What the page may do: its own script and style, calls to this origin only; no inline script, no frames.
_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _read(name: str) -> bytes:
    return resources.files("broker.api").joinpath("web", name).read_bytes()


def add_pages(app: web.Application) -> None:
    """Serve the web view's files (read once, at start)."""
    for path, (name, kind) in PAGES.items():
        body = _read(name)

        async def page(request: web.Request, body: bytes = body, kind: str = kind) -> web.Response:
            headers = {
                "Content-Type": kind,
                "Content-Security-Policy": _POLICY,
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store",
            }
            return web.Response(body=body, headers=headers)

        app.router.add_get(path, page)

    async def no_icon(request: web.Request) -> web.Response:
        return web.Response(status=204)  # a browser asks; the page has none

    app.router.add_get("/favicon.ico", no_icon)


def note_out(note: CapabilityNote, now: float) -> m.NoteOut:
    """A note as the web view shows it."""
    return m.NoteOut(
        spId=note.sp_id,
        version=note.version,
        issuedAt=iso(note.issued_at),
        expiresAt=iso(note.expires_at),
        ageS=round(max(0.0, now - note.issued_at), 3),
        expiresInS=round(note.expires_at - now, 3),
        endpoints=sorted(e.id for e in note.endpoints),
        ports=[m.PortOut(id=p.id, peerSp=p.peer_sp) for p in sorted(note.ports, key=lambda p: p.id)],
        functions=sorted(note.function_types()),
        qosClasses=[q.name for q in note.qos_classes],
    )


class FederationView:
    """``GET /fedbroker/v1/federation`` (operators and peer SPs, as gRPC's GetCatalog), and the operator's offers."""

    def __init__(self, sp_id: str, catalog: Catalog, offers: OfferDesk, clock: Callable[[], float]) -> None:
        self._sp = sp_id
        self._catalog = catalog
        self._offers = offers
        self._clock = clock

    async def list_offers(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """``GET /fedbroker/v1/offer``."""
        out = [m.dump(m.OfferOut(domain=d, withdrawn=w)) for d, w in self._offers.withdrawn().items()]
        return web.json_response(out, headers={"X-Result-Count": str(len(out))})

    async def patch_offer(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """``PATCH /fedbroker/v1/offer/{domain}``: gRPC's SetOffer, with only ``withdrawn`` changed."""
        body: m.OfferChange = await read_body(request, m.OfferChange)
        domain = request.match_info["id"]
        codec.check_id(domain, "id")
        note = self._offers.set_withdrawn(domain, body.withdrawn)
        request["outcome"] = f"withdrawn={body.withdrawn}, note version {note.version}"
        return web.json_response(m.dump(m.OfferOut(domain=domain, withdrawn=body.withdrawn, noteVersion=note.version)))

    async def retrieve(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """This SP's own note, the notes from below, and the refused ones, newest refusal first."""
        now = self._clock()
        own = self._catalog.own
        body = m.FederationOut(
            spId=self._sp,
            own=note_out(own, now) if own is not None else None,
            lower=[note_out(n, now) for _, n in sorted(self._catalog.current().items())],
            refused=[
                m.RefusedNoteOut(spId=r.sp_id, version=r.version, reason=r.reason, detail=r.detail, at=iso(r.at))
                for r in reversed(self._catalog.rejected)
            ],
        )
        return web.json_response(m.dump(body))


def login_handler(issuer: SessionIssuer) -> PublicHandler:
    """``POST /fedbroker/v1/login``: the login endpoint's session token, on the page's own origin."""

    async def create_session(request: web.Request) -> web.StreamResponse:
        body: m.SessionCreate = await read_body(request, m.SessionCreate)
        request["target"] = body.user
        answer = await issuer.issue(body.user, body.password, peer=peer_name(request), tls=request.secure)
        return web.json_response(m.dump(m.SessionOut(token=answer["token"], expires_at=answer["expires_at"])))

    return create_session


__all__ = ["PAGES", "FederationView", "add_pages", "login_handler", "note_out"]
