"""Sockets only: connect, listen, send buffers, receive into buffers. No framing here."""
