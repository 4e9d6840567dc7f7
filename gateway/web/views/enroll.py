"""How a person enrolls a laptop with Gatehouse: the commands per platform, as HTML and as data.

Owns: CLIENT_PATH, CLIENT_FILE_NAME, EnrollCommands, enroll_commands, commands_for, enroll_card,
enroll_data.
Must not import: aiohttp, decision logic, the clock, files or the network (the handler that serves
the client file lives in gateway/web/portal.py).

One source for the wording the deny page, its problem+json and the status page show, and that
the README's "Enroll a laptop" section repeats (tests/gateway/web/test_enroll_pages.py keeps them equal).
The enrollment client is the one file deploy/enroll/gatehouse_enroll.py, served by every Gatehouse
at ``CLIENT_PATH``; ``origin`` is the address the browser already uses for Gatehouse, so the
certificate it installs is offered to that host.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.web.views.html import Markup, el, join
from gateway.web.views.layout import platform_name
from policy_engine.model import OsFamily

CLIENT_PATH = "/.gatehouse/enroll/gatehouse_enroll.py"
"""Where Gatehouse serves the one-file enrollment client."""
CLIENT_FILE_NAME = "gatehouse_enroll.py"

PLATFORMS = (OsFamily.DARWIN, OsFamily.WINDOWS, OsFamily.LINUX)
"""The platforms the client enrolls, in the order an unknown browser sees them."""


@dataclass(frozen=True, slots=True)
class EnrollCommands:
    """What a person types on one platform: download the client, run it once; or both in one with pipx."""

    platform: OsFamily
    terminal: str
    """Where to type them: ``Terminal`` or ``PowerShell``."""
    install: str
    enroll: str
    pipx: str
    """The alternative with pipx: runs the served file in its own environment with its dependency
    (``cryptography``, declared in the file's inline script metadata)."""


def enroll_commands(origin: str, platform: OsFamily) -> EnrollCommands:
    """The commands for ``platform`` against the Gatehouse at ``origin`` (``https://host[:port]``, no path)."""
    url = origin + CLIENT_PATH
    pipx = f"pipx run {url} {origin}"
    if platform is OsFamily.WINDOWS:
        return EnrollCommands(platform, "PowerShell", f"Invoke-WebRequest -Uri {url} -OutFile {CLIENT_FILE_NAME}",
                              f"py {CLIENT_FILE_NAME} {origin}", pipx)
    return EnrollCommands(platform, "Terminal", f"curl -fsSLO {url}", f"python3 {CLIENT_FILE_NAME} {origin}", pipx)


def commands_for(origin: str, platform: OsFamily) -> tuple[EnrollCommands, ...]:
    """The platform's commands; all three platforms' when the browser's platform is unknown."""
    if platform in PLATFORMS:
        return (enroll_commands(origin, platform),)
    return tuple(enroll_commands(origin, p) for p in PLATFORMS)


_WHAT_HAPPENS = (
    "The program shows a short code and opens your browser: sign in if asked, check that the code matches, "
    "and confirm.",
    "Gatehouse checks that the program runs on the same laptop as its health agent (or an approver confirms), "
    "then issues this laptop a certificate that names its serial number and you.",
    "The program installs the certificate for your browsers and renews it before it expires. Restart your "
    "browser, then press “I fixed it, check again”.",
)


def _platform_steps(cmds: EnrollCommands, *, labelled: bool) -> Markup:
    return join(
        el("h3", platform_name(cmds.platform)) if labelled else None,
        el("ol", el("li", f"Open {cmds.terminal} and download the enrollment program:",
                    el("p", el("code", cmds.install, class_="cmd"))),
           el("li", "Run it once:", el("p", el("code", cmds.enroll, class_="cmd"))),
           class_="enroll-steps", data_platform=cmds.platform.value),
        el("p", "The program needs Python 3.9 or later with the ", el("code", "cryptography"), " package. "
                "If it says the package is missing, run it with pipx instead, which installs it for the program alone: ",
           el("code", cmds.pipx, class_="cmd"), class_="small muted"),
    )


def enroll_card(origin: str, platform: OsFamily, *, heading: str = "How to enroll this laptop") -> Markup:
    """A card with the commands (this platform's, or every platform's) and what happens when they run."""
    listed = commands_for(origin, platform)
    return el(
        "section",
        el("h2", heading),
        el("p", "Enrolling once proves that this laptop, its health agent and you belong together. "
                "It takes two commands and a minute."),
        [_platform_steps(c, labelled=len(listed) > 1) for c in listed],
        el("h3", "What happens next"),
        el("ol", [el("li", step) for step in _WHAT_HAPPENS]),
        el("p", "Programs your company manages (an MDM, Self Service) may enroll the laptop for you; "
                "ask IT if the program refuses this laptop."),
        class_="card info", aria_label=heading,
    )


def enroll_data(origin: str, platform: OsFamily) -> dict[str, object]:
    """The same facts for API clients: the client's address and each platform's commands."""
    return {
        "client_url": origin + CLIENT_PATH,
        "platform": platform.value if platform in PLATFORMS else None,
        "commands": [
            {"platform": c.platform.value, "terminal": c.terminal, "install": c.install, "enroll": c.enroll,
             "pipx": c.pipx}
            for c in commands_for(origin, platform)
        ],
        "steps": list(_WHAT_HAPPENS),
    }
