"""Protocol drivers: HTTP/1.1 server and client connections over asyncio transports."""
