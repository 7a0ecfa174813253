"""ugate HTTP/1.1 plugin: forward proxy (CONNECT and absolute-URI requests) and reverse proxy."""
