"""Server settings of the studio, in the engine's table format (pipelines.settings).

Each setting `foo_bar` is the flag `--foo-bar` and the environment variable
`ATELIER_FOO_BAR`; flag > environment > default. The engine's settings (models,
LoRAs, outputs, devices, dtype, cache budget, preview every N steps) stay in
`pipelines.settings.ENGINE_SETTINGS`; this table adds what only the server needs.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.settings import Setting, auto_or_bool, auto_or_int, parse_bool, resolve

SERVER_SETTINGS: tuple[Setting, ...] = (
    Setting("host", "127.0.0.1", "address the studio listens on (0.0.0.0 for every interface)"),
    Setting("port", 7860, "port the studio listens on", int),
    Setting("share", False, "also open a temporary public gradio.live link", parse_bool),
    Setting("auth", "", "require a login: user:password pairs separated by commas, or a "
            "file with one user:password a line (empty = no login)"),
    Setting("root_path", "", "URL path prefix when served behind a reverse proxy, e.g. /atelier"),
    Setting("queue_size", 64, "most generation jobs waiting for a device, counted by the "
            "engine over every front end; one more is refused (0 = unlimited)", int),
    Setting("max_jobs_per_user", "auto", "most jobs one caller (logged-in user, else client "
            "address) may have waiting or running (0 = unlimited; auto = 2 on a public studio, "
            "else unlimited)", auto_or_int),
    Setting("public", "auto", "serve as a public studio (safer defaults for hub_models, "
            "max_work, max_jobs_per_user): true, false or auto = on when listening beyond "
            "loopback, with --share, or on Hugging Face Spaces (SPACE_ID set)", auto_or_bool),
    Setting("trusted_proxies", "", "comma-separated addresses of reverse proxies whose "
            "X-Forwarded-For header is believed (the caller is the address it names)"),
    Setting("max_upload_mb", 50, "largest file a browser or API client may upload, in MB", int),
    Setting("api", False, "also serve the A1111-compatible /sdapi/v1 and OpenAI-compatible "
            "/v1/images APIs on the studio's port", parse_bool),
    Setting("api_auth", "", "HTTP Basic logins of the REST APIs: user:password pairs separated "
            "by commas, or a file (empty = the studio's auth users; neither = open)"),
    Setting("api_keys", "", "Bearer keys of the OpenAI-compatible API: comma-separated, or a "
            "file with one key a line (empty = the api_auth/auth logins, else open)"),
    Setting("api_url_ttl_s", 3600, "seconds an image URL of the OpenAI API stays valid when "
            "outputs are not uploaded to S3", int),
)  # fmt: skip


def server_values(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Resolve SERVER_SETTINGS. Hugging Face Spaces and Docker set GRADIO_SERVER_NAME /
    GRADIO_SERVER_PORT: those apply when the Atelier setting is given neither way."""
    env = os.environ if env is None else env
    values = resolve(SERVER_SETTINGS, args, env)
    for name, gradio_env, cast in (("host", "GRADIO_SERVER_NAME", str),
                                   ("port", "GRADIO_SERVER_PORT", int)):  # fmt: skip
        unset = getattr(args, name, None) is None and f"ATELIER_{name.upper()}" not in env
        if unset and env.get(gradio_env):
            values[name] = cast(env[gradio_env])
    values["public_resolved"] = is_public(values, env)
    return values


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def is_public(values: Mapping[str, Any], env: Mapping[str, str] | None = None) -> bool:
    """`public` as set, or (auto) on when the studio can be reached from elsewhere:
    listening beyond loopback, a --share link, or running on Spaces."""
    env = os.environ if env is None else env
    if values["public"] != "auto":
        return bool(values["public"])
    host = str(values["host"])
    beyond_loopback = not (host in LOOPBACK or host.startswith("127."))
    return beyond_loopback or bool(values["share"]) or bool(env.get("SPACE_ID"))


def engine_limits(values: Mapping[str, Any]) -> dict[str, Any]:
    """What the server decides for the engine: its admission limits and whether it is
    public (for the engine's own `auto` defaults, see pipelines.settings)."""
    public = values["public_resolved"]
    per_user = values["max_jobs_per_user"]
    if per_user == "auto":
        per_user = 2 if public else 0
    return {"queue_size": values["queue_size"], "max_jobs_per_user": per_user, "public": public}


def trusted_proxies(values: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(a.strip() for a in str(values["trusted_proxies"]).split(",") if a.strip())


def parse_auth(value: str) -> list[tuple[str, str]] | None:
    """`user:pw,user2:pw2`, or a path to a file with one `user:pw` a line; None if empty.
    The password is everything after the first ':' (so it may contain ':')."""
    if not value or not value.strip():
        return None
    path = Path(value).expanduser()
    items = path.read_text().splitlines() if path.is_file() else value.split(",")
    pairs = []
    for item in (i.strip() for i in items):
        if not item or item.startswith("#"):
            continue
        user, sep, password = item.partition(":")
        if not (sep and user and password):
            where = f"in {path}" if path.is_file() else "in --auth"
            raise ValueError(f"auth entries must be user:password, got {item!r} {where}")
        pairs.append((user, password))
    if not pairs:
        raise ValueError(f"auth file {path} has no user:password lines")
    return pairs


def launch_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of `Blocks.launch` from resolved server settings."""
    return {
        "server_name": values["host"],
        "server_port": values["port"],
        "share": values["share"],
        "auth": parse_auth(values["auth"]),
        "root_path": values["root_path"] or None,
        "max_file_size": f"{values['max_upload_mb']}mb",
    }
