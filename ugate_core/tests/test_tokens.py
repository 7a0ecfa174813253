"""Signed tokens: the format, every refusal, the ``[tokens]`` table, ``ugate token``."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from ugate_core import AuthError, ConfigError, Gateway, id_of_public_key, loads, make_token
from ugate_core import verify_token as verify
from ugate_core.tokens import MAX_TOKEN, TokenKey, TokenSigner

NOW = 1_700_000_000.0
UGATE = [shutil.which("ugate") or str(Path(sys.executable).with_name("ugate"))]
ENV = {**os.environ, "UGATE_PLUGINS": ""}

SIGNERS: list[Callable[[], TokenSigner]] = [ed25519.Ed25519PrivateKey.generate,
                                            lambda: ec.generate_private_key(ec.SECP256R1())]


@pytest.fixture(params=SIGNERS, ids=["ed25519", "p256"])
def signer(request: pytest.FixtureRequest) -> TokenSigner:
    make: Callable[[], TokenSigner] = request.param
    return make()


def keys_of(*signers: TokenSigner) -> dict[str, TokenKey]:
    return {id_of_public_key(k): k.public_key() for k in signers}


def refusal(tok: str, keys: dict[str, TokenKey], aud: str = "gw1", max_lifetime: float = 3600,
            now: float = NOW) -> AuthError:
    with pytest.raises(AuthError) as ei:
        verify(tok, keys, aud, max_lifetime, now=now)
    assert tok not in str(ei.value)  # a log may print the message: never the credential
    return ei.value


def test_round_trip(signer: TokenSigner) -> None:
    tok = make_token(signer, "alice", "gw1", 60, now=NOW)
    assert verify(tok, keys_of(signer), "gw1", 3600, now=NOW + 59) == "alice"
    body = base64.urlsafe_b64decode(tok.split(".")[0] + "==")
    assert body == (b'{"aud":"gw1","exp":1700000060,"kid":"%s","sub":"alice"}'
                    % id_of_public_key(signer).encode())


def test_expired(signer: TokenSigner) -> None:
    e = refusal(make_token(signer, "alice", "gw1", 60, now=NOW), keys_of(signer), now=NOW + 61)
    assert (e.reason, str(e)) == ("token_expired", "token of 'alice' expired 1 s ago")
    e = refusal(make_token(signer, "alice", "gw1", 60, now=NOW), keys_of(signer), now=NOW + 60)
    assert e.reason == "token_expired"  # exp itself is already too late


def test_wrong_audience(signer: TokenSigner) -> None:
    e = refusal(make_token(signer, "alice", "gw2", 60, now=NOW), keys_of(signer))
    assert (e.reason, str(e)) == ("token_audience",
                                  "token of 'alice' is for audience 'gw2', not 'gw1'")


def test_unknown_key(signer: TokenSigner) -> None:
    stranger = ed25519.Ed25519PrivateKey.generate()
    e = refusal(make_token(stranger, "alice", "gw1", 60, now=NOW), keys_of(signer))
    kid = id_of_public_key(stranger)
    assert (e.reason, str(e)) == ("token_unknown_key", f"token signed by {kid[:16]!r}, not a "
                                  "key in [tokens] trusted_keys")


def test_bad_signature(signer: TokenSigner) -> None:
    tok = make_token(signer, "alice", "gw1", 60, now=NOW)
    for sig in ("AAAA", "", tok.split(".")[1][::-1]):
        e = refusal(tok.split(".")[0] + "." + sig, keys_of(signer))
        assert e.reason == "token_signature"
        assert str(e) == f"token signed by {id_of_public_key(signer)[:16]!r}: bad signature"


def test_kid_names_the_key_that_signed(signer: TokenSigner) -> None:
    """A trusted kid on a token another key signed: the signature fails, whatever the type."""
    other = ed25519.Ed25519PrivateKey.generate()
    keys = keys_of(signer)
    forged = make_token(other, "alice", "gw1", 60, now=NOW)
    body = base64.urlsafe_b64decode(forged.split(".")[0] + "==").replace(
        id_of_public_key(other).encode(), id_of_public_key(signer).encode())
    b = base64.urlsafe_b64encode(body).rstrip(b"=").decode()
    tok = f"{b}.{base64.urlsafe_b64encode(other.sign(b.encode())).rstrip(b'=').decode()}"
    assert refusal(tok, keys).reason == "token_signature"


def test_too_long_lifetime(signer: TokenSigner) -> None:
    e = refusal(make_token(signer, "alice", "gw1", 7200, now=NOW), keys_of(signer))
    assert (e.reason, str(e)) == ("token_lifetime", "token of 'alice' is valid 7200 s from "
                                  "now, more than [tokens] max_lifetime (3600 s)")


def test_tampered_payload(signer: TokenSigner) -> None:
    tok = make_token(signer, "alice", "gw1", 60, now=NOW)
    body, sig = tok.split(".")
    raw = base64.urlsafe_b64decode(body + "==").replace(b'"alice"', b'"admin"')
    tampered = base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + sig
    assert refusal(tampered, keys_of(signer)).reason == "token_signature"


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda t: "x" + t, None),
    (lambda t: t.replace(".", ""), "token is malformed: no '.'"),
    (lambda t: "a" * (MAX_TOKEN + 1), f"token of {MAX_TOKEN + 1} characters (at most "
     f"{MAX_TOKEN})"),
    (lambda t: "W10." + t.split(".")[1], "token is malformed: payload is not an object"),
    (lambda t: "e30." + t.split(".")[1], "token is malformed: needs kid, sub, aud (strings) "
     "and exp (unix seconds)"),
])
def test_malformed(signer: TokenSigner, mutate: Callable[[str], str], message: str | None
                   ) -> None:
    e = refusal(mutate(make_token(signer, "alice", "gw1", 60, now=NOW)), keys_of(signer))
    assert e.reason == "token_malformed"
    if message is not None:
        assert str(e) == message


KEYS = keys_of(ed25519.Ed25519PrivateKey.generate())


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.text(alphabet="abcdefXYZ0129-_.=", max_size=300),
                 st.binary(max_size=200).map(
                     lambda b: base64.urlsafe_b64encode(b).decode() + ".AAAA")))
def test_parser_raises_only_auth_error(text: str) -> None:
    try:
        verify(text, KEYS, "gw1", 3600, now=NOW)
    except AuthError as e:
        assert e.reason in ("token_malformed", "token_unknown_key")
    else:
        raise AssertionError(f"accepted {text!r}")


SIGNER = ed25519.Ed25519PrivateKey.generate()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400), st.integers(min_value=0, max_value=230))
def test_a_good_token_spliced_with_noise_raises_only_auth_error(noise: str, cut: int) -> None:
    good = make_token(SIGNER, "alice", "aud", 60, now=NOW)
    for tok in (noise, good[:cut] + noise, noise + good[cut:]):
        try:
            assert verify(tok, keys_of(SIGNER), "aud", 3600, now=NOW) == "alice"
        except AuthError as e:
            assert e.reason.startswith("token_")


@settings(max_examples=100, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=4)
                    | st.dictionaries(st.sampled_from(["kid", "sub", "aud", "exp", "x"]), c,
                                      max_size=5), max_leaves=12))
def test_any_json_payload_raises_only_auth_error(payload: object) -> None:
    import json

    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    with pytest.raises(AuthError):
        verify(body + ".AAAA", KEYS, "gw1", 3600, now=NOW)


# ------------------------------------------------------------------------- [tokens] config
def pem_file(tmp_path: Path, key: TokenSigner, name: str = "k.pem") -> Path:
    p = tmp_path / name
    p.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo))
    return p


def test_config_defaults_and_gateway_verify(tmp_path: Path) -> None:
    ed, p256 = ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1())
    inline = base64.b64encode(ed.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    cfg = loads(f'[tokens]\ntrusted_keys = ["{inline}", "{pem_file(tmp_path, p256)}"]\n')
    assert cfg.tokens.max_lifetime == 3600.0 and cfg.tokens.audience == ""
    gw = Gateway(cfg, state_dir=tmp_path / "state")
    assert set(gw.token_keys) == {id_of_public_key(ed), id_of_public_key(p256)}
    assert gw.token_audience == gw.identity.id  # the default audience: our mesh ID
    assert gw.verify_token(make_token(p256, "bob", gw.identity.id, 60)) == "bob"
    with pytest.raises(AuthError, match="for audience 'elsewhere'"):
        gw.verify_token(make_token(ed, "bob", "elsewhere", 60))
    gw2 = Gateway(loads('[tokens]\naudience = "app.example"\nmax_lifetime = 60\n'),
                  state_dir=tmp_path / "state")
    assert gw2.token_audience == "app.example"
    with pytest.raises(AuthError) as ei:  # no key trusted: no token verifies
        gw2.verify_token(make_token(ed, "bob", "app.example", 30))
    assert ei.value.reason == "token_unknown_key"


@pytest.mark.parametrize(("toml", "message"), [
    ('[tokens]\ntrusted_key = []', "tokens.trusted_key: unknown key (known: audience, "
     "max_lifetime, trusted_keys); did you mean 'trusted_keys'?"),
    ("[tokens]\ntrusted_keys = 3", "tokens.trusted_keys: 3 is not a list of keys (PEM files "
     "or base64)"),
    ("[tokens]\naudience = 1", "tokens.audience: 1 is not a string"),
    ("[tokens]\nmax_lifetime = 0", None),
    ("[tokens]\nmax_lifetime = 999999", None),
])
def test_config_errors_name_the_key(toml: str, message: str | None) -> None:
    with pytest.raises(ConfigError) as ei:
        loads(toml)
    if message is not None:
        assert str(ei.value) == message
    else:
        assert str(ei.value).startswith("tokens.max_lifetime: ")


def test_config_check_reads_the_keys(tmp_path: Path) -> None:
    rsa_like = ec.generate_private_key(ec.SECP384R1())
    cases = [
        ("/nonexistent.pem", "tokens.trusted_keys[0]: '/nonexistent.pem': cannot read: No such "
         "file or directory"),
        (str(pem_file(tmp_path, rsa_like)), "tokens.trusted_keys[0]: "
         f"'{tmp_path}/k.pem': a secp384r1 key; token keys are Ed25519 or EC P-256 "
         "(mesh keys)"),
    ]
    for key, message in cases:
        f = tmp_path / "c.toml"
        f.write_text(f'[tokens]\ntrusted_keys = ["{key}"]\n')
        res = subprocess.run([*UGATE, "config", "check", str(f)], capture_output=True,
                             timeout=60, env=ENV)
        assert res.returncode == 2
        assert res.stderr.decode() == f"ugate: config error: {message}\n"


# ------------------------------------------------------------------------ ugate token
def ugate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*UGATE, *args], capture_output=True, timeout=60, env=ENV,
                          text=True)


def test_cli_mints_with_the_workload_key(tmp_path: Path) -> None:
    state = tmp_path / "state"
    res = ugate("token", "alice", "--state-dir", str(state))
    assert res.returncode == 0, res.stderr
    tok = res.stdout.strip()
    gw = Gateway(loads(""), state_dir=state)
    ident = gw.identity
    keys = {ident.id: ident.key.public_key()}
    assert verify(tok, keys, ident.id, 300) == "alice"  # default audience: our mesh ID
    with pytest.raises(AuthError, match="expired"):
        verify(tok, keys, ident.id, 3600, now=NOW * 2)
    res = ugate("token", "bob", "--audience", "app.example", "--lifetime", "30",
                "--state-dir", str(state))
    assert res.returncode == 0, res.stderr
    assert verify(res.stdout.strip(), keys, "app.example", 30) == "bob"


def test_cli_key_file_and_errors(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    kf = tmp_path / "signer.pem"
    kf.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    kf.chmod(0o600)
    res = ugate("token", "carol", "--key", str(kf), "--audience", "gw1",
                "--state-dir", str(tmp_path / "s"))
    assert res.returncode == 0, res.stderr
    assert verify(res.stdout.strip(), keys_of(key), "gw1", 3600) == "carol"
    kf.chmod(0o644)
    res = ugate("token", "carol", "--key", str(kf), "--audience", "gw1")
    assert res.returncode == 1
    assert res.stderr.startswith(f"ugate: key file {kf}: mode 0644 lets other users read")
    res = ugate("token", "carol", "--lifetime", "0", "--audience", "gw1")
    assert (res.returncode, res.stderr) == (1, "ugate: --lifetime 0: not a number of "
                                            "seconds > 0\n")
    res = ugate("token", "carol", "--key", str(kf) + ".none", "--audience", "gw1")
    assert (res.returncode, res.stderr) == (1, f"ugate: key file {kf}.none: no such file\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text("[tokens]\nmax_lifetime = 60\n")
    kf.chmod(0o600)
    res = ugate("token", "carol", "-c", str(cfg), "--key", str(kf), "--audience", "gw1")
    assert res.returncode == 0
    assert res.stderr == ("ugate: warning: --lifetime 300 s is more than [tokens] "
                          "max_lifetime (60 s): this gateway refuses the token\n")
