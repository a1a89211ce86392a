"""The transport-neutral transfer layer, between the transports (``http1``, ``http2``) and the rendezvous (``core``).

* ``_exchange``: what a request does the same on every transport (routing, the operator's view, the access record);
* ``_flow``: the relay that carries out the hub's actions, and the pipes that move a transfer's bytes;
* ``_hooks``: what the operator's layer (``ops``) may plug into every request;
* ``_form``: the first part of a multipart upload, decoded on the way;
* ``_headers``: header helpers and the response headers of the protocol;
* ``_proxies``: which proxies may name the client (``X-Forwarded-For``, ``Forwarded``).
"""
