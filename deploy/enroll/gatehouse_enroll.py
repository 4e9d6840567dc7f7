#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = ["cryptography>=42"]
# ///
"""gatehouse-enroll: enroll this laptop with Gatehouse once, then keep its device certificate fresh.

Owns the laptop side of device enrollment (issue 15, part B): reading the hardware serial from
the operating system, the key pair (EC P-256, created here, never sent), the certificate signing
request, the sign-in by one-time code, the enrollment request and its nonce file, polling, the
install into the user's key store (macOS login keychain, Windows CurrentUser\\My, the user's NSS
database on Linux, else a file only the user can read), the browser settings that present the
certificate without a prompt, and the daily renewal job (launchd, systemd user timer, Task
Scheduler). Speaks only the HTTP API in the enrollment contract, under `/.gatehouse/api/v1/`.

Runs as one file (``python3 gatehouse_enroll.py URL``, or ``pipx run <URL of this file> URL``, which reads
the inline script metadata above (PEP 723) and installs ``cryptography`` for it) or installed with pipx
(``gatehouse-enroll``). Run as a plain file without ``cryptography`` (or with one older than 42), it stops with exit status 1 and says
how to get it.
Runs on Python 3.9+ (macOS's own /usr/bin/python3 is 3.9). Imports the standard library and
``cryptography`` only (keys, CSR, PKCS#12); never gateway,
policy_engine or breakglass. Every operating-system command goes through one ``Runner`` so tests
replay recorded outputs of the real tools.
"""

from __future__ import annotations

import argparse
import json
import os
import plistlib
import re
import secrets
import shlex
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
import webbrowser
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePath, PureWindowsPath
from typing import Protocol

API = "/.gatehouse/api/v1"
CLIENT_PATH = "/.gatehouse/enroll/gatehouse_enroll.py"
"""Where Gatehouse serves this file."""


CRYPTOGRAPHY_MIN = (42, 0)
"""The oldest ``cryptography`` this file works with (the same bound as its inline metadata and pyproject.toml)."""


def missing_cryptography(argv: Sequence[str], found: str | None = None) -> str:
    """What to say when ``cryptography`` is missing (or ``found``, too old): how to install it, or the pipx command for this Gatehouse."""
    origin = next((a.rstrip("/") for a in argv if a.startswith(("https://", "http://"))), "https://<your Gatehouse>")
    minimum = ".".join(map(str, CRYPTOGRAPHY_MIN))
    what = "is not installed" if found is None else f"is version {found}, older than {minimum}"
    return (f"gatehouse-enroll: the Python package `cryptography` {what} (it makes the key, the certificate request "
            f"and the PKCS#12 bundle); install it with `pip install --user 'cryptography>={minimum}'` and run this again, "
            f"or run `pipx run {origin}{CLIENT_PATH} {origin}`, which installs it for this program alone")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


try:
    import cryptography
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:
    print(missing_cryptography(sys.argv[1:]), file=sys.stderr)
    sys.exit(1)
if _version(cryptography.__version__) < CRYPTOGRAPHY_MIN:  # e.g. Debian 12's python3-cryptography 38: no load_pem_x509_certificates
    print(missing_cryptography(sys.argv[1:], cryptography.__version__), file=sys.stderr)
    sys.exit(1)

RENEW_WITHIN = timedelta(days=10)
"""A certificate with less than this left is renewed by ``--renew``."""
DMI_SERIAL = "/sys/class/dmi/id/product_serial"
WINDOWS_SERIAL_COMMAND = "(Get-CimInstance -ClassName Win32_BIOS).SerialNumber"
RENEWAL_NAME = "gatehouse-enroll-renew"
LAUNCHD_LABEL = "com.gatehouse.enroll-renew"
WINDOWS_TASK = "Gatehouse device certificate renewal"
PLACEHOLDER_SERIALS = frozenset(
    {
        "",
        "0",
        "none",
        "null",
        "n/a",
        "to be filled by o.e.m.",
        "system serial number",
        "default string",
        "not applicable",
        "not specified",
        "not available",
        "0123456789",
        "chassis serial number",
        "serial number",
    }
)
"""Values firmware writes when nobody set a serial; the same list as Gatehouse's ingest rule."""


class EnrollError(Exception):
    """Enrollment or renewal stopped; the message says what happened and what to do."""


@dataclass(frozen=True)
class Completed:
    """What one operating-system command did."""

    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    """Runs one operating-system command; a missing program is exit code 127, never an exception."""

    def __call__(self, argv: Sequence[str], *, stdin: bytes | None = None, env: Mapping[str, str] | None = None) -> Completed: ...


def run_command(argv: Sequence[str], *, stdin: bytes | None = None, env: Mapping[str, str] | None = None) -> Completed:
    """Run ``argv`` (no shell), capturing its output; extra ``env`` entries are added to ours."""
    try:
        done = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            env={**os.environ, **env} if env else None,
            check=False,
        )
    except FileNotFoundError:
        return Completed(127, "", f"{argv[0]}: command not found")
    except PermissionError as exc:
        return Completed(126, "", f"{argv[0]}: {exc.strerror}")
    return Completed(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))


def run_interactive(argv: Sequence[str], *, stdin: bytes | None = None, env: Mapping[str, str] | None = None) -> Completed:
    """Run ``argv`` with the terminal attached for prompts (sudo's password), capturing stdout only."""
    del stdin, env
    try:
        done = subprocess.run(list(argv), stdout=subprocess.PIPE, check=False)
    except FileNotFoundError:
        return Completed(127, "", f"{argv[0]}: command not found")
    return Completed(done.returncode, done.stdout.decode(errors="replace"), "")


