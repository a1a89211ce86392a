"""Access control: path allow-lists, HTTP basic auth with hashed passwords, JWT bearer tokens, path scopes.

``Gate.check(view)`` runs in the ``admit`` hook, on the event loop, for every request but a CORS
preflight (which stays open, docs/protocol.md section 7). Its refusals are 401 with ``WWW-Authenticate``
challenges (RFC 7617 for Basic, RFC 6750 for Bearer) or 403 when the credentials are good but the
path is not theirs. Nothing here logs or echoes a password or a token.

Password hashes (``piping-server --hash-password``)::

    pbkdf2_sha256$<iterations>$<salt, base64>$<sha256 derived key, base64>
    scrypt$<n>$<r>$<p>$<salt, base64>$<derived key, base64>

Verifying a hash costs tens of milliseconds of CPU, so a verified credential is remembered (keyed by
a keyed digest, never in clear) for the life of the configuration, and with a ``LoginGuard`` (the
server's) the hash is checked off the event loop and failures are rate-limited per client address
(see _logins.py): ``check`` then answers a future for a credential it has not verified yet. A refused
bearer token spends the same budget (its signature check is work a client could make the server do
for nothing); a verified token is remembered until it expires, as a verified password is.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core import is_reserved
from ..relay._headers import Headers
from ..relay._hooks import Refusal, RequestView
from ._config import HMAC_ALGORITHMS, PUBLIC_KEY_ALGORITHMS, AuthConfig, Config, JwtConfig
from ._logins import then

if TYPE_CHECKING:
    from ._logins import LoginGuard

log = logging.getLogger("piping_server.auth")

# PyJWT and cryptography are imported where a token or a key is first handled: together they are some
# 20 MB of a process's memory, which a server without JWT auth never needs.


#: Work factors of new hashes: about 50 ms (PBKDF2) and 40 ms (scrypt) of one core each, paid once per
#: credential (then cached), in the login pool's threads.
PBKDF2_ITERATIONS = 200_000
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1
SALT_BYTES = 16
#: Verified basic credentials remembered per configuration (a bounded LRU).
CREDENTIAL_CACHE_SIZE = 1024
#: Hashes with a larger work factor are refused at load time: one check would stall the loop for seconds.
MAX_PBKDF2_ITERATIONS = 5_000_000
MAX_SCRYPT_N = 1 << 20
#: An unknown ``kid`` triggers a JWKS refresh at most this often (seconds).
JWKS_MIN_REFRESH_S = 10.0
#: Timeout of one JWKS fetch (seconds); it runs in a worker thread, never on the loop.
JWKS_FETCH_TIMEOUT_S = 10.0


# --- password hashes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Hash:
    scheme: str
    params: tuple[int, ...]
    salt: bytes
    digest: bytes


def hash_password(password: str, *, scheme: str = "pbkdf2_sha256") -> str:
    """A new salted hash of ``password`` in the format the config file takes."""
    salt = secrets.token_bytes(SALT_BYTES)
    b64 = base64.b64encode
    if scheme == "pbkdf2_sha256":
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ITERATIONS)
        return f"pbkdf2_sha256${PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"
    if scheme == "scrypt":
        digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
        return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"
    raise ValueError(f"unknown scheme {scheme!r}")


def parse_hash(text: str) -> _Hash:
    """Parse a stored hash; ``ValueError`` with a short reason when it is malformed."""
    scheme, _, rest = text.partition("$")
    fields = rest.split("$")
    try:
        if scheme == "pbkdf2_sha256" and len(fields) == 3:
            iterations = int(fields[0])
            if not 1000 <= iterations <= MAX_PBKDF2_ITERATIONS:
                raise ValueError(f"iterations must be between 1000 and {MAX_PBKDF2_ITERATIONS}")
            return _Hash(scheme, (iterations,), _b64(fields[1]), _b64(fields[2]))
        if scheme == "scrypt" and len(fields) == 5:
            n, r, p = (int(f) for f in fields[:3])
            if n < 2 or n & (n - 1) or n > MAX_SCRYPT_N or not 1 <= r <= 32 or not 1 <= p <= 16:
                raise ValueError("scrypt parameters out of range")
            return _Hash(scheme, (n, r, p), _b64(fields[3]), _b64(fields[4]))
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("salt and hash must be base64") from None
    if scheme not in ("pbkdf2_sha256", "scrypt"):
        raise ValueError(f"unknown scheme {scheme!r} (use pbkdf2_sha256$... or scrypt$..., see --hash-password)")
    raise ValueError(f"malformed {scheme} hash")


def _b64(text: str) -> bytes:
    data = base64.b64decode(text.encode("ascii"), validate=True)
    if not data:
        raise binascii.Error("empty")
    return data


def verify_password(password: str, stored: _Hash) -> bool:
    """Whether ``password`` matches ``stored``; the comparison is constant-time."""
    if stored.scheme == "pbkdf2_sha256":
        computed = hashlib.pbkdf2_hmac("sha256", password.encode(), stored.salt, stored.params[0], len(stored.digest))
    else:
        n, r, p = stored.params
        computed = hashlib.scrypt(
            password.encode(), salt=stored.salt, n=n, r=r, p=p, dklen=len(stored.digest), maxmem=256 * 1024 * 1024
        )
    return hmac.compare_digest(computed, stored.digest)


def load_public_key(path: str) -> Any:
    """Read a PEM public key for RS*/PS*/ES*/EdDSA tokens; ``ValueError`` with a short reason."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key  # (see the imports' note)

    try:
        with open(path, "rb") as file:
            return load_pem_public_key(file.read())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a PEM public key ({exc})") from None


