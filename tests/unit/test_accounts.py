"""Account books, password hashes and the lab CA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from broker.security.accounts import (
    Account,
    AccountBook,
    AccountError,
    AccountKind,
    Role,
    dump_accounts,
    hash_password,
    parse_accounts,
    verify_password,
)
from broker.security.pki import Authority, common_name
from capability_catalog.signing import generate_key, key_id_of, public_key_to_text


def test_password_hash_verifies_only_the_same_password_and_is_salted() -> None:
    stored = hash_password("s3cret")
    assert stored.startswith("scrypt$") and verify_password("s3cret", stored)
    assert not verify_password("s3cret!", stored)
    assert hash_password("s3cret") != stored
    assert not verify_password("s3cret", "scrypt$garbage") and not verify_password("s3cret", "")


@pytest.mark.parametrize(
    ("entry", "path"),
    [
        ({"id": "bad id", "role": "customer"}, "accounts[0].id"),
        ({"id": "a", "role": "root"}, "accounts[0].role"),
        ({"id": "a", "kind": "user", "role": "peer-sp"}, "accounts[0].role"),
        ({"id": "a", "kind": "service", "role": "peer-sp", "password_hash": "scrypt$x"}, "accounts[0].password_hash"),
        ({"id": "a", "role": "customer", "keys": ["rsa:xyz"]}, "accounts[0].keys[0]"),
        ({"id": "a", "role": "customer", "colour": "red"}, "accounts[0].colour"),
    ],
)
def test_account_errors_name_the_path(entry: dict[str, object], path: str) -> None:
    with pytest.raises(AccountError) as info:
        parse_accounts({"accounts": [entry]}, "f.yaml: ")
    assert f"f.yaml: {path}" in str(info.value)


def test_duplicate_account_ids_are_refused() -> None:
    with pytest.raises(AccountError, match=r"accounts\[1\].id: 'a' is used twice"):
        parse_accounts({"accounts": [{"id": "a", "role": "customer"}, {"id": "a", "role": "operator"}]})


def _write(path: Path, accounts: list[Account]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(dump_accounts(accounts)))
    os.replace(tmp, path)


def test_book_finds_accounts_by_key_id_and_rereads_only_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yaml"
    k1, k2 = generate_key().public_key(), generate_key().public_key()
    _write(path, [Account("T", AccountKind.SERVICE, Role.PEER_SP, (public_key_to_text(k1),))])
    book = AccountBook(path)
    found = book.by_key_id(key_id_of(k1))
    assert found is not None and found[0].id == "T" and found[0].role is Role.PEER_SP
    assert not book.reload()  # unchanged
    _write(
        path,
        [
            Account("T", AccountKind.SERVICE, Role.PEER_SP, (public_key_to_text(k1),)),
            Account("M", AccountKind.SERVICE, Role.PEER_SP, (public_key_to_text(k2),)),
        ],
    )
    assert book.reload() and book.get("M") is not None and len(book) == 2
    path.write_text("accounts: [{id: 'bad id'}]\n")
    assert not book.reload()  # a broken edit keeps the accounts held
    assert book.get("M") is not None


def test_a_broken_account_file_at_start_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text("accounts: [{id: a, role: nobody}]\n")
    with pytest.raises(AccountError, match=r"accounts.yaml: accounts\[0\].role"):
        AccountBook(path)


def test_lab_ca_issues_certificates_naming_the_principal_and_local_hosts() -> None:
    ca = Authority.create()
    key_pem, cert_pem = ca.issue("L1", server=True)
    assert b"PRIVATE KEY" in key_pem and common_name(cert_pem) == "L1"
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"L1", "localhost"} <= set(san.get_values_for_type(x509.DNSName))
    assert cert.issuer == ca.cert.subject
    cert.verify_directly_issued_by(ca.cert)  # raises unless the CA signed it
