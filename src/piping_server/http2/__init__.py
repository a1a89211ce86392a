"""HTTP/2 (h2 over TLS, h2c on the cleartext port), on the h2 library: imported with the first HTTP/2
connection, since h2 and its parts are some 4 MB of a process's memory that an HTTP/1-only server never needs.
"""

#: What an HTTP/2 client sends first (RFC 9113 section 3.4); on the cleartext port it tells h2c from HTTP/1.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
