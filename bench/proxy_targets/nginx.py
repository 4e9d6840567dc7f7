"""nginx as the benchmark runs it: a plain reverse proxy, or one guarded by auth_request.

Owns: render_config, start_nginx.
Must not import: gateway, aiohttp.

The configuration is rendered from the templates in nginx/ into a private prefix directory; nginx
runs in the foreground (``daemon off``) with one worker, keep-alive pools to the upstream (and to
the auth service), HTTP/1.1 upstream connections, answers relayed through memory buffers only
(``proxy_max_temp_file_size 0``), and no access log unless ``access_log`` is set: then the
default ``combined`` line per request, unbuffered, to ``<prefix>/access.log`` (as Debian's
default site writes ``/var/log/nginx/access.log``).
"""

from __future__ import annotations

import grp
import os
import shutil
from pathlib import Path
from string import Template

from proxy_targets.procs import Proc, TargetUnavailable, start_proc

TEMPLATES = Path(__file__).resolve().parent / "nginx"


def nginx_binary() -> str:
    """The nginx executable (Debian installs it in /usr/sbin, which may not be on PATH).

    Raises:
        TargetUnavailable: nginx is not installed.
    """
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        raise TargetUnavailable("nginx is not installed; run `bash scripts/bench-deps.sh`")
    return found


def render_config(prefix: Path, *, port: int, upstream: str, auth: str | None = None, access_log: bool = False) -> str:
    """The nginx.conf text: plain proxy to ``upstream`` (host:port), or guarded by ``auth`` (host:port); access log on or off."""
    user_line = ""
    if os.geteuid() == 0:
        # Workers drop root; Debian has no `nobody` group, which is nginx's built-in default.
        try:
            grp.getgrnam("nogroup")
            user_line = "user nobody nogroup;"
        except KeyError:
            user_line = "user nobody;"
    kind = "plain" if auth is None else "auth"
    locations = Template((TEMPLATES / f"{kind}.locations.in").read_text()).substitute()
    extra = "" if auth is None else Template((TEMPLATES / "auth.upstreams.in").read_text()).substitute(auth=auth)
    return Template((TEMPLATES / "common.conf.in").read_text()).substitute(
        prefix=str(prefix), user_line=user_line, upstream=upstream, extra_upstreams=extra, port=port, locations=locations.rstrip("\n"),
        access_log=f"access_log {prefix}/access.log combined;" if access_log else "access_log off;",
    )


def start_nginx(name: str, workdir: Path, *, port: int, upstream: str, auth: str | None, core: int | None, access_log: bool = False) -> Proc:
    """Write the configuration under ``workdir/name`` and start nginx on it in the foreground.

    Raises:
        TargetUnavailable: nginx is missing or rejects the configuration.
    """
    binary = nginx_binary()
    prefix = workdir / name
    prefix.mkdir(parents=True, exist_ok=True)
    os.chmod(prefix, 0o755)
    conf = prefix / "nginx.conf"
    conf.write_text(render_config(prefix, port=port, upstream=upstream, auth=auth, access_log=access_log), encoding="utf-8")
    return start_proc(name, [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")], workdir=workdir, core=core)
