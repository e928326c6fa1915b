"""``fedbroker keys|certs|accounts|login``: signing keys, a lab CA, password hashes, session tokens."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from broker.cli.client import DEFAULT_BROKER, add_identity_args, address, client_identity
from broker.cli.output import err, print_json
from broker.descriptors import ConfigError


def _keys_init(ns: argparse.Namespace) -> int:
    from broker.security.keys import init_key

    path = Path(ns.out)
    try:
        public = init_key(path, force=ns.force)
    except FileExistsError as exc:
        err.print(f"[red]error:[/] {exc}")
        return 2
    err.print(f"private key written to {path} (mode 0600), public key to {path.with_suffix('.pub')}")
    err.print("upper-SPs trust it with, in their config:  lower_sps: [{id: …, address: …, keys: [<the line below>]}]")
    print(public)
    return 0


def _certs_init(ns: argparse.Namespace) -> int:
    from broker.security.accounts import Account, AccountBook, AccountKind, Role, dump_accounts
    from broker.security.keys import write_key
    from broker.security.pki import load_or_create_authority
    from capability_catalog.signing import generate_key

    out_dir = Path(ns.out)
    ca = load_or_create_authority(out_dir)
    for sp in ns.sp or []:
        ca.issue_to(out_dir, sp, server=True, hosts=ns.host or ())
        err.print(f"SP {sp}: {out_dir / sp}.crt, {out_dir / sp}.key")
    accounts_path = out_dir / "accounts.yaml"
    accounts: dict[str, Account] = {a.id: a for a in AccountBook(accounts_path).all()}
    for spec in ns.client or []:
        name, _, role_text = spec.partition(":")
        try:
            role = Role(role_text or "customer")
        except ValueError:
            err.print(f"[red]error:[/] --client {spec}: role must be one of {', '.join(Role)}")
            return 2
        if name not in (ns.sp or []):  # an SP's server certificate also serves it as a client
            ca.issue_to(out_dir, name, server=False)
        public = write_key(out_dir / f"{name}.ed25519", generate_key())
        kind = AccountKind.SERVICE if role is Role.PEER_SP else AccountKind.USER
        old = accounts.get(name)
        accounts[name] = Account(name, kind, role, (public,), old.password_hash if old else "")
        err.print(f"client {name} ({role}): {out_dir / name}.crt/.key, token key {out_dir / name}.ed25519")
    if ns.client:
        import yaml

        accounts_path.write_text(yaml.safe_dump(dump_accounts(list(accounts.values())), sort_keys=False))
        err.print(f"accounts written to {accounts_path} (point security.accounts_file at it)")
    err.print(f"CA: {out_dir / 'ca.crt'} (its key ca.key stays with whoever issues certificates)")
    return 0


def _hash_password(ns: argparse.Namespace) -> int:
    import getpass

    from broker.security.accounts import hash_password

    password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass("password: ")
    if not password:
        err.print("[red]error:[/] empty password")
        return 2
    print(hash_password(password))
    return 0


def _login(ns: argparse.Namespace) -> int:
    import getpass
    import urllib.error
    import urllib.request

    identity = client_identity(ns, tokens=False)
    password = os.environ.get("FEDBROKER_PASSWORD", "")
    if not password:
        try:  # piped on stdin (as `accounts hash-password` reads it), or typed at a prompt
            tty = sys.stdin.isatty()
            password = getpass.getpass(f"password for {ns.as_user}: ") if tty else sys.stdin.readline().rstrip("\n")
        except EOFError:
            password = ""
    if not password:
        err.print(
            f"[red]error:[/] no password for {ns.as_user}: type it at the prompt, pipe it on stdin, "
            "or set FEDBROKER_PASSWORD"
        )
        return 2
    ctx = identity.ssl_context() if identity.tls is not None else None
    body = json.dumps({"user": ns.as_user, "password": password}).encode()
    scheme = "http" if identity.tls is None else "https"
    req = urllib.request.Request(  # noqa: S310 - the scheme is fixed above
        f"{scheme}://{ns.url}/login", data=body, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:  # noqa: S310
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        err.print(f"[red]login refused ({exc.code}):[/] {exc.read().decode(errors='replace')}")
        return 1
    except OSError as exc:
        err.print(f"[red]error:[/] cannot reach {ns.url}: {exc}")
        return 1
    expires = _iso_time(answer.get("expires_at"))
    if ns.json:
        print_json({"user": ns.as_user, "token": answer["token"], "expires_at": expires})
        return 0
    err.print(
        f"session token for {ns.as_user}, valid until {expires} (pass it as --token or $FEDBROKER_TOKEN)",
        highlight=False,
    )
    print(answer["token"])
    return 0


def _iso_time(unix_s: object) -> str:
    from datetime import UTC, datetime

    if not isinstance(unix_s, int | float) or isinstance(unix_s, bool):
        return "unknown"
    return datetime.fromtimestamp(unix_s, tz=UTC).isoformat(timespec="seconds")


def _token(ns: argparse.Namespace) -> int:
    """Print one call token for a stock client (grpcurl): signed with the account's key, accepted once."""
    from broker.cli.client import audience
    from broker.security.keys import load_key
    from broker.security.tokens import MAX_CALL_TTL_S, TokenMinter

    if not 1 <= ns.ttl <= MAX_CALL_TTL_S:
        raise ConfigError(f"--ttl: {ns.ttl:g} is not from 1 to {MAX_CALL_TTL_S:g} seconds", field="--ttl")
    key_path = Path(ns.token_key or Path(ns.creds) / f"{ns.as_user}.ed25519")
    if not key_path.is_file():
        raise ConfigError(
            f"--token-key: cannot read {key_path}: a call token is signed with the account's key; "
            "a user without one gets a session token from `fedbroker login` instead",
            field="--token-key",
        )
    identity = client_identity(ns, tokens=False)
    sp = audience(ns, identity)
    print(TokenMinter(load_key(key_path), ns.as_user).mint(sp, ttl_s=ns.ttl))
    err.print(
        f"call token of {ns.as_user} for SP {sp}, valid {ns.ttl:g} s and for one call "
        '(grpcurl: -H "authorization: Bearer $(fedbroker token …)")',
        highlight=False,
    )
    return 0


