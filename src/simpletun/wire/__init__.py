"""Wire formats between tunnel peers (pure, sans-IO): bytes in, packets or events out."""