class Pace(Protocol):
    """Waiting between polls, and the time that passes meanwhile."""

    def sleep(self, seconds: float) -> None: ...

    def monotonic(self) -> float: ...


class RealPace:
    """The process's own clock."""

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass(frozen=True)
class Host:
    """The laptop as the client sees it: platform, home directory, commands and clocks."""

    platform: str
    home: Path
    run: Runner
    sudo: Runner = run_interactive
    pace: Pace = field(default_factory=RealPace)
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    say: Callable[[str], None] = print
    open_browser: Callable[[str], object] = webbrowser.open
    hostname: str = field(default_factory=socket.gethostname)
    python: str = sys.executable
    script: str = str(Path(__file__).resolve())
    uid: int = field(default_factory=lambda: os.getuid() if hasattr(os, "getuid") else 0)

    @property
    def state_dir(self) -> Path:
        return self.home / ".gatehouse"


def platform_name(sys_platform: str) -> str:
    """The contract's platform name for ``sys.platform``.

    Raises:
        EnrollError: on a platform Gatehouse cannot enroll.
    """
    if sys_platform == "darwin":
        return "darwin"
    if sys_platform.startswith("linux"):
        return "linux"
    if sys_platform in ("win32", "cygwin"):
        return "windows"
    raise EnrollError(f"cannot enroll a `{sys_platform}` computer; gatehouse-enroll supports macOS, Linux and Windows")


# --- the hardware serial -------------------------------------------------------------------------


def is_placeholder_serial(serial: str) -> bool:
    """True for empty, vendor-placeholder and one-character-repeated serials that never identify a laptop."""
    text = serial.strip().casefold()
    return text in PLACEHOLDER_SERIALS or set(text) <= {"0", " ", "-", "x"} or len(set(text)) == 1


def checked_serial(raw: str, source: str) -> str:
    """``raw`` trimmed, when it is a usable serial.

    Raises:
        EnrollError: for a placeholder, an overlong or a non-printable value.
    """
    serial = raw.strip()
    if is_placeholder_serial(serial) or len(serial) > 128 or not serial.isprintable():
        shown = serial[:40].encode("unicode_escape").decode("ascii")
        raise EnrollError(
            f"serial unreadable: {source} says `{shown}`, a placeholder rather than this laptop's hardware serial"
            " (virtual machines and some self-built PCs have none); this computer cannot be enrolled,"
            " ask your Gatehouse administrator about an identity-only tier"
        )
    return serial


_IOREG_SERIAL = re.compile(r'"IOPlatformSerialNumber"\s*=\s*"([^"]*)"')


def read_serial(host: Host) -> str:
    """This laptop's hardware serial, read the platform's way.

    Raises:
        EnrollError: when no command could read it, or it is a placeholder.
    """
    if host.platform == "darwin":
        return _darwin_serial(host)
    if host.platform == "linux":
        return _linux_serial(host)
    return _windows_serial(host)


def _darwin_serial(host: Host) -> str:
    ioreg = host.run(["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"])
    found = _IOREG_SERIAL.search(ioreg.stdout) if ioreg.returncode == 0 else None
    if found:
        return checked_serial(found.group(1), "`ioreg -rd1 -c IOPlatformExpertDevice`")
    profiler = host.run(["system_profiler", "SPHardwareDataType", "-json"])
    try:
        overview = json.loads(profiler.stdout)["SPHardwareDataType"][0]
        raw = overview["serial_number"]
    except (ValueError, LookupError, TypeError):
        raise EnrollError(
            "serial unreadable: neither `ioreg -rd1 -c IOPlatformExpertDevice` nor"
            f" `system_profiler SPHardwareDataType -json` named a serial ({_said(ioreg)}; {_said(profiler)});"
            " run them yourself to see why"
        ) from None
    return checked_serial(str(raw), "`system_profiler SPHardwareDataType -json`")


def _linux_serial(host: Host) -> str:
    read = host.run(["cat", DMI_SERIAL])
    if read.returncode == 0:
        return checked_serial(read.stdout, f"`{DMI_SERIAL}`")
    if "permission denied" not in read.stderr.casefold():
        raise EnrollError(f"serial unreadable: `{DMI_SERIAL}` could not be read ({_said(read)}); this computer reports no DMI serial")
    host.say(f"Reading the hardware serial needs root on this distribution: running `sudo cat {DMI_SERIAL}` (only that file is read).")
    elevated = host.sudo(["sudo", "cat", DMI_SERIAL])
    if elevated.returncode == 127:
        host.say(f"sudo is not installed; asking through polkit: `pkexec cat {DMI_SERIAL}`.")
        elevated = host.sudo(["pkexec", "cat", DMI_SERIAL])
    if elevated.returncode != 0:
        raise EnrollError(
            f"serial unreadable: `{DMI_SERIAL}` is readable by root only and `sudo cat` failed ({_said(elevated)});"
            f" run `sudo cat {DMI_SERIAL}` to check, then enroll again"
        )
    return checked_serial(elevated.stdout, f"`{DMI_SERIAL}`")


def _windows_serial(host: Host) -> str:
    done = host.run(["powershell.exe", "-NoProfile", "-NonInteractive", "-Command", WINDOWS_SERIAL_COMMAND])
    if done.returncode != 0:
        raise EnrollError(f"serial unreadable: PowerShell `{WINDOWS_SERIAL_COMMAND}` failed ({_said(done)}); run it yourself to see why")
    return checked_serial(done.stdout, "Win32_BIOS.SerialNumber")


def _said(done: Completed) -> str:
    text = (done.stderr.strip() or done.stdout.strip()).splitlines()
    return f"exit {done.returncode}: {text[0].strip()[:200]}" if text else f"exit {done.returncode}"


