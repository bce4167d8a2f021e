"""Local stand-ins for APNs and FCM: real TLS and HTTP/2, validating what Apple and Google
validate, answering by device-token prefix. Tests never contact Apple or Google."""
