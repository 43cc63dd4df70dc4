"""Protocol-neutral HTTP: messages, headers, body streams and the one error renderer."""