# --- keys and requests ---------------------------------------------------------------------------


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 key; it stays on this laptop."""
    return ec.generate_private_key(ec.SECP256R1())


def certificate_request(key: ec.EllipticCurvePrivateKey, serial: str) -> str:
    """A PEM CSR naming ``serial`` as CN and as the one `urn:device:serial:` URI."""
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serial)]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"urn:device:serial:{serial}")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode("ascii")


@dataclass(frozen=True)
class Gatehouse:
    """Gatehouse's public origin and how to reach it over verified TLS."""

    origin: str
    ca_file: str | None = None
    timeout_s: float = 30.0

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.origin).netloc

    def context(self, *, client: tuple[str, str] | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if client is not None:
            context.load_cert_chain(certfile=client[0], keyfile=client[1])
        return context

    def call(self, method: str, path: str, body: object | None = None, *, bearer: str | None = None,
             client: tuple[str, str] | None = None) -> tuple[int, dict[str, object]]:
        """The status and JSON body of one API call; HTTP errors are answers, not exceptions.

        Raises:
            EnrollError: when Gatehouse cannot be reached or answers something that is not JSON.
        """
        url = urllib.parse.urljoin(self.origin + "/", path.lstrip("/"))
        headers = {"Accept": "application/json, application/problem+json", "User-Agent": "gatehouse-enroll/1"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        context = self.context(client=client) if url.startswith("https:") else None
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=context) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            hint = " or pass --ca-file with your company's CA certificate" if isinstance(reason, ssl.SSLCertVerificationError) else ""
            raise EnrollError(f"gatehouse unreachable at `{url}`: {reason}; check the address and your network{hint}") from None
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise EnrollError(f"`{url}` answered {status} with something that is not JSON; is `{self.origin}` a Gatehouse?")
        return status, answer


def gatehouse_origin(raw: str, ca_file: str | None) -> Gatehouse:
    """The Gatehouse at ``raw`` (``https://host[:port]``; plain http only on this machine).

    Raises:
        EnrollError: for anything else.
    """
    parts = urllib.parse.urlsplit(raw.strip())
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme not in ("https", "http") or not parts.hostname or (parts.scheme == "http" and not loopback):
        raise EnrollError(f"`{raw}` is not a Gatehouse address; write it as https://gatehouse.example.com")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise EnrollError(f"`{raw}` has a path; give only the origin, e.g. {parts.scheme}://{parts.netloc}")
    return Gatehouse(f"{parts.scheme}://{parts.netloc}", ca_file)


def problem_text(answer: Mapping[str, object]) -> str:
    """`code`: detail of a problem+json answer, or whatever part of it there is."""
    code = answer.get("code") or answer.get("reason") or answer.get("title") or "no code"
    detail = answer.get("detail")
    return f"`{code}`: {detail}" if detail else f"`{code}`"


# --- sign-in -------------------------------------------------------------------------------------


def sign_in(gatehouse: Gatehouse, host: Host) -> str:
    """An enrollment token, after the user confirms the one-time code in a signed-in browser.

    Raises:
        EnrollError: when the code expires or Gatehouse refuses the session.
    """
    status, session = gatehouse.call("POST", f"{API}/enroll/sessions", {})
    if status == 404:
        raise EnrollError(f"enrollment is not enabled on `{gatehouse.origin}` ({problem_text(session)}); ask your Gatehouse administrator")
    if status != 201:
        raise EnrollError(f"not signed in: Gatehouse refused to start a sign-in ({status} {problem_text(session)}); try again in a minute")
    uri, code = str(session.get("verification_uri", "")), str(session.get("user_code", ""))
    host.say(f"Sign in to confirm this laptop: open {uri}\nand check that it shows the code {code}.")
    try:
        host.open_browser(uri)
    except Exception:  # noqa: BLE001 - no browser is fine: the URL is printed
        pass
    interval = _seconds(session.get("interval"), 2)
    deadline = host.pace.monotonic() + _seconds(session.get("expires_in"), 600)
    path = f"{API}/enroll/sessions/{urllib.parse.quote(str(session.get('session', '')), safe='')}/token"
    while True:
        host.pace.sleep(interval)
        status, answer = gatehouse.call("POST", path, {})
        if status == 200 and isinstance(answer.get("enrollment_token"), str):
            host.say(f"Signed in as {answer.get('user', 'unknown user')}.")
            return str(answer["enrollment_token"])
        if status == 410 or (status == 428 and host.pace.monotonic() >= deadline):
            raise EnrollError(f"not signed in: the code {code} expired before it was confirmed; run gatehouse-enroll {gatehouse.origin} again and confirm within {int(_seconds(session.get('expires_in'), 600) // 60)} minutes")
        if status != 428:
            raise EnrollError(f"not signed in: Gatehouse answered {status} {problem_text(answer)} while waiting for the code {code}; run gatehouse-enroll {gatehouse.origin} again")


def _seconds(raw: object, default: float) -> float:
    return float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) and 0 < raw <= 3600 else default


# --- enrollment ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    """A certificate Gatehouse issued for this laptop."""

    chain_pem: str
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    not_after: datetime

    @property
    def fingerprint(self) -> str:
        return self.leaf.fingerprint(hashes.SHA256()).hex()

    @property
    def sha1(self) -> str:
        return self.leaf.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - the keychain and Windows name certificates by SHA-1

    @property
    def issuer_cn(self) -> str:
        names = self.leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else ""


