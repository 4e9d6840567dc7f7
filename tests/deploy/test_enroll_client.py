"""The laptop enrollment client (deploy/enroll): serials, key stores, renewal jobs, messages, and a real run on Linux."""

from __future__ import annotations

import ast
import importlib.util
import json
import plistlib
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from gateway.ingest.snapshot_parse import PLACEHOLDER_SERIALS
from gateway.web.views.enroll import PLATFORMS, enroll_commands
from tests.conftest import missing_service
from tests.deploy.enroll_contract import DeviceCA, Script, serve

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "deploy" / "enroll" / "gatehouse_enroll.py"
RECORDED = ROOT / "tests" / "fixtures" / "enroll"
NOW = datetime(2026, 11, 22, 15, 0, 0, tzinfo=UTC)


def load_client() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gatehouse_enroll", CLIENT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gatehouse_enroll"] = module
    spec.loader.exec_module(module)
    return module


ge = load_client()


@dataclass(frozen=True)
class Recording:
    argv: tuple[str, ...]
    done: Any


def recorded(name: str) -> Recording:
    """One recorded command from tests/fixtures/enroll/<platform>/<name>.json."""
    data = json.loads((RECORDED / f"{name}.json").read_text())
    return Recording(tuple(data["argv"]), ge.Completed(data["returncode"], data["stdout"], data["stderr"]))


@dataclass
class Replay:
    """A runner that answers from recordings (first whose argv starts the call) and runs the rest for real, if allowed."""

    recordings: Sequence[Recording]
    real: bool = False
    calls: list[tuple[str, ...]] = field(default_factory=list)
    envs: list[Mapping[str, str] | None] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], *, stdin: bytes | None = None, env: Mapping[str, str] | None = None) -> Any:
        self.calls.append(tuple(argv))
        self.envs.append(env)
        for recording in self.recordings:
            if tuple(argv[: len(recording.argv)]) == recording.argv:
                return recording.done
        if self.real:
            return ge.run_command(argv, stdin=stdin, env=env)
        raise AssertionError(f"no recording for {list(argv)}")


