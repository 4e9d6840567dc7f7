"""Built-in remediation catalog: a good default entry for every built-in check, on every platform.

Owns: DEFAULT_REMEDIATION, DEFAULT_KEY_BY_FACT.
Must not import: anything outside the standard library and policy_engine.

A policy only writes the fields it wants to change (its own `doc_url`, a different step); see
``remediation:`` in FORMAT.md. Steps are Markdown; the deep links open the right settings pane.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from policy_engine.model import OsFamily
from policy_engine.remediation import Remediation

D, W, L = OsFamily.DARWIN, OsFamily.WINDOWS, OsFamily.LINUX


def _entry(key: str, title: str, why: str, doc_url: str, **steps: str) -> Remediation:
    by_platform = {OsFamily(p): text.strip() for p, text in steps.items()}
    return Remediation(key=key, title=title, why=why, steps=MappingProxyType(by_platform), doc_url=doc_url)


_ENTRIES = (
    _entry(
        "disk_encryption",
        "Turn on disk encryption",
        "If this device is lost or stolen, an encrypted disk keeps company data unreadable.",
        "https://support.apple.com/guide/mac-help/mh11785/mac",
        darwin="""
1. Open [System Settings → Privacy & Security → FileVault](x-apple.systempreferences:com.apple.preference.security?FileVault).
2. Click **Turn On…** and store the recovery key the way IT asks (usually escrowed to MDM).
3. Keep the Mac on power until encryption finishes; you can keep working meanwhile.
""",
        windows="""
1. Open [Settings → Privacy & security → Device encryption](ms-settings:deviceencryption) and turn it on.
2. If that page is missing (Windows Pro/Enterprise), open **Control Panel → BitLocker Drive Encryption** and choose **Turn on BitLocker** for the system drive.
3. Back up the recovery key to your work account when asked.
""",
        linux="""
Full-disk encryption (LUKS) is chosen when the system is installed and cannot be switched on in place.
1. Back up your data.
2. Reinstall, choosing **Encrypt the new installation** (Ubuntu: *Advanced features → Use LVM and encryption*).
3. Ask IT if you need help moving your files across.
""",
    ),
    _entry(
        "firewall",
        "Turn on the firewall",
        "The firewall blocks unexpected incoming connections, for example on café or hotel Wi-Fi.",
        "https://support.apple.com/guide/mac-help/mh34041/mac",
        darwin="""
1. Open [System Settings → Network → Firewall](x-apple.systempreferences:com.apple.preference.security?Firewall).
2. Turn **Firewall** on.
""",
        windows="""