# --- path patterns -------------------------------------------------------------------------------------


class PathRules:
    """Patterns "/exact", "/prefix/*" and "re:<regex>" (the whole path must match), ORed together."""

    __slots__ = ("_exact", "_prefixes", "_regexes")

    def __init__(self, patterns: Iterable[str]) -> None:
        self._exact: set[str] = set()
        self._prefixes: list[str] = []
        self._regexes: list[re.Pattern[str]] = []
        for pattern in patterns:
            if pattern.startswith("re:"):
                try:
                    self._regexes.append(re.compile(pattern[3:]))
                except re.error:
                    continue  # only possible from a token's claim: such an entry allows nothing
            elif pattern.endswith("*"):
                self._prefixes.append(pattern[:-1])
            else:
                self._exact.add(pattern)

    def allows(self, path: str) -> bool:
        """``path`` is normalised and has no query string (docs/protocol.md section 1)."""
        return (
            path in self._exact
            or any(path.startswith(p) for p in self._prefixes)
            or any(r.fullmatch(path) for r in self._regexes)
        )


# --- JWKS ------------------------------------------------------------------------------------------------


class JwksKeys:
    """The keys of a JWKS URL, fetched in a worker thread; lookups on the loop never block."""

    def __init__(self, url: str, refresh_s: float) -> None:
        self.url = url
        self.refresh_s = refresh_s
        self._keys: dict[str | None, Any] = {}
        self._lock = threading.Lock()
        self._last_fetch = 0.0
        self.wanted = threading.Event()  # an unknown kid was seen: refresh early

    def key_for(self, kid: str | None) -> Any | None:
        with self._lock:
            key = self._keys.get(kid)
            if key is None and kid is None and len(self._keys) == 1:
                key = next(iter(self._keys.values()))
        if key is None and time.monotonic() - self._last_fetch > JWKS_MIN_REFRESH_S:
            self.wanted.set()
        return key

    def fetch(self) -> None:
        """Blocking: download the key set (call it from a thread). Errors are logged, old keys kept."""
        self._last_fetch = time.monotonic()
        self.wanted.clear()
        import jwt  # (see the imports' note)

        try:
            client = jwt.PyJWKClient(self.url, cache_keys=False, cache_jwk_set=False, timeout=JWKS_FETCH_TIMEOUT_S)
            jwk_set = client.get_jwk_set()
        except (jwt.PyJWKClientError, jwt.PyJWKSetError, OSError, ValueError) as exc:
            log.error("JWKS %s: fetch failed: %s; keeping %d known key(s)", self.url, exc, len(self._keys))
            return
        keys = {k.key_id: k.key for k in jwk_set.keys}
        with self._lock:
            self._keys = keys
        log.info("JWKS %s: %d key(s) loaded", self.url, len(keys))