def parse_issued(chain_pem: str, key: ec.EllipticCurvePrivateKey) -> Issued:
    """The issued chain, checked to hold this laptop's key.

    Raises:
        EnrollError: when it is not a PEM chain or names another key.
    """
    try:
        chain = tuple(x509.load_pem_x509_certificates(chain_pem.encode()))
    except ValueError as exc:
        raise EnrollError(f"gatehouse sent a certificate that cannot be read ({exc}); enroll again, and tell your administrator if it repeats") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    mine = key.public_key().public_bytes(serialization.Encoding.DER, public)
    if chain[0].public_key().public_bytes(serialization.Encoding.DER, public) != mine:
        raise EnrollError("gatehouse sent a certificate for another key; enroll again, and tell your administrator")
    return Issued(chain_pem, chain[0], chain, chain[0].not_valid_after_utc)


def nonce_path(host: Host) -> PurePath:
    """Where the proof nonce goes: under the user's home, where the health agent can hash it."""
    if host.platform == "windows":
        return PureWindowsPath(str(host.home)) / ".gatehouse" / "enroll-nonce"
    return host.state_dir / "enroll-nonce"


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` exactly to ``path``, readable by this user only (0600, in a 0700 directory)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)


def enroll(gatehouse: Gatehouse, host: Host, *, token: str, serial: str, csr: str) -> str:
    """The issued certificate chain (PEM) after the proof or an approver's confirmation.

    Raises:
        EnrollError: when not signed in, the proof fails, an approver refuses, or time runs out.
    """
    path = nonce_path(host)
    body = {"serial": serial, "platform": host.platform, "hostname": host.hostname, "csr": csr, "nonce_path": str(path)}
    status, answer = gatehouse.call("POST", f"{API}/enrollments", body, bearer=token)
    if status == 401:
        raise EnrollError(f"not signed in: Gatehouse did not accept the sign-in ({problem_text(answer)}); run gatehouse-enroll {gatehouse.origin} again")
    if status != 201:
        raise EnrollError(f"enrollment refused: Gatehouse answered {status} {problem_text(answer)}")
    nonce = answer.get("nonce")
    if not isinstance(nonce, str) or not re.fullmatch(r"[A-Za-z0-9_-]{43}", nonce):
        raise EnrollError("gatehouse sent no usable proof nonce; enroll again, and tell your administrator if it repeats")
    local = Path(str(path))
    write_private(local, nonce.encode("ascii"))
    enrollment = str(answer.get("id", ""))
    try:
        return _await_certificate(gatehouse, host, token=token, enrollment=enrollment, first=answer)
    finally:
        local.unlink(missing_ok=True)


def _await_certificate(gatehouse: Gatehouse, host: Host, *, token: str, enrollment: str, first: Mapping[str, object]) -> str:
    poll = str(first.get("poll") or f"{API}/enrollments/{enrollment}")
    if not poll.startswith("/.gatehouse/"):
        raise EnrollError(f"gatehouse sent a poll address `{poll[:80]}` outside /.gatehouse/; tell your administrator")
    interval = _seconds(first.get("interval"), 2)
    deadline = host.pace.monotonic() + _seconds(first.get("expires_in"), 900)
    told: str | None = None
    answer: Mapping[str, object] = first
    while True:
        status = str(answer.get("status", ""))
        if status != told and status == "pending-proof":
            host.say(f"Enrollment {enrollment}: Gatehouse is asking this laptop's health agent to prove it runs here (a file hash of the nonce).")
        elif status != told and status == "pending-approval":
            host.say(
                f"Enrollment {enrollment} waits for an approver: a Gatehouse administrator must confirm it at"
                f" {gatehouse.origin}/.gatehouse/admin/enrollments (this laptop's agent cannot prove it, or the serial has another owner)."
                " Tell them the id; this program keeps waiting."
            )
        told = status
        if status == "issued" and isinstance(answer.get("certificate"), str):
            return str(answer["certificate"])
        if status == "refused":
            raise EnrollError(f"proof failed: Gatehouse refused enrollment {enrollment} ({problem_text(answer)}); if this is your laptop, ask your administrator to approve it")
        if status == "expired" or host.pace.monotonic() >= deadline:
            raise EnrollError(f"enrollment {enrollment} expired before it was proven or approved; make sure the health agent runs, then run gatehouse-enroll {gatehouse.origin} again")
        if status not in ("pending-proof", "pending-approval"):
            raise EnrollError(f"gatehouse answered enrollment {enrollment} with an unknown status `{status[:40]}`")
        host.pace.sleep(interval)
        code, answer = gatehouse.call("GET", poll, bearer=token)
        if code == 401:
            raise EnrollError(f"not signed in: the enrollment token expired while waiting ({problem_text(answer)}); run gatehouse-enroll {gatehouse.origin} again")
        if code != 200:
            raise EnrollError(f"gatehouse answered {code} {problem_text(answer)} about enrollment {enrollment}")


# --- the key store -------------------------------------------------------------------------------


def pkcs12_bundle(key: ec.EllipticCurvePrivateKey, issued: Issued, password: bytes, name: str) -> bytes:
    """A PKCS#12 of key, certificate and CA, in the legacy (3DES, SHA-1 MAC) encryption every store imports.

    macOS ``security import`` and Windows before 10 1709 reject the AES/PBES2 bundles OpenSSL 3 makes by default.
    """
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(50000)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())  # noqa: S303 - what the importers accept
        .build(password)
    )
    return pkcs12.serialize_key_and_certificates(name.encode(), key, issued.leaf, list(issued.chain[1:]), encryption)


def nickname(issued: Issued) -> str:
    """The store's name for this laptop's certificate (NSS names every certificate of one subject alike)."""
    return f"Gatehouse device {issued.leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value}"


@contextmanager
def temporary_private_file(directory: Path, data: bytes, suffix: str) -> Iterator[Path]:
    """A 0600 file that exists only inside the ``with`` block."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=directory, suffix=suffix)
    path = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(data)
        yield path
    finally:
        path.unlink(missing_ok=True)


def login_keychain(host: Host) -> str:
    return str(host.home / "Library" / "Keychains" / "login.keychain-db")


def nss_db(home: Path) -> Path:
    return home / ".pki" / "nssdb"


def firefox_profiles(home: Path) -> tuple[Path, ...]:
    """Firefox profile directories that hold an NSS database (cert9.db)."""
    roots = (home / ".mozilla" / "firefox", home / "snap" / "firefox" / "common" / ".mozilla" / "firefox")
    return tuple(sorted(p.parent for root in roots if root.is_dir() for p in root.glob("*/cert9.db")))


def install(host: Host, key: ec.EllipticCurvePrivateKey, issued: Issued, gatehouse: Gatehouse) -> str:
    """Put key and certificate where the user's browsers find them; the name of the store used.

    Raises:
        EnrollError: when the store refuses the import.
    """
    password = secrets.token_urlsafe(24)
    bundle = pkcs12_bundle(key, issued, password.encode(), nickname(issued))
    with temporary_private_file(host.state_dir, bundle, ".p12") as p12:
        if host.platform == "darwin":
            return _install_keychain(host, p12, password, issued, gatehouse)
        if host.platform == "windows":
            return _install_windows(host, p12, password)
        return _install_linux(host, p12, password, key, issued)


def _install_keychain(host: Host, p12: Path, password: str, issued: Issued, gatehouse: Gatehouse) -> str:
    keychain = login_keychain(host)
    # -x: the private key cannot be exported again; -T: the system curl (renewal) may sign with it without a prompt.
    imported = host.run(["security", "import", str(p12), "-k", keychain, "-f", "pkcs12", "-P", password, "-x", "-T", "/usr/bin/curl"])
    if imported.returncode != 0:
        raise EnrollError(f"the login keychain refused the certificate ({_said(imported)}); unlock it (`security unlock-keychain`) and enroll again")
    preferred = host.run(["security", "set-identity-preference", "-Z", issued.sha1, "-s", f"https://{gatehouse.host}/", keychain])
    if preferred.returncode != 0:
        host.say(f"Warning: could not set the identity preference for https://{gatehouse.host}/ ({_said(preferred)}); Safari will ask which certificate to use.")
    return f"login keychain ({keychain})"


POWERSHELL_IMPORT = (
    "$ErrorActionPreference = 'Stop'; "
    "$password = ConvertTo-SecureString -String $env:GATEHOUSE_PFX_PASSWORD -AsPlainText -Force; "
    "Import-PfxCertificate -FilePath $env:GATEHOUSE_PFX -CertStoreLocation Cert:\\CurrentUser\\My -Password $password | Out-Null"
)


def _install_windows(host: Host, p12: Path, password: str) -> str:
    # Without -Exportable: the private key cannot be exported from the store again.
    done = host.run(["powershell.exe", "-NoProfile", "-NonInteractive", "-Command", POWERSHELL_IMPORT],
                    env={"GATEHOUSE_PFX": str(p12), "GATEHOUSE_PFX_PASSWORD": password})
    if done.returncode != 0:
        raise EnrollError(f"the Windows certificate store refused the certificate ({_said(done)}); enroll again from a normal (non-elevated) PowerShell")
    return "Windows certificate store (Cert:\\CurrentUser\\My)"


def _install_linux(host: Host, p12: Path, password: str, key: ec.EllipticCurvePrivateKey, issued: Issued) -> str:
    database = nss_db(host.home)
    if not (database / "cert9.db").exists():
        database.mkdir(mode=0o700, parents=True, exist_ok=True)
        created = host.run(["certutil", "-N", "-d", f"sql:{database}", "--empty-password"])
        if created.returncode == 127:
            return _install_file(host, key, issued, reason="certutil and pk12util (Debian/Ubuntu: libnss3-tools, Fedora: nss-tools) are not installed")
        if created.returncode != 0:
            raise EnrollError(f"could not create the NSS database {database} ({_said(created)}); remove it if it is damaged and enroll again")
    with temporary_private_file(host.state_dir, password.encode(), ".pw") as secret:
        for target in (database, *firefox_profiles(host.home)):
            _forget_nss_identity(host, target, nickname(issued))
            done = host.run(["pk12util", "-i", str(p12), "-d", f"sql:{target}", "-w", str(secret)])
            if done.returncode == 127:
                return _install_file(host, key, issued, reason="pk12util (Debian/Ubuntu: libnss3-tools, Fedora: nss-tools) is not installed")
            if done.returncode != 0:
                raise EnrollError(f"the NSS database {target} refused the certificate ({_said(done)}); close the browsers using it and enroll again")
    return f"NSS database sql:{database}"


def _forget_nss_identity(host: Host, database: Path, name: str) -> None:
    """Delete earlier certificates and keys of this laptop from an NSS database, so browsers see only the new one."""
    listing = host.run(["certutil", "-L", "-d", f"sql:{database}"])
    earlier = sum(1 for line in listing.stdout.splitlines() if line.startswith(name + " ") or line == name)
    for _ in range(earlier):
        host.run(["certutil", "-F", "-d", f"sql:{database}", "-n", name])


def _install_file(host: Host, key: ec.EllipticCurvePrivateKey, issued: Issued, *, reason: str) -> str:
    host.say(f"No key store to use: {reason}. Keeping the key in a file only you can read.")
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_private(host.state_dir / "device-key.pem", key_pem)
    write_private(host.state_dir / "device-cert.pem", issued.chain_pem.encode())
    return f"files {host.state_dir / 'device-cert.pem'} and {host.state_dir / 'device-key.pem'} (mode 0600)"


def remove_old(host: Host, old: Mapping[str, str]) -> None:
    """Remove a replaced certificate and its key from the store; a failure is only a warning."""
    if old.get("store_kind") == "darwin":
        done = host.run(["security", "delete-identity", "-Z", old["sha1"], login_keychain(host)])
    elif old.get("store_kind") == "windows":
        done = host.run(["powershell.exe", "-NoProfile", "-NonInteractive", "-Command",
                         "Remove-Item -LiteralPath ('Cert:\\CurrentUser\\My\\' + $env:GATEHOUSE_THUMBPRINT) -DeleteKey"],
                        env={"GATEHOUSE_THUMBPRINT": old["sha1"]})
    else:  # NSS: install() already replaced it; files: overwritten
        return
    if done.returncode != 0:
        host.say(f"Warning: the replaced certificate {old.get('nickname', '')} is still in the store ({_said(done)}); it expires on its own.")


# --- browser settings ----------------------------------------------------------------------------


def browser_settings(host: Host, gatehouse: Gatehouse, issued: Issued) -> str:
    """What makes each browser present the certificate to Gatehouse without asking every time."""
    rule = json.dumps({"pattern": f"https://{gatehouse.host}", "filter": {"ISSUER": {"CN": issued.issuer_cn}}})
    lines = [f"Browsers: the certificate is selected for https://{gatehouse.host} when these settings are in place."]
    if host.platform == "darwin":
        lines += [
            f"- Safari: done (identity preference for https://{gatehouse.host}/ in the login keychain).",
            "- Chrome/Edge: managed policy AutoSelectCertificateForUrls (a configuration profile); without it,",
            "  pick the certificate once and allow keychain access with 'Always Allow'. Policy value:",
            f"  {rule}",
            "- Firefox: Settings > Privacy & Security > Certificates > 'Select one automatically'",
            "  (security.default_personal_cert = Select Automatically); Firefox reads the keychain (security.osclientcerts.autoload).",
        ]
    elif host.platform == "windows":
        lines += [
            "- Edge and Chrome (as administrator, once):",
            f"  reg add HKLM\\SOFTWARE\\Policies\\Microsoft\\Edge\\AutoSelectCertificateForUrls /v 1 /t REG_SZ /d {_cmd_quote(rule)} /f",
            f"  reg add HKLM\\SOFTWARE\\Policies\\Google\\Chrome\\AutoSelectCertificateForUrls /v 1 /t REG_SZ /d {_cmd_quote(rule)} /f",
            "- Firefox: Settings > Privacy & Security > Certificates > 'Select one automatically'",
            "  (security.default_personal_cert = Select Automatically); Firefox reads the Windows store (security.osclientcerts.autoload).",
        ]
    else:
        policy = json.dumps({"AutoSelectCertificateForUrls": [rule]}, indent=2)
        lines += [
            "- Chromium/Chrome/Edge read sql:~/.pki/nssdb. To select without a prompt, an administrator writes this policy to",
            "  /etc/chromium/policies/managed/gatehouse.json (Chrome: /etc/opt/chrome/policies/managed/, Edge: /etc/opt/edge/policies/managed/):",
            *("  " + line for line in policy.splitlines()),
            "- Firefox: imported into each profile found under ~/.mozilla/firefox; set Settings > Privacy & Security >",
            "  Certificates > 'Select one automatically' (security.default_personal_cert = Select Automatically).",
        ]
    return "\n".join(lines)


def _cmd_quote(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"'


# --- renewal -------------------------------------------------------------------------------------


def renew_command(host: Host, gatehouse: Gatehouse) -> list[str]:
    argv = [host.python, host.script, "--renew", gatehouse.origin]
    return [*argv, "--ca-file", gatehouse.ca_file] if gatehouse.ca_file else argv


def systemd_units(host: Host, gatehouse: Gatehouse) -> dict[str, str]:
    """The systemd user service and timer that run the renewal daily."""
    command = " ".join(shlex.quote(part) for part in renew_command(host, gatehouse))
    service = (
        "[Unit]\n"
        "Description=Renew this laptop's Gatehouse device certificate when under 10 days remain\n"
        "After=network-online.target\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"ExecStart={command}\n"
    )
    timer = (
        "[Unit]\n"
        "Description=Daily check of this laptop's Gatehouse device certificate\n\n"
        "[Timer]\n"
        "OnCalendar=daily\n"
        "RandomizedDelaySec=1h\n"
        "Persistent=true\n\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return {f"{RENEWAL_NAME}.service": service, f"{RENEWAL_NAME}.timer": timer}


def launchd_plist(host: Host, gatehouse: Gatehouse) -> bytes:
    """The launchd agent that runs the renewal daily at 10:00 and at login."""
    return plistlib.dumps({
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": renew_command(host, gatehouse),
        "StartCalendarInterval": {"Hour": 10, "Minute": 0},
        "RunAtLoad": True,
        "StandardOutPath": str(host.state_dir / "renew.log"),
        "StandardErrorPath": str(host.state_dir / "renew.log"),
    })


def schtasks_create(host: Host, gatehouse: Gatehouse) -> list[str]:
    """The Task Scheduler command that runs the renewal daily at 10:00 as this user."""
    action = subprocess.list2cmdline(renew_command(host, gatehouse))
    return ["schtasks", "/Create", "/F", "/TN", WINDOWS_TASK, "/SC", "DAILY", "/ST", "10:00", "/TR", action]


def install_renewal(host: Host, gatehouse: Gatehouse) -> str:
    """Install the daily renewal job; what was installed (a failure to start it is a warning with the fix)."""
    if host.platform == "darwin":
        plist = host.home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
        plist.parent.mkdir(parents=True, exist_ok=True)
        plist.write_bytes(launchd_plist(host, gatehouse))
        host.run(["launchctl", "bootout", f"gui/{host.uid}/{LAUNCHD_LABEL}"])
        steps = [["launchctl", "bootstrap", f"gui/{host.uid}", str(plist)]]
        where = f"launchd agent {plist}"
    elif host.platform == "windows":
        steps = [schtasks_create(host, gatehouse)]
        where = f"Task Scheduler task '{WINDOWS_TASK}'"
    else:
        units = host.home / ".config" / "systemd" / "user"
        units.mkdir(parents=True, exist_ok=True)
        for name, text in systemd_units(host, gatehouse).items():
            (units / name).write_text(text)
        steps = [["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", "--now", f"{RENEWAL_NAME}.timer"]]
        where = f"systemd user timer {units / (RENEWAL_NAME + '.timer')}"
    for argv in steps:
        done = host.run(argv)
        if done.returncode != 0:
            fix = " ".join(shlex.quote(a) for a in argv)
            host.say(f"Warning: renewal is written ({where}) but not started ({_said(done)}); run `{fix}` yourself.")
            return where
    return where


# --- state and the two commands ------------------------------------------------------------------


def state_file(host: Host) -> Path:
    return host.state_dir / "enrollment.json"


def save_state(host: Host, gatehouse: Gatehouse, issued: Issued, store_kind: str) -> None:
    state = {
        "gatehouse": gatehouse.origin,
        "ca_file": gatehouse.ca_file,
        "serial": str(issued.leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value),
        "fingerprint": issued.fingerprint,
        "sha1": issued.sha1,
        "nickname": nickname(issued),
        "not_after": issued.not_after.isoformat(),
        "store_kind": store_kind,
    }
    write_private(state_file(host), json.dumps(state, indent=2).encode())


def store_kind(host: Host, store: str) -> str:
    if store.startswith("files "):
        return "file"
    return {"darwin": "darwin", "windows": "windows"}.get(host.platform, "nss")


def enroll_laptop(gatehouse: Gatehouse, host: Host, *, token: str | None, renewal: bool = True) -> Issued:
    """The whole first enrollment: serial, key, sign-in, proof, install, browser settings, renewal.

    Raises:
        EnrollError: with the step that failed and what to do.
    """
    serial = read_serial(host)
    host.say(f"This laptop's hardware serial is {serial}.")
    key = new_key()
    csr = certificate_request(key, serial)
    bearer = token if token else sign_in(gatehouse, host)
    issued = parse_issued(enroll(gatehouse, host, token=bearer, serial=serial, csr=csr), key)
    store = install(host, key, issued, gatehouse)
    save_state(host, gatehouse, issued, store_kind(host, store))
    host.say(f"Certificate for {serial} installed in the {store}; valid until {issued.not_after:%Y-%m-%d %H:%M} UTC.")
    host.say(browser_settings(host, gatehouse, issued))
    if renewal:
        host.say(f"Renewal: {install_renewal(host, gatehouse)} checks daily and renews when under 10 days remain.")
    return issued


def load_state(host: Host) -> dict[str, str]:
    path = state_file(host)
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise EnrollError(f"this laptop is not enrolled yet ({path} is missing); run gatehouse-enroll URL first") from None
    except ValueError:
        raise EnrollError(f"{path} is damaged; run gatehouse-enroll URL again to enroll afresh") from None
    if not isinstance(state, dict) or not all(isinstance(state.get(k), str) for k in ("serial", "not_after", "sha1", "nickname", "store_kind")):
        raise EnrollError(f"{path} is damaged; run gatehouse-enroll URL again to enroll afresh")
    return state


def renew(gatehouse: Gatehouse, host: Host, *, force: bool = False) -> Issued | None:
    """Renew the current certificate when under 10 days remain (or ``force``); None when not yet due.

    Raises:
        EnrollError: when the current certificate is gone, expired, revoked or refused.
    """
    state = load_state(host)
    not_after = datetime.fromisoformat(state["not_after"])
    now = host.now()
    if not_after <= now:
        raise EnrollError(f"the device certificate expired on {not_after:%Y-%m-%d}; enroll again with gatehouse-enroll {gatehouse.origin}")
    if not force and not_after - now > RENEW_WITHIN:
        host.say(f"The device certificate is valid until {not_after:%Y-%m-%d}; renewal is due from {not_after - RENEW_WITHIN:%Y-%m-%d}.")
        return None
    key = new_key()
    status, answer = present_current(host, gatehouse, state, {"csr": certificate_request(key, state["serial"])})
    if status in (401, 403):
        raise EnrollError(f"gatehouse refused the renewal ({problem_text(answer)}); the certificate may be revoked: enroll again with gatehouse-enroll {gatehouse.origin}")
    if status != 200 or not isinstance(answer.get("certificate"), str):
        raise EnrollError(f"renewal failed: Gatehouse answered {status} {problem_text(answer)}; the next daily run tries again")
    issued = parse_issued(str(answer["certificate"]), key)
    store = install(host, key, issued, gatehouse)
    remove_old(host, state)
    save_state(host, gatehouse, issued, store_kind(host, store))
    host.say(f"Renewed: the device certificate is valid until {issued.not_after:%Y-%m-%d %H:%M} UTC.")
    return issued


RENEW_PATH = f"{API}/enrollments/renew"
POWERSHELL_RENEW = (
    "$ErrorActionPreference = 'Stop'; "
    "$certificate = Get-Item -LiteralPath ('Cert:\\CurrentUser\\My\\' + $env:GATEHOUSE_THUMBPRINT); "
    "try { $r = Invoke-WebRequest -UseBasicParsing -Method Post -Uri $env:GATEHOUSE_RENEW_URL -Certificate $certificate "
    "-ContentType 'application/json' -Body $env:GATEHOUSE_RENEW_BODY; Write-Output $r.StatusCode; Write-Output $r.Content } "
    "catch [System.Net.WebException] { $e = $_.Exception.Response; if ($e -eq $null) { throw }; "
    "Write-Output ([int]$e.StatusCode); Write-Output (New-Object System.IO.StreamReader($e.GetResponseStream())).ReadToEnd() }"
)


def present_current(host: Host, gatehouse: Gatehouse, state: Mapping[str, str], body: Mapping[str, str]) -> tuple[int, dict[str, object]]:
    """POST ``body`` to the renew endpoint over mTLS with the current certificate, from wherever its key lives.

    Raises:
        EnrollError: when the key cannot be used or Gatehouse cannot be reached.
    """
    url = gatehouse.origin + RENEW_PATH
    if state["store_kind"] == "file":
        pair = (str(host.state_dir / "device-cert.pem"), str(host.state_dir / "device-key.pem"))
        return gatehouse.call("POST", RENEW_PATH, body, client=pair)
    if state["store_kind"] == "nss":
        return _present_from_nss(host, gatehouse, state, body)
    if state["store_kind"] == "windows":
        done = host.run(["powershell.exe", "-NoProfile", "-NonInteractive", "-Command", POWERSHELL_RENEW],
                        env={"GATEHOUSE_THUMBPRINT": state["sha1"], "GATEHOUSE_RENEW_URL": url, "GATEHOUSE_RENEW_BODY": json.dumps(body)})
        status_line, _, content = done.stdout.strip().partition("\n")
    else:
        # The key is non-extractable in the keychain: the system curl (Secure Transport) signs with it by identity name.
        argv = ["curl", "--silent", "--show-error", "--write-out", "\n%{http_code}", "--cert", state["nickname"],
                "--header", "Content-Type: application/json", "--data-binary", "@-", url]
        if gatehouse.ca_file:
            argv[1:1] = ["--cacert", gatehouse.ca_file]
        done = host.run(argv, stdin=json.dumps(body).encode())
        content, _, status_line = done.stdout.strip().rpartition("\n")
    if done.returncode != 0 or not status_line.strip().isdigit():
        raise EnrollError(f"gatehouse unreachable at `{url}` with the device certificate ({_said(done)}); the next daily run tries again")
    try:
        answer = json.loads(content) if content.strip() else {}
    except ValueError:
        answer = {}
    return int(status_line.strip()), answer if isinstance(answer, dict) else {}


def _present_from_nss(host: Host, gatehouse: Gatehouse, state: Mapping[str, str], body: Mapping[str, str]) -> tuple[int, dict[str, object]]:
    password = secrets.token_urlsafe(24)
    with temporary_private_file(host.state_dir, password.encode(), ".pw") as secret, \
            temporary_private_file(host.state_dir, b"", ".p12") as p12:
        done = host.run(["pk12util", "-o", str(p12), "-n", state["nickname"], "-d", f"sql:{nss_db(host.home)}", "-w", str(secret)])
        if done.returncode != 0:
            raise EnrollError(f"the current certificate `{state['nickname']}` is not in sql:{nss_db(host.home)} ({_said(done)}); enroll again with gatehouse-enroll {gatehouse.origin}")
        with warnings.catch_warnings():
            # pk12util writes indefinite-length BER, which cryptography reads with a warning.
            warnings.simplefilter("ignore", UserWarning)
            key, cert, extra = pkcs12.load_key_and_certificates(p12.read_bytes(), password.encode())
    if key is None or cert is None:
        raise EnrollError(f"the NSS database holds `{state['nickname']}` without its key; enroll again with gatehouse-enroll {gatehouse.origin}")
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, *extra))
    # ssl loads client keys from files only: both exist for the one request, mode 0600.
    with temporary_private_file(host.state_dir, key_pem, ".key") as key_file, \
            temporary_private_file(host.state_dir, chain_pem, ".crt") as cert_file:
        return gatehouse.call("POST", RENEW_PATH, body, client=(str(cert_file), str(key_file)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatehouse-enroll",
        description="Enroll this laptop with Gatehouse once: its browsers then prove the device and its owner.",
    )
    parser.add_argument("url", help="your Gatehouse, e.g. https://gatehouse.corp.example")
    parser.add_argument("--ca-file", help="PEM file of the CA that signed Gatehouse's TLS certificate, when it is private")
    parser.add_argument("--token", help="a user token from your identity provider's device sign-in instead of the code (also GATEHOUSE_ENROLL_TOKEN)")
    parser.add_argument("--renew", action="store_true", help="renew the installed certificate when under 10 days remain (what the daily job runs)")
    parser.add_argument("--force", action="store_true", help="with --renew: renew now whatever time remains")
    parser.add_argument("--no-renewal-job", action="store_true", help="do not install the daily renewal job")
    return parser


def main(argv: Sequence[str] | None = None, host: Host | None = None) -> int:
    """The command line: 0 done, 1 refused or failed (with the reason on stderr), 2 bad usage."""
    args = build_parser().parse_args(argv)
    try:
        if host is None:
            host = Host(platform=platform_name(sys.platform), home=Path.home(), run=run_command)
        gatehouse = gatehouse_origin(args.url, args.ca_file)
        if args.renew:
            renew(gatehouse, host, force=args.force)
        else:
            enroll_laptop(gatehouse, host, token=args.token or os.environ.get("GATEHOUSE_ENROLL_TOKEN"), renewal=not args.no_renewal_job)
    except EnrollError as exc:
        print(f"gatehouse-enroll: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gatehouse-enroll: interrupted; nothing was installed unless it said so", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