@dataclass
class FakePace:
    """Polling time that passes only when the client sleeps."""

    at: float = 0.0
    slept: list[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.at += seconds

    def monotonic(self) -> float:
        return self.at


def make_host(tmp_path: Path, platform: str, *recordings: str, real: bool = False, sudo: Sequence[str] = (),
              now: datetime = NOW) -> tuple[Any, Replay, list[str]]:
    said: list[str] = []
    runner = Replay([recorded(name) for name in recordings], real=real)
    host = ge.Host(platform=platform, home=tmp_path / "home", run=runner, sudo=Replay([recorded(n) for n in sudo]),
                   pace=FakePace(), now=lambda: now, say=said.append, open_browser=lambda url: None,
                   hostname="alice-laptop", python="/usr/bin/python3", script="/opt/gatehouse-enroll/gatehouse_enroll.py", uid=501)
    return host, runner, said


@pytest.fixture
def contract(tmp_path: Path) -> Iterator[tuple[Any, Path, Script]]:
    script = Script()
    for server, ca_file in serve(script, tmp_path):
        yield server, ca_file, script


def nss_tools() -> None:
    if shutil.which("certutil") is None or shutil.which("pk12util") is None:
        missing_service("certutil and pk12util", "install them with `apt-get install libnss3-tools` (scripts/system-deps.sh)")


def nss_listing(database: Path) -> str:
    return subprocess.run(["certutil", "-L", "-d", f"sql:{database}"], capture_output=True, text=True, check=True).stdout


def issued_for(serial: str, *, days: int = 30) -> tuple[Any, Any]:
    """A key and the chain a device CA issued for it, as the client parses it."""
    key = ge.new_key()
    ca = DeviceCA()
    chain = ca.chain(ca.issue(ge.certificate_request(key, serial), serial, days=days))
    return key, ge.parse_issued(chain, key)


class TestModule:
    def test_imports_only_the_standard_library_and_cryptography(self) -> None:
        """The one-file client needs nothing but the standard library and cryptography."""
        tree = ast.parse(CLIENT.read_text())
        roots = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        roots |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}

        assert set() == roots - set(sys.stdlib_module_names) - {"cryptography", "__future__"}

    def test_runs_as_one_file(self) -> None:
        """`python3 gatehouse_enroll.py --help` works from the file alone."""
        done = subprocess.run([sys.executable, str(CLIENT), "--help"], capture_output=True, text=True, check=False, cwd="/")

        assert 0 == done.returncode
        assert "gatehouse-enroll" in done.stdout

    def test_declares_its_dependency_inline_for_pipx_run(self) -> None:
        """The file carries PEP 723 script metadata naming the package's own dependency, so `pipx run <url>` installs it."""
        block = re.search(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$", CLIENT.read_text())
        assert block is not None and "script" == block.group("type")
        metadata = tomllib.loads("".join(line[2:] for line in block.group("content").splitlines(keepends=True)))
        package = tomllib.loads((CLIENT.parent / "pyproject.toml").read_text())["project"]

        assert (package["dependencies"], package["requires-python"]) == (metadata["dependencies"], metadata["requires-python"])

    def test_without_cryptography_says_how_to_get_it(self) -> None:
        """Run as a plain file where `cryptography` is missing, it exits 1 naming how to install it and the pages' pipx command."""
        hide = ("import runpy, sys; sys.modules['cryptography'] = None; "
                f"sys.argv = ['gatehouse_enroll.py', 'https://gatehouse.corp.example']; runpy.run_path({str(CLIENT)!r}, run_name='__main__')")

        done = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True, check=False, cwd="/")

        assert (1, "") == (done.returncode, done.stdout)
        assert "`pip install --user 'cryptography>=42.0'`" in done.stderr
        assert f"`{enroll_commands('https://gatehouse.corp.example', PLATFORMS[0]).pipx}`" in done.stderr  # what the pages print

    def test_too_old_cryptography_says_so(self) -> None:
        """Debian 12's system `cryptography` 38 lacks what the client calls: it exits 1 naming the version found and the minimum."""
        old = ("import runpy, sys, cryptography; cryptography.__version__ = '38.0.4'; "
               f"sys.argv = ['gatehouse_enroll.py', 'https://gatehouse.corp.example']; runpy.run_path({str(CLIENT)!r}, run_name='__main__')")

        done = subprocess.run([sys.executable, "-c", old], capture_output=True, text=True, check=False, cwd="/")

        assert 1 == done.returncode
        assert "`cryptography` is version 38.0.4, older than 42.0" in done.stderr

    def test_refuses_every_placeholder_gatehouse_refuses(self) -> None:
        """Every serial the ingest rule calls a placeholder is refused by the client before anything is sent."""
        accepted = [s for s in PLACEHOLDER_SERIALS if not ge.is_placeholder_serial(s)]

        assert [] == accepted
        assert ge.is_placeholder_serial("AAAAAAAA")
        assert not ge.is_placeholder_serial("C02XK0AAJGH6")


