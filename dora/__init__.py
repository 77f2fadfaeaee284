"""DoRA: discover and track objects across a clip, train on object-masked views (ICLR 2024)."""
