"""The WebSocket gateway: `streamer gateway`.

Pure core: ``auth`` (tokens), ``protocol`` (paths and frames), ``resume`` (stream ids,
recovery decision, merge). I/O adapters: ``ownership`` (owners hash, heartbeat keys),
``inbox`` (the gateway's durable inbox), ``session`` (one socket), ``server`` (process).
"""
