"""The packet tools behind dump and respond: the capture loop, one-line descriptions,
pcap files and the responder (pure but for capture)."""