class TestSerial:
    def test_macos_reads_ioreg(self, tmp_path: Path) -> None:
        """On macOS the serial is IOPlatformSerialNumber from ioreg."""
        host, runner, _ = make_host(tmp_path, "darwin", "darwin/ioreg")

        assert "C02XK0AAJGH6" == ge.read_serial(host)
        assert [("ioreg", "-rd1", "-c", "IOPlatformExpertDevice")] == runner.calls

    def test_macos_falls_back_to_system_profiler(self, tmp_path: Path) -> None:
        """When ioreg names no serial, system_profiler's JSON hardware overview is read."""
        host, _, _ = make_host(tmp_path, "darwin", "darwin/ioreg_no_serial", "darwin/system_profiler")

        assert "C02XK0AAJGH6" == ge.read_serial(host)

    def test_macos_virtual_machine_serial_is_refused(self, tmp_path: Path) -> None:
        """A macOS guest's serial `0` is a placeholder, and the message says why it cannot enroll."""
        host, _, _ = make_host(tmp_path, "darwin", "darwin/ioreg_vm_placeholder")

        with pytest.raises(ge.EnrollError, match=r"serial unreadable: `ioreg -rd1 -c IOPlatformExpertDevice` says `0`, a placeholder"):
            ge.read_serial(host)

    def test_linux_reads_dmi(self, tmp_path: Path) -> None:
        """On Linux the serial is DMI product_serial, trimmed."""
        host, _, _ = make_host(tmp_path, "linux", "linux/dmi_serial")

        assert "PF2ABCDE" == ge.read_serial(host)

    def test_linux_root_only_dmi_asks_sudo_and_says_so(self, tmp_path: Path) -> None:
        """A root-only product_serial is read with `sudo cat`, after telling the user why."""
        host, _, said = make_host(tmp_path, "linux", "linux/dmi_permission_denied", sudo=["linux/sudo_cat"])

        assert "PF2ABCDE" == ge.read_serial(host)
        assert [("sudo", "cat", ge.DMI_SERIAL)] == host.sudo.calls
        assert "needs root" in said[0]

    def test_linux_without_sudo_asks_polkit(self, tmp_path: Path) -> None:
        """Without sudo the serial is read through pkexec."""
        host, _, _ = make_host(tmp_path, "linux", "linux/dmi_permission_denied", sudo=["linux/sudo_absent", "linux/pkexec_cat"])

        assert "PF2ABCDE" == ge.read_serial(host)

    def test_linux_refused_sudo_is_serial_unreadable(self, tmp_path: Path) -> None:
        """A refused sudo ends with the command to check it."""
        host, _, _ = make_host(tmp_path, "linux", "linux/dmi_permission_denied", sudo=["linux/sudo_refused"])

        with pytest.raises(ge.EnrollError, match=r"serial unreadable: .* readable by root only .* run `sudo cat /sys/class/dmi/id/product_serial`"):
            ge.read_serial(host)

    def test_linux_placeholder_is_refused(self, tmp_path: Path) -> None:
        """`To be filled by O.E.M.` is refused as a placeholder."""
        host, _, _ = make_host(tmp_path, "linux", "linux/dmi_placeholder")

        with pytest.raises(ge.EnrollError, match=r"`To be filled by O.E.M.`, a placeholder"):
            ge.read_serial(host)

    def test_linux_without_dmi_says_so(self, tmp_path: Path) -> None:
        """A board without DMI is serial unreadable, with the OS error."""
        host, _, _ = make_host(tmp_path, "linux", "linux/dmi_missing")

        with pytest.raises(ge.EnrollError, match=r"serial unreadable: .*No such file or directory"):
            ge.read_serial(host)

    def test_windows_reads_win32_bios(self, tmp_path: Path) -> None:
        """On Windows the serial is Win32_BIOS.SerialNumber through PowerShell."""
        host, _, _ = make_host(tmp_path, "windows", "windows/cim_serial")

        assert "5CD1234XYZ" == ge.read_serial(host)

    def test_windows_placeholder_is_refused(self, tmp_path: Path) -> None:
        """`System Serial Number` is refused as a placeholder."""
        host, _, _ = make_host(tmp_path, "windows", "windows/cim_placeholder")

        with pytest.raises(ge.EnrollError, match=r"`System Serial Number`, a placeholder"):
            ge.read_serial(host)

    def test_windows_denied_query_names_the_error(self, tmp_path: Path) -> None:
        """A refused CIM query is serial unreadable with PowerShell's first error line."""
        host, _, _ = make_host(tmp_path, "windows", "windows/cim_denied")

        with pytest.raises(ge.EnrollError, match=r"serial unreadable: PowerShell .* failed \(exit 1: Get-CimInstance : Access denied\)"):
            ge.read_serial(host)

    def test_unsupported_platform_is_refused(self) -> None:
        """A platform other than macOS, Linux and Windows is refused by name."""
        with pytest.raises(ge.EnrollError, match=r"cannot enroll a `freebsd14` computer"):
            ge.platform_name("freebsd14")


