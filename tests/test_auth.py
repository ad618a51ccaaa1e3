"""Client authentication: secret hashes, the auth file, Authorization checks, reloads, `auth hash`."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from goproxy import auth as auth_module
from goproxy.auth import (
    CHALLENGE,
    DEFAULT_ITERATIONS,
    AuthFile,
    AuthFileError,
    Credentials,
    claimed_name,
    hash_secret,
    parse_authorization,
    verify_secret,
)
from goproxy.cli.auth import auth_command
from tests.support.helpers import FakeClock, wait_for

ROOT = Path(__file__).resolve().parent.parent
ITER = 1000  # cheap hashes for tests; the default cost is pinned by its own test


def basic(name: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{secret}".encode()).decode()


@pytest.fixture
def pbkdf2_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """pbkdf2_calls records the iteration count of every PBKDF2 run (the real function still runs)."""
    calls: list[int] = []
    real = hashlib.pbkdf2_hmac

    def spy(name: str, password: bytes, salt: bytes, iterations: int, *args: Any) -> bytes:
        calls.append(iterations)
        return real(name, password, salt, iterations, *args)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", spy)
    return calls


# passlib's documented examples of pbkdf2_sha256.hash("password").
PASSLIB_VECTORS = [
    "$pbkdf2-sha256$6400$0ZrzXitFSGltTQnBWOsdAw$Y11AchqV4b0sUisdZd0Xr97KWoymNE0LNNrnEgY4H9M",
    "$pbkdf2-sha256$8000$XAuBMIYQQogxRg$tRRlz8hYn63B9LYiCd6PRo6FMiunY9ozmMMI3srxeRE",
]


@pytest.mark.parametrize("hashed", PASSLIB_VECTORS, ids=["16-byte-salt", "10-byte-salt"])
def test_passlib_hashes_verify(hashed: str) -> None:
    assert verify_secret("password", hashed)
    assert not verify_secret("Password", hashed)


def test_hash_secret_writes_passlib_format() -> None:
    salt = base64.b64decode("0ZrzXitFSGltTQnBWOsdAw==")
    assert hash_secret("password", 6400, salt) == PASSLIB_VECTORS[0]


def test_hash_secret_round_trips_and_salts() -> None:
    a, b = hash_secret("s3cret", ITER), hash_secret("s3cret", ITER)
    assert a != b
    assert verify_secret("s3cret", a)
    assert verify_secret("s3cret", b)
    assert not verify_secret("s3cret ", a)


def test_default_cost_is_owasp_figure() -> None:
    assert DEFAULT_ITERATIONS == 600_000
    assert hash_secret("x").split("$")[2] == "600000"


def test_non_ascii_secret_round_trips() -> None:
    assert verify_secret("pässwörd-密码", hash_secret("pässwörd-密码", ITER))


@pytest.mark.parametrize("kwargs", [{"iterations": 0}, {"salt": b""}, {"salt": b"x" * 1025}],
                         ids=["zero-iterations", "empty-salt", "huge-salt"])
def test_hash_secret_refuses_bad_parameters(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        hash_secret("x", **kwargs)


@pytest.mark.parametrize("hashed,message", [
    ("$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW", "unknown hash format"),
    ("pbkdf2_sha256$600000$salt$aGFzaA==", "unknown hash format"),
    ("", "unknown hash format"),
    ("$pbkdf2-sha256$0$0ZrzXitFSGltTQnBWOsdAw$Y11AchqV4b0sUisdZd0Xr97KWoymNE0LNNrnEgY4H9M", "malformed"),
    ("$pbkdf2-sha256$abc$0ZrzXitFSGltTQnBWOsdAw$Y11AchqV4b0sUisdZd0Xr97KWoymNE0LNNrnEgY4H9M", "malformed"),
    ("$pbkdf2-sha256$6400$0ZrzXitFSGltTQnBWOsdAw$Y11AchqV4b0sUisdZd0Xr97KWoymNE0LNNrnEgY4H9", "malformed"),
    ("$pbkdf2-sha256$6400$$Y11AchqV4b0sUisdZd0Xr97KWoymNE0LNNrnEgY4H9M", "malformed"),
    ("$pbkdf2-sha256$6400$0Zrz+itFSGltTQnBWOsdAw$Y11AchqV4b0sUisdZd0Xr97KWoymNE0LNNrnEgY4H9M", "malformed"),
    ("$pbkdf2-sha256$6400$0$Y11AchqV4b0sUisdZd0Xr97KWoymNE0LNNrnEgY4H9M", "bad base64"),
    ("$pbkdf2-sha256$4294967296$0ZrzXitFSGltTQnBWOsdAw$Y11AchqV4b0sUisdZd0Xr97KWoymNE0LNNrnEgY4H9M",
     "out of range"),
], ids=["bcrypt", "django", "empty", "zero-iterations", "iterations-text", "short-hash", "no-salt",
        "plus-in-salt", "salt-length", "iterations-too-big"])
def test_verify_secret_refuses_malformed_hashes(hashed: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        verify_secret("password", hashed)


@pytest.mark.parametrize("header,expected", [
    (basic("alice", "s3cret"), ("alice", "s3cret")),
    ("basic " + base64.b64encode(b"alice:s3cret").decode(), ("alice", "s3cret")),
    ("BASIC  " + base64.b64encode(b"alice:s3cret").decode() + " ", ("alice", "s3cret")),
    (basic("alice", "a:b:c"), ("alice", "a:b:c")),
    (basic("alice", ""), ("alice", "")),
    (basic("zoë", "sécret"), ("zoë", "sécret")),
    ("Bearer alice:s3cret", ("alice", "s3cret")),
    ("bearer alice:s3:cret", ("alice", "s3:cret")),
    ("Bearer alice:sécret".encode().decode("latin-1"), ("alice", "sécret")),
    (None, None),
    ("", None),
    ("Basic", None),
    ("Basic !!!!", None),
    ("Basic " + base64.b64encode(b"alice").decode(), None),
    ("Basic " + base64.b64encode(b":s3cret").decode(), None),
    ("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), None),
    ("Bearer alices3cret", None),
    ("Bearer :s3cret", None),
    ("Digest username=alice", None),
    ("alice:s3cret", None),
    ("Bearer alice:" + "x" * 5000, None),
], ids=["basic", "basic-lower", "basic-upper-spaces", "colons-in-secret", "empty-secret", "utf8", "bearer",
        "bearer-lower", "bearer-utf8-as-latin1", "none", "empty", "no-token", "bad-base64", "basic-no-colon",
        "basic-empty-name", "basic-not-utf8", "bearer-no-colon", "bearer-empty-name", "other-scheme",
        "no-scheme", "too-long"])
def test_parse_authorization(header: str | None, expected: tuple[str, str] | None) -> None:
    assert parse_authorization(header) == expected


def test_claimed_name_never_returns_the_secret() -> None:
    assert claimed_name(basic("alice", "s3cret")) == "alice"
    assert claimed_name("Bearer nobody") is None


def test_challenge_is_basic_with_realm() -> None:
    assert CHALLENGE == 'Basic realm="goproxy"'


@pytest.fixture
def creds() -> Credentials:
    return Credentials({"alice": hash_secret("s3cret", ITER), "bob": hash_secret("hunter2", ITER)})


@pytest.mark.parametrize("header,expected", [
    (basic("alice", "s3cret"), "alice"),
    ("Bearer bob:hunter2", "bob"),
    (basic("alice", "hunter2"), None),
    (basic("carol", "s3cret"), None),
    ("Bearer alice:S3cret", None),
    (None, None),
    ("Basic garbage", None),
], ids=["basic", "bearer", "other-users-secret", "unknown-name", "wrong-case", "missing", "malformed"])
def test_check_returns_the_authenticated_name(creds: Credentials, header: str | None, expected: str | None) -> None:
    assert creds.check(header) == expected


def test_unknown_name_costs_the_same_pbkdf2_work(pbkdf2_calls: list[int]) -> None:
    creds = Credentials({"alice": hash_secret("s3cret", 5000)})
    pbkdf2_calls.clear()
    assert creds.check(basic("alice", "wrong")) is None
    assert creds.check(basic("nobody", "wrong")) is None
    assert pbkdf2_calls == [5000, 5000]


def test_remembered_success_skips_pbkdf2(creds: Credentials, pbkdf2_calls: list[int]) -> None:
    assert creds.check(basic("alice", "s3cret")) == "alice"
    assert creds.check("Bearer alice:s3cret") == "alice"
    assert creds.check(basic("alice", "s3cret")) == "alice"
    assert pbkdf2_calls == [ITER]


def test_remembered_success_does_not_admit_another_secret(creds: Credentials, pbkdf2_calls: list[int]) -> None:
    assert creds.check(basic("alice", "s3cret")) == "alice"
    assert creds.check(basic("alice", "s3cret2")) is None
    assert len(pbkdf2_calls) == 2


def test_failure_is_never_remembered_as_success(creds: Credentials) -> None:
    assert creds.check(basic("alice", "wrong")) is None
    assert creds.check(basic("alice", "wrong")) is None
    assert creds.check(basic("alice", "s3cret")) == "alice"
    assert creds.check(basic("alice", "wrong")) is None


def test_repeated_identical_failure_skips_pbkdf2(creds: Credentials, pbkdf2_calls: list[int]) -> None:
    for _ in range(5):
        assert creds.check(basic("alice", "wrong")) is None
    assert pbkdf2_calls == [ITER]


def test_memory_does_not_hold_the_secret(creds: Credentials) -> None:
    creds.check(basic("alice", "s3cret"))
    creds.check(basic("alice", "wr0ng-guess"))
    state = repr(vars(creds))
    for secret in ("s3cret", "wr0ng-guess"):
        assert secret not in state
        assert repr(secret.encode())[2:-1] not in state
        assert basic("alice", secret).split()[1] not in state


def test_a_good_header_seen_before_is_not_decoded_again(creds: Credentials, monkeypatch: pytest.MonkeyPatch) -> None:
    header = basic("alice", "s3cret")
    assert creds.check(header) == "alice"

    def no_decoding(value: str | None) -> None:
        raise AssertionError(f"decoded {value!r} again")

    monkeypatch.setattr("goproxy.auth.parse_authorization", no_decoding)
    assert creds.remembered(header) == "alice"
    assert creds.check(header) == "alice"


def test_good_headers_remembered_are_bounded(creds: Credentials) -> None:
    token = basic("alice", "s3cret").split()[1]
    for spaces in range(1, auth_module._REMEMBER_HEADERS + 10):
        assert creds.check("Basic" + " " * spaces + token) == "alice"
    assert len(creds._good_headers) <= auth_module._REMEMBER_HEADERS


def test_concurrent_first_checks_share_one_pbkdf2_run(monkeypatch: pytest.MonkeyPatch) -> None:
    creds = Credentials({"alice": hash_secret("s3cret", ITER)})
    real, calls, release = hashlib.pbkdf2_hmac, [], threading.Event()

    def slow(*args: Any) -> bytes:
        calls.append(args)
        release.wait(10)
        return real(*args)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", slow)
    results: list[str | None] = []
    threads = [threading.Thread(target=lambda: results.append(creds.check(basic("alice", "s3cret"))))
               for _ in range(8)]
    for t in threads:
        t.start()
    key = creds._mac("alice", "s3cret").hex()

    def all_but_one_wait() -> bool:
        return creds._flights.waiters(key) == 7

    wait_for(all_but_one_wait)
    release.set()
    for t in threads:
        t.join(10)
    assert results == ["alice"] * 8
    assert len(calls) == 1


def test_credentials_refuse_bad_names_and_hashes() -> None:
    with pytest.raises(ValueError, match="contains ':'"):
        Credentials({"a:b": hash_secret("x", ITER)})
    with pytest.raises(ValueError, match="alice: unknown hash format"):
        Credentials({"alice": "plain"})


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


HASH = hash_secret("s3cret", ITER)


def test_load_reads_lines_comments_and_crlf(tmp_path: Path) -> None:
    text = f"# builders\n\nalice:{HASH}\r\n  bob:{hash_secret('hunter2', ITER)}  \n# end"
    creds = Credentials.load(write(tmp_path / "auth", text))
    assert creds.names == {"alice", "bob"}
    assert creds.check("Bearer bob:hunter2") == "bob"


@pytest.mark.parametrize("text,message", [
    ("alice\n", ":1: want name:hash"),
    (f"# c\nalice:{HASH}\nbob:{HASH}\nalice:{HASH}\n", ":4: duplicate name 'alice' (first on line 2)"),
    ("alice:$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW\n", ":1: alice: unknown hash format"),
    (f"alice:{HASH[:-2]}\n", ":1: alice: malformed $pbkdf2-sha256$ hash"),
    (f"al ice:{HASH}\n", ":1: name contains white space"),
    (f":{HASH}\n", ":1: empty name"),
    (f"\n\nalice :{HASH}\n", ":3: name contains white space"),
    ("", ": no credentials"),
    ("# nobody yet\n\n", ": no credentials"),
], ids=["no-colon", "duplicate", "bcrypt", "truncated-hash", "space-in-name", "empty-name", "space-before-colon",
        "empty-file", "only-comments"])
def test_load_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "auth", text)
    with pytest.raises(AuthFileError) as info:
        Credentials.load(path)
    assert str(info.value).startswith(path + message)
    assert HASH not in str(info.value)


def test_load_names_line_of_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "auth"
    path.write_bytes(f"alice:{HASH}\nb\xffb:{HASH}\n".encode("latin-1"))
    with pytest.raises(AuthFileError, match=r"auth:2: not UTF-8 text"):
        Credentials.load(str(path))


def test_load_names_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(AuthFileError, match=r"missing: No such file or directory"):
        Credentials.load(str(tmp_path / "missing"))


def test_auth_file_error_is_a_value_error() -> None:
    assert issubclass(AuthFileError, ValueError)


@pytest.fixture
def auth_path(tmp_path: Path) -> Path:
    path = tmp_path / "auth"
    path.write_text(f"alice:{HASH}\n")
    return path


def replace_file(path: Path, text: str) -> None:
    """replace_file writes text to a new file and renames it over path, as config tools do."""
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_auth_file_loads_at_construction(auth_path: Path, clock: FakeClock) -> None:
    af = AuthFile(str(auth_path), clock=clock)
    assert af.current().check(basic("alice", "s3cret")) == "alice"


def test_auth_file_refuses_a_bad_file_at_construction(tmp_path: Path, clock: FakeClock) -> None:
    with pytest.raises(AuthFileError, match=":1: want name:hash"):
        AuthFile(write(tmp_path / "auth", "alice\n"), clock=clock)


def test_reload_puts_new_credentials_in_force(auth_path: Path, clock: FakeClock) -> None:
    af = AuthFile(str(auth_path), clock=clock)
    replace_file(auth_path, f"bob:{hash_secret('hunter2', ITER)}\n")
    assert af.reload()
    assert af.current().check("Bearer bob:hunter2") == "bob"
    assert af.current().check(basic("alice", "s3cret")) is None


def test_reload_of_a_broken_file_keeps_the_old_credentials(auth_path: Path, clock: FakeClock,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    af = AuthFile(str(auth_path), clock=clock)
    replace_file(auth_path, f"alice:{HASH}\nbob\n")
    with caplog.at_level(logging.ERROR, logger="goproxy.auth"):
        assert not af.reload()
    assert af.current().check(basic("alice", "s3cret")) == "alice"
    assert [r.getMessage() for r in caplog.records] == [
        f"auth file not reloaded: {auth_path}:2: want name:hash; keeping the 1 credentials in force"]


def test_maybe_reload_waits_for_the_interval(auth_path: Path, clock: FakeClock) -> None:
    af = AuthFile(str(auth_path), clock=clock, interval=5)
    replace_file(auth_path, f"bob:{HASH}\n")
    clock.advance(4.9)
    assert not af.maybe_reload()
    assert af.current().names == {"alice"}
    clock.advance(0.1)
    assert af.maybe_reload()
    assert af.current().names == {"bob"}


def test_maybe_reload_leaves_an_unchanged_file_alone(auth_path: Path, clock: FakeClock) -> None:
    af = AuthFile(str(auth_path), clock=clock)
    before = af.current()
    for _ in range(3):
        clock.advance(1)
        assert not af.maybe_reload()
    assert af.current() is before


def test_maybe_reload_sees_a_same_size_same_mtime_replacement(auth_path: Path, clock: FakeClock) -> None:
    af = AuthFile(str(auth_path), clock=clock)
    old = os.stat(auth_path)
    new = auth_path.with_suffix(".new")
    new.write_text(f"bobby:{hash_secret('s3cret', ITER)}\n")
    os.utime(new, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert new.stat().st_size == old.st_size
    os.replace(new, auth_path)
    clock.advance(1)
    assert af.maybe_reload()
    assert af.current().names == {"bobby"}


def test_maybe_reload_reports_a_broken_file_once(auth_path: Path, clock: FakeClock,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    af = AuthFile(str(auth_path), clock=clock)
    with caplog.at_level(logging.ERROR, logger="goproxy.auth"):
        replace_file(auth_path, "garbage\n")
        for _ in range(3):
            clock.advance(1)
            assert not af.maybe_reload()
        auth_path.unlink()
        for _ in range(3):
            clock.advance(1)
            assert not af.maybe_reload()
    assert af.current().names == {"alice"}
    assert len(caplog.records) == 2
    assert "No such file" in caplog.records[1].getMessage()


def run_auth(args: list[str], stdin: str = "s3cret\n", iterations: int = ITER) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = auth_command(args, io.StringIO(stdin), out, err, iterations=iterations)
    return code, out.getvalue(), err.getvalue()


def test_auth_hash_prints_a_hash_of_the_first_line() -> None:
    code, out, err = run_auth(["hash"], "s3cret\nignored\n")
    assert (code, err) == (0, "")
    assert out.endswith("\n")
    assert verify_secret("s3cret", out[:-1])


@pytest.mark.parametrize("stdin", ["s3cret\r\n", "s3cret"], ids=["crlf", "no-newline"])
def test_auth_hash_strips_only_the_line_end(stdin: str) -> None:
    code, out, _ = run_auth(["hash"], stdin)
    assert code == 0
    assert verify_secret("s3cret", out.strip())


def test_auth_hash_keeps_spaces_in_the_secret() -> None:
    _, out, _ = run_auth(["hash"], " s3 cret \n")
    assert verify_secret(" s3 cret ", out.strip())


@pytest.mark.parametrize("args", [["hash", "-name", "alice"], ["hash", "-name=alice"], ["hash", "--name", "alice"]],
                         ids=["separate", "equals", "double-dash"])
def test_auth_hash_with_name_prints_an_auth_file_line(tmp_path: Path, args: list[str]) -> None:
    code, out, _ = run_auth(args)
    assert code == 0
    assert out.startswith("alice:$pbkdf2-sha256$1000$")
    creds = Credentials.load(write(tmp_path / "auth", out))
    assert creds.check(basic("alice", "s3cret")) == "alice"


def test_auth_hash_uses_the_default_cost() -> None:
    out = io.StringIO()
    assert auth_command(["hash"], io.StringIO("x\n"), out, io.StringIO()) == 0
    assert out.getvalue().startswith("$pbkdf2-sha256$600000$")


@pytest.mark.parametrize("stdin", ["\n", "", "\r\n"], ids=["empty-line", "eof", "empty-crlf"])
def test_auth_hash_refuses_an_empty_secret(stdin: str) -> None:
    code, out, err = run_auth(["hash"], stdin)
    assert (code, out) == (1, "")
    assert err == "goproxy auth hash: empty secret refused\n"


@pytest.mark.parametrize("args,message", [
    (["hash", "-name", "a:b"], "invalid -name 'a:b': name contains ':'"),
    (["hash", "-name", "a b"], "invalid -name 'a b': name contains white space"),
    (["hash", "-name", ""], "invalid -name '': empty name"),
    (["hash", "-name", "#ci"], "invalid -name '#ci': name starts with '#'"),
    (["hash", "-name"], "flag -name: needs a value"),
    (["hash", "-iterations", "5"], "unknown flag -iterations"),
    (["hash", "extra"], "unexpected argument 'extra'"),
    (["rehash"], "unknown command 'rehash'"),
], ids=["colon", "space", "empty", "hash-sign", "missing-value", "unknown-flag", "extra-arg", "unknown-command"])
def test_auth_command_usage_errors_exit_2(args: list[str], message: str) -> None:
    code, out, err = run_auth(args)
    assert (code, out) == (2, "")
    assert message in err


@pytest.mark.parametrize("args", [["-h"], ["--help"], ["hash", "-h"]], ids=["auth-h", "auth-help", "hash-h"])
def test_auth_command_help_prints_usage(args: list[str]) -> None:
    code, out, err = run_auth(args)
    assert (code, err) == (0, "")
    assert out.startswith("Usage: goproxy auth hash [-name NAME]")


def test_auth_command_without_arguments_is_a_usage_error() -> None:
    code, out, err = run_auth([])
    assert (code, out) == (2, "")
    assert err.startswith("Usage: goproxy auth hash")


class Terminal:
    """Terminal runs auth_command in a child whose stdin is a pseudo-terminal, as a person at a shell."""

    def __init__(self, args: list[str]) -> None:
        code = ("import sys; from goproxy.cli.auth import auth_command; "
                "sys.exit(auth_command(sys.argv[1:], sys.stdin, sys.stdout, sys.stderr, iterations=1000))")
        self.master, slave = os.openpty()
        # A new session has no controlling terminal, so getpass reads the pty on stdin.
        self.proc = subprocess.Popen([sys.executable, "-c", code, *args], stdin=slave, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=ROOT, start_new_session=True)
        os.close(slave)
        self.err = b""

    def wait_prompt(self, prompt: bytes, timeout: float = 20) -> None:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        while prompt not in self.err:
            left = deadline - time.monotonic()
            assert left > 0, f"no prompt {prompt!r}; stderr so far {self.err!r}"
            if select.select([self.proc.stderr], [], [], left)[0]:
                chunk = os.read(self.proc.stderr.fileno(), 4096)
                assert chunk, f"stderr closed before prompt {prompt!r}: {self.err!r}"
                self.err += chunk

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def finish(self) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=20)
        os.close(self.master)
        return self.proc.returncode, out.decode(), (self.err + err).decode()


def answer(args: list[str], first: str, second: str) -> tuple[int, str, str]:
    term = Terminal(args)
    term.wait_prompt(b"Secret: ")
    term.type(first)
    term.wait_prompt(b"Again: ")
    term.type(second)
    return term.finish()


def test_auth_hash_on_a_terminal_asks_twice() -> None:
    code, out, err = answer(["hash", "-name", "alice"], "s3cret", "s3cret")
    assert code == 0, err
    name, _, hashed = out.strip().partition(":")
    assert name == "alice"
    assert verify_secret("s3cret", hashed)
    assert "s3cret" not in err


def test_auth_hash_on_a_terminal_refuses_a_mismatch() -> None:
    code, out, err = answer(["hash"], "s3cret", "s3cert")
    assert (code, out) == (1, "")
    assert "the secrets do not match" in err
