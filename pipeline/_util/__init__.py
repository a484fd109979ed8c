"""Small private helpers: file replacement and fsync, GC pauses, secret redaction."""
