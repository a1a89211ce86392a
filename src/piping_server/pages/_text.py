"""The plain-text pages: ``/version`` and ``/help``."""

from __future__ import annotations

from ._page import ALLOW_ANY_ORIGIN, CONTENT_TYPE_TEXT, Page

__all__ = ["render_help", "render_version", "server_version"]


def server_version() -> str:
    """The package version, imported on use so that ``pages`` never imports its parent at load."""
    from .. import __version__

    return __version__


def render_version() -> Page:
    """``/version``: the version and a newline, readable cross-origin (docs/protocol.md section 2)."""
    return Page(
        status=200,
        headers=[CONTENT_TYPE_TEXT, ALLOW_ANY_ORIGIN],
        body=f"{server_version()}\n".encode(),
    )


# "{url}" is this server's base URL; "{version}" the package version. Kept as one block so that it
# reads as what the user gets. The command lines are the point: each must run as printed.
_HELP = """\
Help for Piping Server (Python) {version}

Stream data between any two machines over plain HTTP: a sender sends to a path
of its choice, a receiver gets the same path, and the data flows through while it
is being sent. Nothing is stored; whoever comes first waits for the other.

======= Get =======
curl {url}/mypath

======= Send =======
# Send a file
curl -T myfile {url}/mypath

# Send a text
echo 'hello!' | curl -T - {url}/mypath

# Send a directory (zip); get it with: curl {url}/mypath > mydir.zip
zip -q -r - ./mydir | curl -T - {url}/mypath

# Send a directory (tar.gz); get it with: curl {url}/mypath | tar zxf -
tar zcf - ./mydir | curl -T - {url}/mypath

======= Encryption =======
## Send
cat myfile | openssl aes-256-cbc -pbkdf2 | curl -T - {url}/mypath
## Get
curl {url}/mypath | openssl aes-256-cbc -pbkdf2 -d > myfile

======= Several receivers (?n=) =======
# The sender and every receiver give the same n; sending starts when all n are there.
## Send to 3 receivers
curl -T myfile '{url}/mypath?n=3'
## Get (run on each of the 3 receivers)
curl '{url}/mypath?n=3'

======= The piping client (pip install piping-server) =======
## Send a file, or standard input when no file is given
piping send --server {url} mypath myfile
echo 'hello!' | piping send --server {url} mypath
## Get to standard output
piping get --server {url} mypath > myfile
## A folder (streamed as tar, unpacked on arrival), end-to-end encrypted with a passphrase
piping send --server {url} -e mypath ./mydir          # -e asks for the passphrase
piping get --server {url} -e mypath -o .          # unpacked here
## Forward a TCP port (e.g. SSH): on the machine with the service, then on yours
piping tunnel server --server {url} --port 22 mypath/in mypath/out
piping tunnel client --server {url} --port 2222 mypath/in mypath/out    # ssh -p 2222 localhost

======= In a browser =======
{url}/          send a file or a text
{url}/#receive  receive a file, with its name and progress
{url}/#chat     live text chat (over HTTPS: browsers stream uploads only over HTTP/2)
{url}/#share    share a screen or a camera
{url}/#vnc      a remote desktop through `piping tunnel server --port 5900`
{url}/noscript  send without JavaScript
"""


def render_help(*, base_url: str) -> Page:
    """``/help``: curl usage with this server's own URL (docs/protocol.md section 2).

    Args:
        base_url: scheme and host as the client reached the server, e.g. ``https://example.com``.
    """
    body = _HELP.format(url=base_url.rstrip("/"), version=server_version())
    return Page(status=200, headers=[CONTENT_TYPE_TEXT, ALLOW_ANY_ORIGIN], body=body.encode())