class TestKeyStores:
    def test_macos_imports_non_extractable_and_prefers_the_identity(self, tmp_path: Path) -> None:
        """macOS: `security import -x` into the login keychain, then an identity preference for Gatehouse's URL."""
        host, runner, _ = make_host(tmp_path, "darwin", "darwin/security_import", "darwin/security_set_identity_preference")
        key, issued = issued_for("C02XK0AAJGH6")

        store = ge.install(host, key, issued, ge.Gatehouse("https://gatehouse.corp.example"))

        keychain = str(tmp_path / "home" / "Library" / "Keychains" / "login.keychain-db")
        imported, preferred = runner.calls
        assert ("security", "import") == imported[:2]
        assert ["-k", keychain, "-f", "pkcs12"] == list(imported[3:7])
        assert "-x" in imported
        assert ("security", "set-identity-preference", "-Z", issued.sha1, "-s", "https://gatehouse.corp.example/", keychain) == preferred
        assert f"login keychain ({keychain})" == store
        assert [] == list((tmp_path / "home" / ".gatehouse").glob("*.p12"))

    def test_macos_locked_keychain_says_how_to_unlock(self, tmp_path: Path) -> None:
        """A refused keychain import names the error and `security unlock-keychain`."""
        host, _, _ = make_host(tmp_path, "darwin", "darwin/security_import_locked")
        key, issued = issued_for("C02XK0AAJGH6")

        with pytest.raises(ge.EnrollError, match=r"User interaction is not allowed.*security unlock-keychain"):
            ge.install(host, key, issued, ge.Gatehouse("https://gatehouse.corp.example"))

    def test_windows_imports_into_current_user_without_exportable(self, tmp_path: Path) -> None:
        """Windows: Import-PfxCertificate into Cert:\\CurrentUser\\My, not exportable, password only in the environment."""
        host, runner, _ = make_host(tmp_path, "windows", "windows/import_pfx")
        key, issued = issued_for("5CD1234XYZ")

        ge.install(host, key, issued, ge.Gatehouse("https://gatehouse.corp.example"))

        command = runner.calls[0][-1]
        assert "Import-PfxCertificate" in command and "Cert:\\CurrentUser\\My" in command
        assert "Exportable" not in command
        assert {"GATEHOUSE_PFX", "GATEHOUSE_PFX_PASSWORD"} == set(runner.envs[0] or {})
        assert runner.envs[0]["GATEHOUSE_PFX_PASSWORD"] not in " ".join(runner.calls[0])

    def test_linux_without_nss_tools_keeps_a_user_only_file(self, tmp_path: Path) -> None:
        """Linux without certutil: key and certificate go to ~/.gatehouse with mode 0600."""
        host, runner, said = make_host(tmp_path, "linux")
        runner.recordings = [ge_missing("certutil")]
        key, issued = issued_for("PF2ABCDE")

        store = ge.install(host, key, issued, ge.Gatehouse("https://gatehouse.corp.example"))

        state = tmp_path / "home" / ".gatehouse"
        assert store.startswith("files ")
        assert 0o600 == stat.S_IMODE((state / "device-key.pem").stat().st_mode)
        assert 0o600 == stat.S_IMODE((state / "device-cert.pem").stat().st_mode)
        assert "libnss3-tools" in said[0]

    def test_linux_real_nss_import(self, tmp_path: Path) -> None:
        """Linux: a real certutil creates ~/.pki/nssdb and a real pk12util imports key and certificate into it and a Firefox profile."""
        nss_tools()
        host, runner, _ = make_host(tmp_path, "linux", real=True)
        profile = tmp_path / "home" / ".mozilla" / "firefox" / "abcd1234.default-release"
        profile.mkdir(parents=True)
        subprocess.run(["certutil", "-N", "-d", f"sql:{profile}", "--empty-password"], check=True)
        key, issued = issued_for("PF2ABCDE")

        store = ge.install(host, key, issued, ge.Gatehouse("https://gatehouse.corp.example"))

        database = tmp_path / "home" / ".pki" / "nssdb"
        assert f"NSS database sql:{database}" == store
        assert ge.nickname(issued) in nss_listing(database)
        assert ge.nickname(issued) in nss_listing(profile)
        keys = subprocess.run(["certutil", "-K", "-d", f"sql:{database}"], capture_output=True, text=True, check=True).stdout
        assert "ec" in keys.lower()
        assert [] == [p for p in (tmp_path / "home" / ".gatehouse").iterdir() if p.suffix in (".p12", ".pw")]