# --- the gate ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _User:
    hashed: _Hash | None
    password: str | None
    paths: PathRules | None


class Gate:
    """Allow-list, authentication and scopes for one configuration (rebuilt on reload)."""

    def __init__(self, config: Config, *, jwks: JwksKeys | None = None, guard: LoginGuard | None = None) -> None:
        auth: AuthConfig = config.auth
        #: hashes checked off the loop, failures rate-limited per client; None: checked inline (tests)
        self.guard = guard
        #: told the reason of every refusal decided later (a future's), for the metrics
        self.on_refused: Callable[[str], None] | None = None
        self.protect_pages = config.access.protect_pages
        self.allow = PathRules(config.access.allow_paths) if config.access.allow_paths is not None else None
        self.realm = auth.basic.realm
        self.users: dict[str, _User] = {
            u.name: _User(
                parse_hash(u.password_hash) if u.password_hash is not None else None,
                u.password,
                PathRules(u.paths) if u.paths is not None else None,
            )
            for u in auth.basic.users
        }
        self.jwt: JwtConfig | None = auth.jwt if auth.jwt_enabled else None
        self.jwks = jwks
        self.public_key = load_public_key(auth.jwt.public_key_file) if auth.jwt.public_key_file else None
        self.algorithms = self._algorithms(auth.jwt)
        self.enabled = bool(self.users) or self.jwt is not None
        self._cache: OrderedDict[bytes, str] = OrderedDict()
        self._cache_key = secrets.token_bytes(32)
        #: verified tokens (keyed digest -> claims, when they expire): a good token keeps working from an address
        #: whose failure budget someone else spent, as a remembered password does
        self._tokens: OrderedDict[bytes, tuple[dict[str, Any], float | None]] = OrderedDict()
        #: the reason of the last refusal, for the metrics ("unauthorized", "forbidden")
        self.last_reason = ""

    def _algorithms(self, cfg: JwtConfig) -> tuple[str, ...]:
        if cfg.algorithms:
            return cfg.algorithms
        algorithms: tuple[str, ...] = ()
        if cfg.secret:
            algorithms += ("HS256",)
        if cfg.public_key_file or cfg.jwks_url:
            algorithms += PUBLIC_KEY_ALGORITHMS
        return algorithms

    # --- the hook --------------------------------------------------------------------------------------

    def check(self, view: RequestView) -> Refusal | asyncio.Future[Refusal | None] | None:
        """None to let ``view`` through, else the 401/403/429 to answer it with, or a future of either."""
        if view.method == "OPTIONS":
            return None  # CORS preflights carry no credentials: they stay open
        page = view.method in ("GET", "HEAD") and is_reserved(view.path)
        if page and not self.protect_pages:
            return None
        scopes: PathRules | None = None
        bearer = False
        if self.enabled:
            header = _header(view.headers, b"authorization")
            if header is None:
                return self._unauthorized("[ERROR] Authentication required.\n")
            scheme, _, credentials = header.partition(b" ")
            scheme = scheme.lower()
            if scheme == b"basic" and self.users:
                user = self._basic(credentials.strip(), view.client)
                if isinstance(user, asyncio.Future):
                    return then(user, lambda checked: self._after_basic(view, page, checked))
                if isinstance(user, Refusal):
                    return user
                if user is None:
                    return self._wrong()
                scopes = user.paths
            elif scheme == b"bearer" and self.jwt is not None:
                bearer = True
                claims_or_error = self._checked_token(credentials.strip(), view.client)
                if isinstance(claims_or_error, Refusal):
                    return claims_or_error
                if isinstance(claims_or_error, str):
                    self._failed(view.client)
                    return self._unauthorized(f"[ERROR] Invalid token: {claims_or_error}.\n", token_error=True)
                scopes = self._token_scopes(claims_or_error)
            else:
                return self._unauthorized("[ERROR] Authentication required.\n")
        return self._authorize(view, page, scopes, bearer)

    def _after_basic(self, view: RequestView, page: bool, user: _User | None) -> Refusal | None:
        refusal = self._wrong() if user is None else self._authorize(view, page, user.paths, False)
        if refusal is not None and self.on_refused is not None:
            self.on_refused(self.last_reason)
        return refusal

    def _authorize(self, view: RequestView, page: bool, scopes: PathRules | None, bearer: bool) -> Refusal | None:
        """The allow-list and the credentials' scopes, once the credentials are known good."""
        if page:
            return None
        if self.allow is not None and not self.allow.allows(view.path):
            self.last_reason = "forbidden"
            return Refusal(status=403, message=f"[ERROR] The path '{view.path}' is not allowed on this server.\n")
        if scopes is not None and not scopes.allows(view.path):
            self.last_reason = "forbidden"
            headers: Headers = []
            if bearer:
                headers.append((b"www-authenticate", b'Bearer realm="%s", error="insufficient_scope"' % self._realm()))
            return Refusal(
                status=403, message=f"[ERROR] Your credentials do not allow the path '{view.path}'.\n", headers=headers
            )
        return None

    # --- basic ------------------------------------------------------------------------------------------

    def _basic(self, credentials: bytes, client: str) -> _User | Refusal | asyncio.Future[_User | None] | None:
        """The user, None for wrong credentials, a refusal (too many failures, too busy), or a future of the user."""
        digest = hmac.new(self._cache_key, credentials, hashlib.sha256).digest()
        name = self._cache.get(digest)
        if name is not None and name in self.users:
            self._cache.move_to_end(digest)
            return self.users[name]
        limited = self._rate_limited(client)
        if limited is not None:
            return limited
        guard = self.guard
        try:
            decoded = base64.b64decode(credentials, validate=True)
        except (binascii.Error, ValueError):
            self._failed(client)
            return None
        try:
            text = decoded.decode("utf-8")
        except UnicodeDecodeError:
            text = decoded.decode("latin-1")
        name, sep, password = text.partition(":")
        user = self.users.get(name)
        if not sep or user is None:
            self._failed(client)
            return None
        if user.hashed is None:
            assert user.password is not None
            ok = hmac.compare_digest(password.encode(), user.password.encode())
        elif guard is None:
            ok = verify_password(password, user.hashed)
        else:
            checking = guard.verify(password, user.hashed)
            if checking is None:
                guard.failed(client, "busy")
                self.last_reason = "busy"
                message = "[ERROR] Too many logins are being checked: try again in a moment.\n"
                return Refusal(status=503, message=message, headers=[(b"retry-after", b"1")])
            return then(checking, lambda good: self._checked(good, digest, name, client))
        return self._checked(ok, digest, name, client)

    def _checked(self, ok: bool, digest: bytes, name: str, client: str) -> _User | None:
        user = self.users.get(name)
        if not ok or user is None:
            self._failed(client)
            return None
        self._cache[digest] = name
        if len(self._cache) > CREDENTIAL_CACHE_SIZE:
            self._cache.popitem(last=False)
        return user

    def _rate_limited(self, client: str) -> Refusal | None:
        """429 when ``client`` has spent its failure budget (checked before any hash or signature is)."""
        guard = self.guard
        wait = guard.retry_after(client) if guard is not None else None
        if guard is None or wait is None:
            return None
        guard.failed(client, "rate_limited")
        self.last_reason = "rate_limited"
        message = f"[ERROR] Too many failed logins from your address: try again in {wait} second(s).\n"
        return Refusal(status=429, message=message, headers=[(b"retry-after", b"%d" % wait)])

    def _failed(self, client: str) -> None:
        if self.guard is not None:
            self.guard.failed(client)

    def _wrong(self) -> Refusal:
        return self._unauthorized("[ERROR] Wrong user name or password.\n")

    # --- bearer -----------------------------------------------------------------------------------------

    def _checked_token(self, token: bytes, client: str) -> dict[str, Any] | str | Refusal:
        """The claims of a token verified before and not expired since, else the client's budget, then ``_bearer``."""
        digest = hmac.new(self._cache_key, b"bearer " + token, hashlib.sha256).digest()
        known = self._tokens.get(digest)
        if known is not None:
            claims, expires = known
            if expires is None or time.time() < expires:
                self._tokens.move_to_end(digest)
                return claims
            del self._tokens[digest]
        limited = self._rate_limited(client)
        if limited is not None:
            return limited
        claims_or_error = self._bearer(token)
        if isinstance(claims_or_error, dict):
            exp = claims_or_error.get("exp")
            leeway = self.jwt.leeway if self.jwt is not None else 0
            expires = float(exp) + leeway if isinstance(exp, int | float) and not isinstance(exp, bool) else None
            self._tokens[digest] = (claims_or_error, expires)
            if len(self._tokens) > CREDENTIAL_CACHE_SIZE:
                self._tokens.popitem(last=False)
        return claims_or_error

    def _bearer(self, token_bytes: bytes) -> dict[str, Any] | str:
        """The token's claims, or a short reason why it is refused (never the token itself)."""
        cfg = self.jwt
        assert cfg is not None
        import jwt  # (see the imports' note)

        try:
            token = token_bytes.decode("ascii")
            header = jwt.get_unverified_header(token)
        except (UnicodeDecodeError, jwt.DecodeError):
            return "malformed token"
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            return "algorithm not accepted"
        key: Any
        if alg in HMAC_ALGORITHMS:
            key = cfg.secret
        elif self.public_key is not None and (self.jwks is None or header.get("kid") is None):
            key = self.public_key
        elif self.jwks is not None:
            kid = header.get("kid")
            key = self.jwks.key_for(kid if isinstance(kid, str) else None)
            if key is None:
                return "unknown key id"
        else:
            return "algorithm not accepted"
        options: dict[str, Any] = {
            "require": ["exp"] if cfg.require_exp else [],
            "verify_aud": cfg.audience is not None,
        }
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=cfg.issuer,
                audience=cfg.audience,
                leeway=cfg.leeway,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.InvalidTokenError as exc:
            return str(exc).rstrip(".") or type(exc).__name__
        except (ValueError, TypeError):
            return "key does not fit the algorithm"
        return claims

    def _token_scopes(self, claims: dict[str, Any]) -> PathRules | None:
        assert self.jwt is not None
        value = claims.get(self.jwt.paths_claim)
        if value is None:
            return None  # no scope claim: every path (the allow-list still applies)
        if isinstance(value, str):
            return PathRules(value.split())
        if isinstance(value, list):
            return PathRules(v for v in value if isinstance(v, str))
        return PathRules(())  # a claim of another type allows nothing

    # --- refusals ------------------------------------------------------------------------------------------

    def _realm(self) -> bytes:
        return self.realm.replace("\\", "\\\\").replace('"', '\\"').encode("utf-8")

    def _unauthorized(self, message: str, *, token_error: bool = False) -> Refusal:
        self.last_reason = "unauthorized"
        headers: Headers = []
        realm = self._realm()
        if self.users:
            headers.append((b"www-authenticate", b'Basic realm="%s", charset="UTF-8"' % realm))
        if self.jwt is not None:
            value = b'Bearer realm="%s"' % realm
            if token_error:
                value += b', error="invalid_token"'
            headers.append((b"www-authenticate", value))
        return Refusal(status=401, message=message, headers=headers)


def _header(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None
