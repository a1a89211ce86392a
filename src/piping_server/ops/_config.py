"""Every setting of the server in one frozen tree, loaded from TOML, the environment and the command line.

Why TOML: ``tomllib`` is in the standard library (no dependency), the format has comments and
strict types (``8080`` is never the string ``"8080"``, ``yes`` is never a boolean), and one file
maps cleanly onto nested sections. YAML would need a third-party parser and guesses types.

Precedence, lowest first: built-in defaults (the plain protocol, nothing enabled), the config file,
secrets from the environment (``PIPING_JWT_SECRET``, ``PIPING_BASIC_AUTH_<USER>``), then the
command-line flags the operator actually typed. Validation is strict: an unknown key, a wrong type
or a bad value is a ``ConfigError`` whose one-line message names the key.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..relay._proxies import DEFAULT_FORWARDED_ALLOW_IPS, TrustedProxies

#: Environment variable holding the HS256 secret of JWT bearer tokens.
ENV_JWT_SECRET = "PIPING_JWT_SECRET"
#: ``PIPING_BASIC_AUTH_ALICE=<password or hash>`` adds (or overrides) the basic-auth user ``alice``.
ENV_BASIC_AUTH_PREFIX = "PIPING_BASIC_AUTH_"

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("plain", "json")
HASH_SCHEMES = ("pbkdf2_sha256", "scrypt")
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
PUBLIC_KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class ConfigError(ValueError):
    """A setting is missing, unknown, of the wrong type or out of range; the message is one line."""


def _meta(**kwargs: Any) -> dict[str, Any]:
    return kwargs


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Listeners and shutdown; changing these needs a restart."""

    host: str | None = None
    http_port: int = field(default=8080, metadata=_meta(min=0, max=65535))
    enable_https: bool = False
    https_port: int | None = field(default=None, metadata=_meta(min=0, max=65535))
    crt_path: str | None = None
    key_path: str | None = None
    #: peers whose X-Forwarded-For / X-Forwarded-Proto / Forwarded headers name the client: comma-separated
    #: IP addresses and networks, "*" for any, "" for none (uvicorn's and gunicorn's flag and default)
    forwarded_allow_ips: str = field(default=DEFAULT_FORWARDED_ALLOW_IPS, metadata=_meta(networks=True))
    #: seconds that running transfers may go on after SIGTERM before they are cut (gunicorn's 30 s)
    shutdown_grace: float = field(default=30.0, metadata=_meta(min=0))


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    level: str = field(default="info", metadata=_meta(choices=LOG_LEVELS))
    format: str = field(default="plain", metadata=_meta(choices=LOG_FORMATS))
    #: one line per finished request (never a body, never a secret)
    access: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    """Prometheus ``/metrics`` and ``/healthz`` on their own port, never on the protocol's."""

    port: int | None = field(default=None, metadata=_meta(min=0, max=65535))
    host: str = "127.0.0.1"


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsConfig:
    """All optional (None: no limit, as in the plain protocol). Times in seconds."""

    wait_timeout: float | None = field(default=None, metadata=_meta(gt=0))
    idle_timeout: float | None = field(default=None, metadata=_meta(gt=0))
    max_n: int | None = field(default=None, metadata=_meta(min=1))
    #: a live receiver further behind than this many bytes is cut (docs/protocol.md section 11); None: 8 MiB
    live_max_lag: int | None = field(default=None, metadata=_meta(min=1))
    #: most receivers one live path may have at once
    max_live_receivers: int | None = field(default=None, metadata=_meta(min=1))
    max_connections: int | None = field(default=None, metadata=_meta(min=1))
    max_connections_per_client: int | None = field(default=None, metadata=_meta(min=1))
    max_waiting: int | None = field(default=None, metadata=_meta(min=1))
    max_waiting_per_client: int | None = field(default=None, metadata=_meta(min=1))
    max_header_bytes: int | None = field(default=None, metadata=_meta(min=256, max=1 << 20))
    #: seconds from accept (or the end of the previous response) to a complete request head; 0: no limit
    header_timeout: float = field(default=60.0, metadata=_meta(min=0))
    #: seconds a connection with no request in progress may stay open; 0: no limit
    keepalive_timeout: float = field(default=75.0, metadata=_meta(min=0))


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessConfig:
    #: path patterns a transfer may use: "/exact", "/prefix/*", "re:<regex matching the whole path>"
    allow_paths: tuple[str, ...] | None = field(default=None, metadata=_meta(patterns=True))
    #: also ask for credentials on the pages (/, /help...); the allow-list never applies to them
    protect_pages: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class BasicUser:
    name: str = field(default="", metadata=_meta(required=True, nonempty=True))
    #: a plain password (prefer ``password_hash`` or the environment)
    password: str | None = field(default=None, repr=False)
    #: ``pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>`` or ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``
    password_hash: str | None = field(default=None, repr=False)
    #: the paths this user may use (patterns as in ``access.allow_paths``); None: every path
    paths: tuple[str, ...] | None = field(default=None, metadata=_meta(patterns=True))