def register(sub: Any) -> None:
    """Add ``keys init``, ``certs init``, ``accounts hash-password`` and ``login`` to the sub-parsers."""
    k = sub.add_parser("keys", help="signing keys of an SP")
    ksub = k.add_subparsers(dest="keys_cmd", required=True)
    ki = ksub.add_parser("init", help="create an SP's Ed25519 key pair (FILE and FILE.pub)")
    ki.add_argument("--out", required=True, help="private key file to write, e.g. keys/L1.key")
    ki.add_argument("--force", action="store_true", help="replace an existing key")
    ki.set_defaults(handler=_keys_init)

    ce = sub.add_parser("certs", help="a lab certificate authority")
    cesub = ce.add_subparsers(dest="certs_cmd", required=True)
    ci = cesub.add_parser("init", help="a CA (kept if OUT has one) and certificates for SPs and clients")
    ci.add_argument("--out", required=True, help="folder for ca.crt/ca.key, NAME.crt/NAME.key, accounts.yaml")
    ci.add_argument("--sp", action="append", help="an SP's server certificate (repeatable)")
    ci.add_argument(
        "--client",
        action="append",
        help="NAME[:ROLE]: a client certificate, a token key NAME.ed25519 and an account (role customer, operator "
        "or peer-sp; default customer; repeatable)",
    )
    ci.add_argument("--host", action="append", help="extra host name or address in SP certificates (repeatable)")
    ci.set_defaults(handler=_certs_init)

    ac = sub.add_parser("accounts", help="account helpers")
    acsub = ac.add_subparsers(dest="accounts_cmd", required=True)
    acsub.add_parser("hash-password", help="read a password (stdin or prompt), print its scrypt hash").set_defaults(
        handler=_hash_password
    )

    lg = add_identity_args(
        sub.add_parser(
            "login",
            help="get a session token from a broker's login endpoint",
            description="Log in with a password (typed, piped on stdin, or $FEDBROKER_PASSWORD) and print a session "
            "token for --token or $FEDBROKER_TOKEN. The account needs a password_hash (`accounts hash-password`).",
        ),
        tokens=False,
    )
    lg.add_argument(
        "--url", required=True, type=address, help="HOST:PORT of the login endpoint (security.login_listen)"
    )
    lg.add_argument("--json", action="store_true", help="print user, token and expires_at (ISO 8601) as JSON")
    lg.set_defaults(handler=_login)

    tk = add_identity_args(
        sub.add_parser(
            "token",
            help="print one call token for a stock gRPC client such as grpcurl",
            description="Sign one call token as --as with its key (CREDS/NAME.ed25519) for the broker of --sp "
            "(or the one at --broker, read from its certificate). A call token is accepted once: make one per call.",
        ),
        session=False,
    )
    tk.add_argument("--sp", default=os.environ.get("FEDBROKER_SP", ""), help="the SP id of the broker to call")
    tk.add_argument(
        "--broker",
        type=address,
        default=os.environ.get("FEDBROKER_BROKER", DEFAULT_BROKER),
        help="without --sp: the broker whose certificate names its SP id (default $FEDBROKER_BROKER or "
        f"{DEFAULT_BROKER})",
    )
    tk.add_argument("--ttl", type=float, default=60.0, help="seconds the token is valid, 1 to 300 (default 60)")
    tk.set_defaults(handler=_token)
