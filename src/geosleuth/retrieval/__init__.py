"""Contrastive geo-alignment retrieval (GeoCLIP/G3 style): image and location encoders, the GPS
gallery and the FAISS neighbour index. Not part of this version yet: the locate pipeline reports the
retrieval stage as unavailable."""