@dataclass(frozen=True, slots=True, kw_only=True)
class BasicAuthConfig:
    realm: str = "piping-server"
    users: tuple[BasicUser, ...] = ()
    #: failed logins one client address may make at once; then one more every ``failure_refill`` seconds
    #: (past it: 429, and no password is checked)
    max_failures: int = field(default=10, metadata=_meta(min=1))
    failure_refill: float = field(default=2.0, metadata=_meta(gt=0))


@dataclass(frozen=True, slots=True, kw_only=True)
class JwtConfig:
    #: HS256/384/512 secret (prefer the PIPING_JWT_SECRET environment variable)
    secret: str | None = field(default=None, repr=False)
    #: PEM public key for RS*/PS*/ES*/EdDSA tokens
    public_key_file: str | None = None
    #: a JWKS URL (keys picked by ``kid``), fetched in the background
    jwks_url: str | None = None
    #: seconds between JWKS refreshes
    jwks_refresh: float = field(default=300.0, metadata=_meta(gt=0))
    #: accepted algorithms; empty: HS256 with a secret, the public-key ones with a key file or JWKS
    algorithms: tuple[str, ...] = ()
    issuer: str | None = None
    audience: str | None = None
    #: seconds of clock skew tolerated on exp/nbf/iat
    leeway: float = field(default=0.0, metadata=_meta(min=0))
    require_exp: bool = True
    #: a claim holding the paths the token may use (a list of patterns, or one space-separated string)
    paths_claim: str = "piping_paths"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthConfig:
    basic: BasicAuthConfig = field(default_factory=BasicAuthConfig)
    jwt: JwtConfig = field(default_factory=JwtConfig)

    @property
    def basic_enabled(self) -> bool:
        return bool(self.basic.users)

    @property
    def jwt_enabled(self) -> bool:
        return bool(self.jwt.secret or self.jwt.public_key_file or self.jwt.jwks_url)

    @property
    def enabled(self) -> bool:
        return self.basic_enabled or self.jwt_enabled


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole configuration; the defaults are the plain protocol with nothing enabled."""

    server: ServerConfig = field(default_factory=ServerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)

    @property
    def needs_hooks(self) -> bool:
        """Whether any operator feature is on (else the transports run with no hook at all)."""
        limits = self.limits
        return bool(
            self.log.access
            or self.metrics.port is not None
            or self.auth.enabled
            or self.access.allow_paths is not None
            or any(getattr(limits, f.name) is not None for f in dataclasses.fields(limits) if f.name not in _ALWAYS_ON)
        )


#: limits that hold by default, set on the transports directly: they need no hook
_ALWAYS_ON = frozenset({"header_timeout", "keepalive_timeout"})

#: command-line option name -> config key (every flag has its key, so a file can hold them all)
FLAG_KEYS: dict[str, str] = {
    "host": "server.host",
    "http_port": "server.http_port",
    "enable_https": "server.enable_https",
    "https_port": "server.https_port",
    "crt_path": "server.crt_path",
    "key_path": "server.key_path",
    "forwarded_allow_ips": "server.forwarded_allow_ips",
    "shutdown_grace": "server.shutdown_grace",
    "log_level": "log.level",
    "log_format": "log.format",
    "access_log": "log.access",
    "metrics_port": "metrics.port",
    "metrics_host": "metrics.host",
    "wait_timeout": "limits.wait_timeout",
    "idle_timeout": "limits.idle_timeout",
    "max_n": "limits.max_n",
    "live_max_lag": "limits.live_max_lag",
    "max_live_receivers": "limits.max_live_receivers",
    "max_connections": "limits.max_connections",
    "max_connections_per_client": "limits.max_connections_per_client",
    "max_waiting": "limits.max_waiting",
    "max_waiting_per_client": "limits.max_waiting_per_client",
    "max_header_bytes": "limits.max_header_bytes",
    "header_timeout": "limits.header_timeout",
    "keepalive_timeout": "limits.keepalive_timeout",
    "allow_path": "access.allow_paths",
}


# --- loading ---------------------------------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read ``path`` (TOML), add secrets from ``environ``, apply ``overrides`` (dotted keys), validate.

    Raises:
        ConfigError: with a one-line message naming the file and the key at fault.
    """
    table: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as file:
                table = tomllib.load(file)
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        _apply_env(table, os.environ if environ is None else environ)
        for key, value in (overrides or {}).items():
            _set_dotted(table, key, value)
        config: Config = _build(Config, table, "")
        _check_cross(config)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path is not None else str(exc)) from None
    return config