def ge_missing(program: str) -> Recording:
    return Recording((program,), ge.Completed(127, "", f"{program}: command not found"))


class TestRenewalJobs:
    def test_systemd_user_timer(self, tmp_path: Path) -> None:
        """Linux: a daily persistent systemd user timer runs `--renew` with the same Gatehouse and CA file."""
        host, runner, _ = make_host(tmp_path, "linux", "linux/systemctl_ok")

        where = ge.install_renewal(host, ge.Gatehouse("https://gatehouse.corp.example", "/etc/corp-ca.pem"))

        units = tmp_path / "home" / ".config" / "systemd" / "user"
        service = (units / "gatehouse-enroll-renew.service").read_text()
        timer = (units / "gatehouse-enroll-renew.timer").read_text()
        assert "ExecStart=/usr/bin/python3 /opt/gatehouse-enroll/gatehouse_enroll.py --renew https://gatehouse.corp.example --ca-file /etc/corp-ca.pem\n" in service
        assert "OnCalendar=daily\n" in timer and "Persistent=true\n" in timer
        assert [("systemctl", "--user", "daemon-reload"), ("systemctl", "--user", "enable", "--now", "gatehouse-enroll-renew.timer")] == runner.calls
        assert where.startswith("systemd user timer")

    def test_systemd_without_user_manager_warns_with_the_command(self, tmp_path: Path) -> None:
        """Without a user manager the units are written and the message gives the command to start them."""
        host, _, said = make_host(tmp_path, "linux", "linux/systemctl_no_bus")

        ge.install_renewal(host, ge.Gatehouse("https://gatehouse.corp.example"))

        assert ["Warning: renewal is written (systemd user timer "
                f"{tmp_path}/home/.config/systemd/user/gatehouse-enroll-renew.timer) but not started "
                "(exit 1: Failed to connect to bus: No medium found); run `systemctl --user daemon-reload` yourself."] == said

    def test_launchd_agent(self, tmp_path: Path) -> None:
        """macOS: a launchd agent in ~/Library/LaunchAgents runs `--renew` daily at 10:00 and at login."""
        host, runner, _ = make_host(tmp_path, "darwin", "darwin/launchctl_bootout_absent", "darwin/launchctl_bootstrap")

        ge.install_renewal(host, ge.Gatehouse("https://gatehouse.corp.example"))

        plist_path = tmp_path / "home" / "Library" / "LaunchAgents" / "com.gatehouse.enroll-renew.plist"
        agent = plistlib.loads(plist_path.read_bytes())
        assert ["/usr/bin/python3", "/opt/gatehouse-enroll/gatehouse_enroll.py", "--renew", "https://gatehouse.corp.example"] == agent["ProgramArguments"]
        assert {"Hour": 10, "Minute": 0} == agent["StartCalendarInterval"]
        assert ("launchctl", "bootstrap", "gui/501", str(plist_path)) == runner.calls[-1]

    def test_task_scheduler(self, tmp_path: Path) -> None:
        """Windows: schtasks creates a daily task that runs `--renew`."""
        host, runner, _ = make_host(tmp_path, "windows", "windows/schtasks_create")

        ge.install_renewal(host, ge.Gatehouse("https://gatehouse.corp.example"))

        assert [("schtasks", "/Create", "/F", "/TN", "Gatehouse device certificate renewal", "/SC", "DAILY", "/ST", "10:00", "/TR",
                 "/usr/bin/python3 /opt/gatehouse-enroll/gatehouse_enroll.py --renew https://gatehouse.corp.example")] == runner.calls


