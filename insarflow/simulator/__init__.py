"""A stand-in for ISCE2 topsStack that writes real-format products from a synthetic scene."""