def _apply_env(table: dict[str, Any], environ: Mapping[str, str]) -> None:
    secret = environ.get(ENV_JWT_SECRET)
    if secret:
        _section(table, "auth", "jwt")["secret"] = secret
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_BASIC_AUTH_PREFIX) or not value:
            continue
        user = name[len(ENV_BASIC_AUTH_PREFIX) :].lower()
        if not user:
            continue
        users = _section(table, "auth", "basic").setdefault("users", [])
        if not isinstance(users, list):
            raise ConfigError("auth.basic.users: expected an array of tables")
        secret_key = "password_hash" if value.split("$", 1)[0] in HASH_SCHEMES else "password"
        for entry in users:
            if isinstance(entry, dict) and entry.get("name") == user:
                entry.pop("password", None)
                entry.pop("password_hash", None)
                entry[secret_key] = value
                break
        else:
            users.append({"name": user, secret_key: value})


def _section(table: dict[str, Any], *names: str) -> dict[str, Any]:
    for i, name in enumerate(names):
        sub = table.setdefault(name, {})
        if not isinstance(sub, dict):
            raise ConfigError(f"{'.'.join(names[: i + 1])}: expected a table")
        table = sub
    return table


def _set_dotted(table: dict[str, Any], key: str, value: Any) -> None:
    *sections, leaf = key.split(".")
    _section(table, *sections)[leaf] = value


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _build(cls: type[Any], table: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "the file"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in known:
            raise ConfigError(f"{prefix}{key}: unknown key")
    values: dict[str, Any] = {}
    for name, spec in known.items():
        key = f"{prefix}{name}"
        if name not in table:
            if spec.metadata.get("required"):
                raise ConfigError(f"{key}: missing")
            continue
        values[name] = _convert(hints[name], table[name], key, spec.metadata)
    return cls(**values)


def _convert(hint: Any, value: Any, key: str, meta: Mapping[str, Any]) -> Any:
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = True, args[0]
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")  # type: ignore[arg-type]
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected an array")
        if dataclasses.is_dataclass(item):
            return tuple(_build(item, v, f"{key}[{i}].") for i, v in enumerate(value))  # type: ignore[arg-type]
        items = tuple(_scalar(item, v, f"{key}[{i}]", {}) for i, v in enumerate(value))
        if meta.get("patterns"):
            for i, pattern in enumerate(items):
                check_pattern(pattern, f"{key}[{i}]")
        return items
    del optional  # TOML has no null: an optional key is simply left out
    return _scalar(hint, value, key, meta)


def _scalar(hint: Any, value: Any, key: str, meta: Mapping[str, Any]) -> Any:
    # bool is an int in Python, never in a config file
    ok = isinstance(value, hint) and not (hint is not bool and isinstance(value, bool))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"{key}: expected {_TYPE_NAMES.get(hint, hint.__name__)}, got {_toml_type(value)}")
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{key}: must be one of {', '.join(meta['choices'])}, got {value!r}")
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"{key}: must be at least {meta['min']}, got {value}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"{key}: must be at most {meta['max']}, got {value}")
    if "gt" in meta and value <= meta["gt"]:
        raise ConfigError(f"{key}: must be more than {meta['gt']}, got {value}")
    if meta.get("nonempty") and not value:
        raise ConfigError(f"{key}: must not be empty")
    if meta.get("networks"):
        try:
            TrustedProxies(value)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    return value


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def check_pattern(pattern: str, key: str) -> None:
    """Reject a path pattern that is neither "/exact", "/prefix/*" nor "re:<regex>"."""
    if pattern.startswith("re:"):
        try:
            re.compile(pattern[3:])
        except re.error as exc:
            raise ConfigError(f"{key}: bad regular expression: {exc}") from None
        return
    if not pattern.startswith("/"):
        raise ConfigError(f"{key}: a path pattern starts with '/' or 're:', got {pattern!r}")
    if "*" in pattern[:-1]:
        raise ConfigError(f"{key}: '*' may only end a prefix pattern, got {pattern!r}")


