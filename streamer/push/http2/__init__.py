"""A small HTTP/2 client for the push providers (APNs, FCM HTTP v1).

``frames`` and ``hpack`` are pure codecs, ``connection`` the sans-I/O client side of one
connection (RFC 9113: SETTINGS, flow control, stream limits, PING, GOAWAY), ``client`` the
asyncio glue: a protocol per TLS connection and a pool of them per provider.
"""
