"""Small helpers with no model inside: atomic file writing and image listing (io), and
box drawing (drawing)."""