class TestBrowserSettings:
    @pytest.mark.parametrize("platform", ["linux", "darwin", "windows"])
    def test_chromium_policy_names_the_host_and_the_device_ca(self, tmp_path: Path, platform: str) -> None:
        """Every platform's advice carries the AutoSelectCertificateForUrls rule for Gatehouse's host and the Firefox setting."""
        host, _, _ = make_host(tmp_path, platform)
        _, issued = issued_for("PF2ABCDE")

        text = ge.browser_settings(host, ge.Gatehouse("https://gatehouse.corp.example"), issued)

        rule = json.dumps({"pattern": "https://gatehouse.corp.example", "filter": {"ISSUER": {"CN": "Gatehouse device CA (test)"}}})
        assert rule in text or rule.replace('"', '\\"') in text
        assert "security.default_personal_cert = Select Automatically" in text


def run_client(host: Any, *args: str) -> int:
    return int(ge.main(list(args), host=host))


class TestAgainstTheContract:
    def test_enrolls_into_nss_and_renews(self, tmp_path: Path, contract: tuple[Any, Path, Script]) -> None:
        """A real run on Linux: code sign-in, proof by the nonce file's hash, install into a real NSS db, then renewal over mTLS."""
        nss_tools()
        server, ca_file, script = contract
        host, runner, said = make_host(tmp_path, "linux", "linux/dmi_serial", "linux/systemctl_ok", real=True)

        code = run_client(host, server.origin, "--ca-file", str(ca_file))

        assert 0 == code
        enrollment = next(iter(script.enrollments.values()))
        nonce_file = tmp_path / "home" / ".gatehouse" / "enroll-nonce"
        assert ("PF2ABCDE", "linux", "alice-laptop", str(nonce_file)) == (enrollment["serial"], enrollment["platform"], enrollment["hostname"], enrollment["nonce_path"])
        assert [(str(nonce_file), True)] == script.proofs
        assert not nonce_file.exists()
        state = json.loads((tmp_path / "home" / ".gatehouse" / "enrollment.json").read_text())
        assert state["nickname"] in nss_listing(tmp_path / "home" / ".pki" / "nssdb")
        assert any("ABCD-EFGH" in line and "/.gatehouse/enroll/confirm?code=ABCD-EFGH" in line for line in said)
        assert (tmp_path / "home" / ".config" / "systemd" / "user" / "gatehouse-enroll-renew.timer").exists()

        renewal_host, _, _ = make_host(tmp_path, "linux", real=True, now=datetime.fromisoformat(state["not_after"]) - timedelta(days=5))
        assert 0 == run_client(renewal_host, "--renew", server.origin, "--ca-file", str(ca_file))

        renewed = json.loads((tmp_path / "home" / ".gatehouse" / "enrollment.json").read_text())
        in_store = subprocess.run(["certutil", "-L", "-d", f"sql:{tmp_path / 'home' / '.pki' / 'nssdb'}", "-n", renewed["nickname"], "-a"],
                                  capture_output=True, check=True).stdout
        assert [state["fingerprint"]] == script.renewals
        assert [renewed["fingerprint"]] == [c.fingerprint(hashes.SHA256()).hex() for c in x509.load_pem_x509_certificates(in_store)]
        assert renewed["fingerprint"] != state["fingerprint"]

    def test_revoked_renewal_says_enroll_again(self, tmp_path: Path, contract: tuple[Any, Path, Script],
                                               capsys: pytest.CaptureFixture[str]) -> None:
        """Gatehouse's 403 `device-certificate-revoked` to `--renew` is reported with its code and the enroll command; nothing is replaced."""
        server, ca_file, script = contract
        script.renew_refusal = "device-certificate-revoked"
        host, runner, _ = make_host(tmp_path, "linux", now=datetime.now(UTC))
        key = ge.new_key()
        issued = ge.parse_issued(server.device_ca.chain(server.device_ca.issue(ge.certificate_request(key, "PF2ABCDE"), "PF2ABCDE", days=5)), key)
        store = ge._install_file(host, key, issued, reason="test")
        ge.save_state(host, ge.gatehouse_origin(server.origin, str(ca_file)), issued, ge.store_kind(host, store))

        code = run_client(host, "--renew", server.origin, "--ca-file", str(ca_file))

        assert 1 == code
        assert [issued.fingerprint] == script.renewals
        err = capsys.readouterr().err
        assert "`device-certificate-revoked`" in err and f"enroll again with gatehouse-enroll {server.origin}" in err
        assert issued.fingerprint == json.loads(ge.state_file(host).read_text())["fingerprint"]

    def test_renewal_not_due_does_nothing(self, tmp_path: Path) -> None:
        """With more than 10 days left, `--renew` says until when and contacts nobody."""
        host, runner, said = make_host(tmp_path, "linux")
        ge.write_private(ge.state_file(host), json.dumps({"serial": "PF2ABCDE", "not_after": (NOW + timedelta(days=20)).isoformat(),
                                                          "sha1": "AB", "nickname": "n", "store_kind": "nss"}).encode())

        assert 0 == run_client(host, "--renew", "https://gatehouse.corp.example")
        assert ["The device certificate is valid until 2026-12-12; renewal is due from 2026-12-02."] == said
        assert [] == runner.calls

    def test_expired_certificate_asks_to_enroll_again(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An expired certificate cannot renew itself: `--renew` says to enroll again."""
        host, runner, _ = make_host(tmp_path, "linux")
        ge.write_private(ge.state_file(host), json.dumps({"serial": "PF2ABCDE", "not_after": (NOW - timedelta(days=1)).isoformat(),
                                                          "sha1": "AB", "nickname": "n", "store_kind": "nss"}).encode())

        assert 1 == run_client(host, "--renew", "https://gatehouse.corp.example")
        assert "the device certificate expired on 2026-11-21; enroll again with gatehouse-enroll https://gatehouse.corp.example" in capsys.readouterr().err
        assert [] == runner.calls

    def test_approval_pending_says_who_must_approve(self, tmp_path: Path, contract: tuple[Any, Path, Script]) -> None:
        """An enrollment waiting for an approver says an administrator must confirm it on the admin enrollments page."""
        server, ca_file, script = contract
        script.proof = "approval"
        host, runner, said = make_host(tmp_path, "linux", "linux/dmi_serial")
        runner.recordings = [*runner.recordings, Recording(("certutil",), ge.Completed(0, "", "")), Recording(("pk12util",), ge.Completed(0, "", ""))]

        assert 0 == run_client(host, server.origin, "--ca-file", str(ca_file), "--no-renewal-job")

        waiting = [line for line in said if "waits for an approver" in line]
        assert 1 == len(waiting)
        assert f"{server.origin}/.gatehouse/admin/enrollments" in waiting[0]

    def test_proof_failed_gives_the_server_reason(self, tmp_path: Path, contract: tuple[Any, Path, Script], capsys: pytest.CaptureFixture[str]) -> None:
        """A refused enrollment ends with exit 1 and Gatehouse's reason and detail."""
        server, ca_file, script = contract
        script.refuse = ("proof-failed", "the osquery node for PF2ABCDE answered another hash")
        host, _, _ = make_host(tmp_path, "linux", "linux/dmi_serial")

        assert 1 == run_client(host, server.origin, "--ca-file", str(ca_file))
        assert "gatehouse-enroll: proof failed: Gatehouse refused enrollment enr-" in capsys.readouterr().err
        assert not (tmp_path / "home" / ".gatehouse" / "enroll-nonce").exists()

    def test_code_expired(self, tmp_path: Path, contract: tuple[Any, Path, Script], capsys: pytest.CaptureFixture[str]) -> None:
        """A code nobody confirmed ends with `not signed in` and the command to start again."""
        server, ca_file, script = contract
        script.token_statuses = [428, 410]
        host, _, _ = make_host(tmp_path, "linux", "linux/dmi_serial")

        assert 1 == run_client(host, server.origin, "--ca-file", str(ca_file))
        assert f"not signed in: the code ABCD-EFGH expired before it was confirmed; run gatehouse-enroll {server.origin} again" in capsys.readouterr().err

    def test_code_never_confirmed_times_out(self, tmp_path: Path, contract: tuple[Any, Path, Script], capsys: pytest.CaptureFixture[str]) -> None:
        """Polling stops when the session's expires_in has passed on the client's clock."""
        server, ca_file, script = contract
        script.token_statuses = [428]
        host, _, _ = make_host(tmp_path, "linux", "linux/dmi_serial")

        assert 1 == run_client(host, server.origin, "--ca-file", str(ca_file))
        assert "expired before it was confirmed" in capsys.readouterr().err
        assert 600 == sum(host.pace.slept)

    def test_bad_token_is_not_signed_in(self, tmp_path: Path, contract: tuple[Any, Path, Script], capsys: pytest.CaptureFixture[str]) -> None:
        """A token Gatehouse does not accept ends with `not signed in` and its problem code."""
        server, ca_file, _ = contract
        host, _, _ = make_host(tmp_path, "linux", "linux/dmi_serial")

        assert 1 == run_client(host, server.origin, "--ca-file", str(ca_file), "--token", "not-a-token")
        assert "not signed in: Gatehouse did not accept the sign-in (`enroll-token-invalid`: the enrollment token is unknown or used)" in capsys.readouterr().err

    def test_enrollment_disabled(self, tmp_path: Path, contract: tuple[Any, Path, Script], capsys: pytest.CaptureFixture[str]) -> None:
        """A Gatehouse without a device CA says enrollment is not enabled."""
        server, ca_file, script = contract
        script.sessions_status = 404
        host, _, _ = make_host(tmp_path, "linux", "linux/dmi_serial")

        assert 1 == run_client(host, server.origin, "--ca-file", str(ca_file))
        assert "enrollment is not enabled on" in capsys.readouterr().err

    def test_private_ca_without_ca_file_hints_at_it(self, tmp_path: Path, contract: tuple[Any, Path, Script], capsys: pytest.CaptureFixture[str]) -> None:
        """TLS verification stays on: an unknown CA fails with the hint to pass --ca-file."""
        server, _, _ = contract
        host, _, _ = make_host(tmp_path, "linux", "linux/dmi_serial")

        assert 1 == run_client(host, server.origin)
        assert "--ca-file" in capsys.readouterr().err

    def test_unreachable_names_the_url_and_the_os_error(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A Gatehouse nobody listens for is `unreachable`, with the URL and the operating system's error."""
        from tests.conftest import free_port

        port = free_port()
        host, _, _ = make_host(tmp_path, "linux", "linux/dmi_serial")

        assert 1 == run_client(host, f"https://127.0.0.1:{port}")
        err = capsys.readouterr().err
        assert f"gatehouse unreachable at `https://127.0.0.1:{port}/.gatehouse/api/v1/enroll/sessions`" in err
        assert "Connection refused" in err

    def test_address_with_a_path_is_bad_usage(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A URL with a path is refused before anything runs, with the origin to use instead."""
        host, runner, _ = make_host(tmp_path, "linux")

        assert 1 == run_client(host, "https://gatehouse.corp.example/app")
        assert "give only the origin, e.g. https://gatehouse.corp.example" in capsys.readouterr().err
        assert [] == runner.calls