1. Open [Windows Security → Firewall & network protection](windowsdefender://network/).
2. Turn **Microsoft Defender Firewall** on for the active network (Domain, Private and Public).
""",
        linux="""
Run `sudo ufw enable` (Ubuntu, Debian) or `sudo systemctl enable --now firewalld` (Fedora, RHEL).
""",
    ),
    _entry(
        "screen_lock",
        "Require a password when the screen locks",
        "A locked screen stops anyone who walks past an unattended device from using your session.",
        "",
        darwin="""
osquery reads this from the configuration profile IT installs (`com.apple.screensaver`, **askForPassword**), so changing System Settings alone does not change what Gatehouse sees.
1. Open [System Settings → General → Device Management](x-apple.systempreferences:com.apple.Profiles-Settings.extension) and check that IT's security profile is installed; ask IT to (re)install it if not.
2. Without a profile (agents that read your own settings): open [System Settings → Lock Screen](x-apple.systempreferences:com.apple.Lock-Screen-Settings.extension) and set **Require password after screen saver begins or display is turned off** to **Immediately**.
""",
        windows="""
1. Press **Win+R**, run `control desk.cpl,,@screensaver` (Screen Saver Settings).
2. Choose a screen saver and tick **On resume, display logon screen** (ScreenSaverIsSecure), then **OK**.
IT may set the machine inactivity limit (InactivityTimeoutSecs) instead; then nothing here needs changing.
""",
        linux="""
GNOME: open **Settings → Privacy → Screen Lock** and turn on **Automatic Screen Lock**, or run
`gsettings set org.gnome.desktop.screensaver lock-enabled true`.
""",
    ),
    _entry(
        "screen_lock_delay",
        "Lock the screen sooner when idle",
        "The shorter the idle time before locking, the smaller the window for someone to use an unattended device.",
        "",
        darwin="""
osquery reads this from the configuration profile IT installs (`com.apple.screensaver`, **idleTime** plus **askForPasswordDelay**, in seconds), so changing System Settings alone does not change what Gatehouse sees.
1. Ask IT to set a shorter screen-saver idle time in the profile.
2. Without a profile (agents that read your own settings): open [System Settings → Lock Screen](x-apple.systempreferences:com.apple.Lock-Screen-Settings.extension) and set **Start Screen Saver when inactive** to the time your policy asks or less.
""",
        windows="""
1. Press **Win+R**, run `control desk.cpl,,@screensaver` (Screen Saver Settings).
2. Set **Wait** (ScreenSaveTimeOut) to the time your policy asks or less, keep **On resume, display logon screen** ticked, then **OK**.
""",
        linux="""
GNOME: open **Settings → Power → Screen Blank** and choose a shorter delay, or run
`gsettings set org.gnome.desktop.session idle-delay 300` (seconds).
""",
    ),
    _entry(
        "remote_login",
        "Turn off remote login",
        "Remote login (SSH / Remote Desktop) lets anyone with the password reach this device over the network.",
        "",
        darwin="""
1. Open [System Settings → General → Sharing](x-apple.systempreferences:com.apple.preferences.sharing?Services_RemoteLogin).
2. Turn **Remote Login** off.
""",
        windows="""
1. Open [Settings → System → Remote Desktop](ms-settings:remotedesktop).
2. Turn **Remote Desktop** off.
""",
        linux="""
Run `sudo systemctl disable --now ssh` (Ubuntu, Debian) or `sudo systemctl disable --now sshd` (Fedora, RHEL).
""",
    ),
    _entry(
        "auto_updates",
        "Turn on automatic updates",
        "Most attacks use flaws that already have a fix; automatic updates install those fixes quickly.",
        "",
        darwin="""
1. Open [System Settings → General → Software Update](x-apple.systempreferences:com.apple.preferences.softwareupdate).
2. Click the ⓘ next to **Automatic updates** and turn every option on.
""",
        windows="""
1. Open [Settings → Windows Update](ms-settings:windowsupdate) → **Advanced options**.
2. Turn on **Receive updates for other Microsoft products** and make sure updates are not paused.
""",
        linux="""
Ubuntu/Debian: `sudo apt install unattended-upgrades && sudo dpkg-reconfigure -plow unattended-upgrades`.
Fedora: `sudo dnf install dnf-automatic && sudo systemctl enable --now dnf-automatic-install.timer`.
""",
    ),
    _entry(
        "sip",
        "Turn System Integrity Protection back on",
        "System Integrity Protection stops malware from changing macOS itself, even with an administrator password.",
        "https://support.apple.com/en-us/102149",
        darwin="""
1. Restart into Recovery (Apple silicon: hold the power button; Intel: hold ⌘R).
2. Open **Utilities → Terminal** and run `csrutil enable` (turns System Integrity Protection on).
3. Restart.
""",
    ),
    _entry(
        "gatekeeper",
        "Turn Gatekeeper back on",
        "Gatekeeper only lets apps from the App Store and identified developers run, which keeps out most malware.",
        "",
        darwin="""
1. Open Terminal and run `sudo spctl --master-enable` (turns Gatekeeper on).
2. Open [System Settings → Privacy & Security](x-apple.systempreferences:com.apple.preference.security) and allow apps from **App Store and identified developers**.
""",
    ),
    _entry(
        "os_version",
        "Update the operating system",
        "Old operating system versions have publicly known security flaws that are fixed in newer releases.",
        "",
        darwin="""
1. Open [System Settings → General → Software Update](x-apple.systempreferences:com.apple.preferences.softwareupdate).
2. Install the offered update (or **Upgrade Now** for a new major version) and restart.
""",
        windows="""
1. Open [Settings → Windows Update](ms-settings:windowsupdate).
2. Click **Check for updates**, install everything offered, and restart.
""",
        linux="""
Ubuntu/Debian: `sudo apt update && sudo apt full-upgrade`, then `sudo do-release-upgrade` for a new release.
Fedora: `sudo dnf upgrade --refresh`, then `sudo dnf system-upgrade` for a new release. Restart afterwards.
""",
    ),
    _entry(
        "agent_version",
        "Update the device health agent",
        "An old agent may report health facts wrongly or not at all, so the gateway cannot trust what it says.",
        "",
        darwin="Install the latest agent from Self Service (or your MDM's app catalog), then restart it.",
        windows="Install the latest agent from Software Center (or your MDM's app catalog), then restart it.",
        linux="Update the agent package with your package manager (`sudo apt upgrade` or `sudo dnf upgrade`), then restart its service.",
    ),
    _entry(
        "agent",
        "Install the approved device health agent",
        "The gateway only trusts health reports from the agent IT deploys and configures.",
        "",
        darwin="Install the agent from Self Service (or your MDM's app catalog) and sign in when asked.",
        windows="Install the agent from Software Center (or your MDM's app catalog) and sign in when asked.",
        linux="Install the agent package IT publishes for your distribution and enable its service.",
    ),
    _entry(
        "supported_platform",
        "Use a supported device",
        "This service is only available from operating systems and distributions IT can keep secure.",
        "",
        darwin="Use a company Mac running a supported macOS release, or ask IT which devices are supported.",
        windows="Use a company PC running a supported Windows edition, or ask IT which devices are supported.",
        linux="Use a supported distribution (ask IT for the list), or use a company Mac or PC for this service.",
    ),
)

DEFAULT_REMEDIATION: Mapping[str, Remediation] = MappingProxyType({e.key: e for e in _ENTRIES})
"""Built-in entries by key; a policy's `remediation:` section overrides them field by field."""

DEFAULT_KEY_BY_FACT: Mapping[str, str] = MappingProxyType(
    {
        "disk_encrypted": "disk_encryption",
        "firewall_enabled": "firewall",
        "screen_lock_enabled": "screen_lock",
        "screen_lock_delay_s": "screen_lock_delay",
        "remote_login_enabled": "remote_login",
        "auto_updates_enabled": "auto_updates",
        "sip_enabled": "sip",
        "gatekeeper_enabled": "gatekeeper",
        "os_version": "os_version",
        "os_build": "os_version",
        "agent_version": "agent_version",
        "agent_name": "agent",
        "source": "agent",
        "platform": "supported_platform",
        "os_name": "supported_platform",
        "distribution": "supported_platform",
    }
)
"""The built-in remediation a check on a fact uses when the check names none."""
