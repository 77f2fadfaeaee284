"""Preprocessing of long videos into WebDataset shards: fetch -> decode -> cuts/faces -> shards -> clips."""