def _check_cross(config: Config) -> None:
    """Rules that tie several keys together."""
    server = config.server
    if config.metrics.port is not None and config.metrics.port != 0 and config.metrics.port == server.http_port:
        raise ConfigError("metrics.port: must differ from server.http_port (no protocol path is reserved)")
    names: set[str] = set()
    for i, user in enumerate(config.auth.basic.users):
        key = f"auth.basic.users[{i}]"
        if user.name in names:
            raise ConfigError(f"{key}.name: duplicate user {user.name!r}")
        names.add(user.name)
        if ":" in user.name:
            raise ConfigError(f"{key}.name: a basic-auth user name cannot contain ':'")
        if (user.password is None) == (user.password_hash is None):
            raise ConfigError(f"{key}: give exactly one of password, password_hash")
        if user.password_hash is not None:
            from ._auth import parse_hash

            try:
                parse_hash(user.password_hash)
            except ValueError as exc:
                raise ConfigError(f"{key}.password_hash: {exc}") from None
    jwt = config.auth.jwt
    if not config.auth.jwt_enabled:
        if jwt.algorithms:
            raise ConfigError("auth.jwt.algorithms: needs a secret, public_key_file or jwks_url")
        return
    for alg in jwt.algorithms:
        if alg in HMAC_ALGORITHMS:
            if not jwt.secret:
                raise ConfigError(f"auth.jwt.algorithms: {alg} needs auth.jwt.secret (or {ENV_JWT_SECRET})")
        elif alg in PUBLIC_KEY_ALGORITHMS:
            if not (jwt.public_key_file or jwt.jwks_url):
                raise ConfigError(f"auth.jwt.algorithms: {alg} needs auth.jwt.public_key_file or auth.jwt.jwks_url")
        else:
            raise ConfigError(f"auth.jwt.algorithms: unsupported algorithm {alg!r}")
    if jwt.public_key_file is not None:
        from ._auth import load_public_key

        try:
            load_public_key(jwt.public_key_file)
        except ValueError as exc:
            raise ConfigError(f"auth.jwt.public_key_file: {exc}") from None
    if jwt.jwks_url is not None and not jwt.jwks_url.startswith(("https://", "http://")):
        raise ConfigError("auth.jwt.jwks_url: must be an http:// or https:// URL")


def replace(config: Config, **sections: Any) -> Config:
    """A copy of ``config`` with whole sections swapped (used to keep restart-only settings on reload)."""
    return dataclasses.replace(config, **sections)
