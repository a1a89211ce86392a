"""``piping-server --explain TOPIC``: the operating notes a pip install carries (docs/ is not installed)."""

from __future__ import annotations

#: ``--http-port`` can also come from ``PIPING_SERVER_HTTP_PORT``, and so on for every setting flag.
ENV_PREFIX = "PIPING_SERVER_"

EPILOG = (
    "Every flag but the one-shot ones can also come from the environment, named as shown "
    "(PIPING_SERVER_HTTP_PORT=9000); a flag beats its variable, and both beat --config's file. "
    "Once running, the page's /help lists the curl commands with this server's URL. "
    "More: piping-server --explain env|workers|proxy|systemd."
)

_ENV = """
Every setting flag can come from the environment instead: PIPING_SERVER_ and the flag's name in
capitals, dashes as underscores (uvicorn's UVICORN_* convention). `piping-server --help` shows each
flag's variable.

    PIPING_SERVER_HTTP_PORT=9000 PIPING_SERVER_WORKERS=auto piping-server
    PIPING_SERVER_ENABLE_HTTPS=true      (true/false, 1/0, yes/no, on/off)
    PIPING_SERVER_ALLOW_PATH="/a/* /b"   (a repeatable flag: values separated by spaces)

Precedence, highest first: the flag on the command line, its PIPING_SERVER_* variable, the
platform's conventional variable where there is one (PORT for --http-port, FORWARDED_ALLOW_IPS for
--forwarded-allow-ips), the --config file, the default. So a platform that sets PORT (a PaaS web
process) is obeyed unless --http-port or PIPING_SERVER_HTTP_PORT says otherwise.

Secrets never go on the command line: PIPING_JWT_SECRET and PIPING_BASIC_AUTH_<USER> (a password
or its hash from --hash-password) add to the config file's auth settings.
A bad value is one error line naming the flag, and exit code 2.
"""

_WORKERS = """
--workers N runs one supervisor and N worker processes on the same listeners (auto: one per CPU).
A transfer's sender and receivers must meet in one process, so each path has an owner worker
(a hash of the path without its query) and every request is brought to it: a plain HTTP/1.x
connection is passed to the owner as it is; an HTTP/2 or TLS request is relayed to it.

The supervisor restarts a worker that dies (only that worker's transfers are cut), passes SIGHUP
(reload the config) and SIGTERM/SIGINT (graceful stop) on to every worker, and with --metrics-port
serves every worker's figures summed and /healthz (200 only while every worker is up).
--uds and --fd work with --workers too: the workers share the one listener.
The counting limits (--max-connections, --max-waiting...) hold per worker.
"""

_PROXY = """
Several instances behind one proxy: the proxy must send every request for one path to the same
instance (a hash of the path), stream bodies both ways without buffering, and allow transfers
that last days. The project's deploy/ folder has tested files for nginx (grpc_pass: nginx's
HTTP/1.1 proxy stops sending an upload once the response has begun), HAProxy and Caddy (HTTP/2;
Caddy 2.6's HTTP/3 drops the body of a browser's streaming upload, so it is left off).

Start each instance with --forwarded-allow-ips set to the proxy's address (127.0.0.1, the
default, fits a proxy on the same machine) so that logs and per-client limits see the client
from X-Forwarded-For. With --uds PATH the proxy reaches the instance through a Unix socket and
needs no TCP port: the peer of such a connection has no address, so trust it with
--forwarded-allow-ips '*' (whoever may open the socket file is the proxy; set its mode with umask
or systemd's SocketMode=).
"""

_SYSTEMD = """
Socket activation: systemd opens the listening socket and starts the server on the first
connection (or at boot), passing the socket as descriptor 3.

    # /etc/systemd/system/piping-server.socket
    [Socket]
    ListenStream=8080                     (or a path: ListenStream=/run/piping-server.sock)
    [Install]
    WantedBy=sockets.target

    # /etc/systemd/system/piping-server.service
    [Service]
    ExecStart=/opt/piping-server/bin/piping-server --fd 3 --shutdown-grace 60
    TimeoutStopSec=75

`systemctl enable --now piping-server.socket`. The socket stays open across restarts of the
service, so no connection is refused while it restarts. Try it without systemd:
    systemd-socket-activate -l 127.0.0.1:8080 piping-server --fd 3
SIGTERM stops gracefully: running transfers get --shutdown-grace seconds (keep TimeoutStopSec above it).
"""

TOPICS: dict[str, str] = {"env": _ENV, "workers": _WORKERS, "proxy": _PROXY, "systemd": _SYSTEMD}
